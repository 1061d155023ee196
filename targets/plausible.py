"""Plausibility of a platform's figures: a value outside what its kind of processor or link can have is most likely in
the wrong unit (48 for 48 MHz, 10 W for 10 mW, 1 for 1 Mbit/s: nu13 F5), and the search would price every stage with it.

A warning, not a refusal: unusual hardware exists (a LoRa link at 250 bit/s, an MCU clocked at 1 MHz); a unit slip is
orders of magnitude off, so the ranges below are wide. Sources of the bounds: Cortex-M parts ship at 1 MHz (low-power
modes) up to ~1 GHz (i.MX RT1170's M7) and draw microwatts to ~0.5 W; a Cortex-M issues at most a few MACs per cycle
(SMLAD: two 16-bit MACs, the M7 dual-issues); application cores and GPUs are datasheet ranges with a factor of ~5 of
headroom.
"""

from __future__ import annotations

import warnings

from eecc.errors import EeccWarning

# kind family: (clock_hz, macs_per_s, active_power_w) plausible [low, high], and the most MACs per clock cycle
_MCU = ((1e6, 2e9), (1e4, 1e10), (1e-5, 2.0), 8.0)
_CPU = ((1e7, 6e9), (1e6, 1e13), (1e-3, 1e3), 1e4)
_GPU = ((1e7, 5e9), (1e8, 1e16), (1e-2, 2e3), 1e6)
RANGES = {"cortex-m0plus": _MCU, "cortex-m4": _MCU, "cortex-m7": _MCU, "cortex-a": _CPU, "x86": _CPU,
          "mali": _GPU, "cuda": _GPU}
MIN_BYTES = 1024            # ram_bytes / storage_bytes below 1 KiB: kilobytes written as bytes
LINK_BPS = (100.0, 1e13)    # bandwidth_bps: 100 bit/s (slow LoRa) .. 10 Tbit/s
MAX_LINK_LATENCY_S = 10.0   # latency_s above 10 s: milliseconds written as seconds


def si(value: float, unit: str) -> str:
    """48 Hz, 48 MHz, 10 W, 10 mW, 1 bit/s, 1 Mbit/s: the value in the unit with the nearest SI prefix."""
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0), ("m", 1e-3), ("µ", 1e-6)):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def platform_warnings(platform, origin: str) -> list[str]:
    """One line per figure of `platform` (a targets.platform.Platform) outside its plausible range, naming the field,
    its value in its unit, the range and the unit the field is in."""
    out = []

    def check(where: str, field: str, value: float, unit: str, low: float, high: float, what: str) -> None:
        if low <= value <= high:
            return
        side = f"below {si(low, unit)}" if value < low else f"above {si(high, unit)}"
        factors = (("k", 1e3), ("M", 1e6), ("G", 1e9)) if value < low else (("m", 1e-3), ("µ", 1e-6))
        meant = next((f"; if {value:g} meant {prefix}{unit}, write {value * f:g}" for prefix, f in factors
                      if low <= value * f <= high), "")
        out.append(f"{origin}: field '{where}{field}' = {value:g} is {si(value, unit)}, {side}, implausible for "
                   f"{what}: {field} is in {unit}{meant} (the search prices every stage with it)")

    for i, p in enumerate(platform.processors):
        where, what = f"processors[{i}].", f"a {p.kind} ('{p.name}')"
        clock, macs, power, per_cycle = RANGES.get(p.kind, _CPU)
        if p.clock_hz is not None:
            check(where, "clock_hz", p.clock_hz, "Hz", *clock, what)
        check(where, "macs_per_s", p.macs_per_s, "MAC/s", *macs, what)
        check(where, "active_power_w", p.active_power_w, "W", *power, what)
        if p.clock_hz is not None and clock[0] <= p.clock_hz <= clock[1] and p.macs_per_s > per_cycle * p.clock_hz:
            out.append(f"{origin}: {where}macs_per_s = {p.macs_per_s:g} is {p.macs_per_s / p.clock_hz:.3g} MACs per "
                       f"cycle at clock_hz = {p.clock_hz:g}, more than {per_cycle:g} a {p.kind} can issue; check both "
                       "units (MAC/s and Hz)")
        if p.idle_power_w > p.active_power_w:
            out.append(f"{origin}: {where}idle_power_w = {p.idle_power_w:g} W is above active_power_w = "
                       f"{p.active_power_w:g} W; check whether the two are swapped")
        for field in ("ram_bytes", "storage_bytes"):
            value = getattr(p, field)
            if value < MIN_BYTES:
                out.append(f"{origin}: field '{where}{field}' = {value:g} is {value:g} bytes, below 1 KiB, implausible "
                           f"for {what}: {field} is in bytes (256 KiB is 262144); check the unit")
    for i, lk in enumerate(platform.links):
        check(f"links[{i}].", "bandwidth_bps", lk.bandwidth_bps, "bit/s", *LINK_BPS, f"a link ({lk.src} -> {lk.dst})")
        check(f"links[{i}].", "latency_s", lk.latency_s, "s", 0.0, MAX_LINK_LATENCY_S,
              f"a link ({lk.src} -> {lk.dst})")
    return out


def warn_implausible(platform, origin: str):
    """`platform`, after an EeccWarning per line of `platform_warnings` (the CLI prints each once, one line)."""
    for line in platform_warnings(platform, origin):
        warnings.warn(line, EeccWarning, stacklevel=3)
    return platform
