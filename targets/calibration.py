"""Stage latency and exit latency/energy recalibrated from emulated instruction counts (targets/codegen.py runs the
emulation):

  seconds(stage)        = instructions per inference × CPI / clock_hz
  calibrated MAC/s      = stage MACs / seconds(stage)
"""

from __future__ import annotations

from eecc.targets.platform import Platform, Processor, estimate_exits

# Cycles per instruction. 1.0 is the optimistic bound: both cores issue most ALU ops in one cycle, but
# loads/stores and taken branches take 2 (M0+) or 1-3 (M4) cycles and VFMA takes 3 on the M4F, so real
# CPI is higher (roughly 1.2-1.5 for such loops, not measured here) and calibrated latency is a floor.
# The Cortex-A76 is out of order: it decodes up to 4 instructions per cycle and dispatches up to 8 micro-ops (Arm,
# Cortex-A76 launch material, 2018; AnandTech "Arm's Cortex-A76 CPU Unveiled", 2018), so 0.25 is its issue bound.
# CPI 0.5 (2 per cycle) is an ASSUMPTION for TVM's kernel loops (no A76 was at hand to measure it). This is the one
# place it is stated: `--emulate` calibrates Cortex-A stages with it and the cost model (eecc/cost/aarch64.py) prices
# them with it, so a Cortex-A figure is instructions x CPI / clock_hz, not measured time.
CPI = {"cortex-m0plus": 1.0, "cortex-m4": 1.0, "cortex-a": 0.5}


def calibrate(entry: dict, proc: Processor, emulation: dict) -> dict:
    """A stage's estimated seconds (entry's compute_s, else MACs at the nominal MAC/s) and, from the emulation's
    instructions per inference, its calibrated seconds and the calibration record; None / "skipped" with the reason
    where no count, no CPI for the kind or no clock_hz is at hand."""
    estimate = entry.get("compute_s", entry["macs"] / proc.macs_per_s)
    out = {"latency_estimate_s": estimate, "latency_calibrated_s": None}
    instructions = emulation.get("instructions")
    if proc.kind not in CPI:
        out["calibration"] = {"skipped": f"latency is calibrated from emulated instruction counts of CPU stages "
                                         f"only, not {proc.kind}"}
    elif not instructions:
        out["calibration"] = {"skipped": "no emulated instruction count"}
    elif not proc.clock_hz:
        out["calibration"] = {"skipped": f"processor '{proc.name}' has no clock_hz in the platform TOML"}
    else:
        seconds = instructions * CPI[proc.kind] / proc.clock_hz
        out["latency_calibrated_s"] = seconds
        out["calibration"] = {"cpi": CPI[proc.kind], "clock_hz": proc.clock_hz, "cycles": instructions * CPI[proc.kind],
                              "instructions_per_mac": instructions / entry["macs"] if entry["macs"] else None,
                              "macs_per_s_estimate": proc.macs_per_s,
                              "macs_per_s_calibrated": entry["macs"] / seconds if seconds else None,
                              "calibrated_over_estimate": seconds / estimate if estimate else None}
    return out


def with_exit_estimates(platform: Platform, entries: list[dict], updates: list[dict]) -> list[dict]:
    """Exit latency and energy again, with each emulated stage at its instruction-derived seconds; None for an exit
    behind a stage that was not emulated (a Mali stage, a stage without clock_hz): its figure would mix nominal
    seconds into a 'calibrated' one, which inspect printed beside the report's 'not emulated' (nu13 F10, nu14 F8)."""
    whole = [all(u.get("latency_calibrated_s") for u in updates[:k + 1]) for k in range(len(updates))]
    if not any(whole):
        return [{**u, "exit_latency_calibrated_s": None, "exit_energy_calibrated_j": None} for u in updates]
    seconds = [u.get("latency_calibrated_s") or e.get("compute_s", 0.0) for e, u in zip(entries, updates)]
    est = estimate_exits(platform, [e["target"] for e in entries], [e["macs"] for e in entries],
                         [e.get("handoff_bytes", 0) for e in entries], compute_s=seconds,
                         input_bytes=entries[0].get("input_bytes", 0), result_bytes=entries[-1].get("result_bytes", 0))
    return [{**u, "exit_latency_calibrated_s": x["latency_s"] if w else None,
             "exit_energy_calibrated_j": x["energy_j"] if w else None} for u, x, w in zip(updates, est, whole)]
