"""`eecc targets [--json] [--target FILE.toml]`: the built-in platforms (or a user's own, validated)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from eecc.cli.inspect import console as inspect_console
from eecc.targets.plausible import si
from eecc.targets.platform import Platform, builtin_platforms, load_platform


def register(subparsers) -> None:
    p = subparsers.add_parser("targets", help="list the built-in platforms, or validate and show a platform TOML")
    p.add_argument("--target", action="append", default=None, metavar="NAME_OR_TOML",
                   help="show only this platform: a built-in name or a .toml file (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    platforms = [load_platform(name) for name in (args.target or builtin_platforms())]
    if args.json:
        print(json.dumps({"platforms": [p.to_dict() for p in platforms]}))
        return 0
    console = inspect_console()
    for platform in platforms:
        _print(platform, console)
    return 0


def _print(platform: Platform, console: Console) -> None:
    extra = [f"max latency {platform.max_latency_s:g} s" if platform.max_latency_s else "no latency constraint",
             "shared memory" if platform.shared_memory else "separate memories"]
    table = Table(title=f"{platform.name} ({', '.join(extra)})")
    for col in ("#", "processor", "kind", "MAC/s", "clock", "RAM", "storage", "active W", "idle W"):
        table.add_column(col, justify="left" if col in ("processor", "kind") else "right")
    for i, p in enumerate(platform.processors):
        table.add_row(str(i), p.name, p.kind, f"{p.macs_per_s:.3g}", _clock(p.clock_hz), _bytes(p.ram_bytes),
                      _bytes(p.storage_bytes),
                      f"{p.active_power_w:.4g}", f"{p.idle_power_w:.4g}")
    console.print(table)
    for p in platform.processors:
        if p.launch_s or p.transfer_s_per_byte:
            console.print(f"  {p.name}: {p.launch_s * 1e6:g} µs per kernel launch, {p.transfer_s_per_byte * 1e9:g} ns "
                          "per byte of stage input and output moved")
    from eecc.targets.codegen import EMULATORS, GPU_KINDS, TOOLS

    for p in platform.processors:  # nu10: a cortex-m7 was accepted and --emulate then did nothing, silently
        if p.kind not in TOOLS and p.kind not in GPU_KINDS:
            console.print(f"  note: {p.name} ({p.kind}): eecc has no backend for this kind: its stages are written "
                          "as ONNX (onnxruntime runs them), not compiled or emulated, and priced at its MAC/s")
    for link in platform.links:
        console.print(f"  link {link.src} -> {link.dst}: {si(link.bandwidth_bps, 'bit/s')}, "
                      f"{link.latency_s * 1e3:g} ms latency, {link.energy_j_per_byte:g} J per byte moved")
    for p in platform.processors:
        if p.clock_hz is None and p.kind in EMULATORS:
            console.print(f"  {p.name}: no clock_hz in the TOML: --emulate counts its stages' instructions but cannot "
                          "turn them into time")


def _clock(hz: float | None) -> str:
    return "-" if hz is None else f"{hz / 1e9:g} GHz" if hz >= 1e9 else f"{hz / 1e6:g} MHz"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"
