"""`eecc inspect OUT`: a compiled bundle's stages, their per-target artifacts and the placement's metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from eecc.report.metrics_view import print_metrics
from eecc.report.units import things
from eecc.errors import EeccError
from eecc.runtime.bundle import MANIFEST, BundleError, load_bundle
from eecc.search.confidence import exit_rule, metric_meaning, threshold_text

STAGE_KEYS = ("index", "file", "target", "kind", "macs", "exit_macs", "params", "weight_bytes", "threshold", "gate",
              "compute_s", "exit_latency_s", "exit_energy_j", "latency_estimate_s", "latency_calibrated_s",
              "exit_latency_calibrated_s", "exit_energy_calibrated_j", "codegen", "artifacts", "emulation",
              "calibration")


def register(subparsers) -> None:
    """No subcommand of its own (the CLI registers every module here): `eecc inspect OUT` calls show()."""


def show(path: Path, args) -> int:
    summary = bundle_summary(path)
    if getattr(args, "png", None):  # The partitioned block graph
        from eecc.cli.inspect import write_png
        from eecc.report.graph_picture import bundle_dot

        write_png(args, lambda: bundle_dot(path, load_bundle(path).manifest))
    if getattr(args, "json", False):
        print(json.dumps(summary))
        return 0
    from eecc.cli.inspect import console

    print_bundle(summary, console())
    return 0


def bundle_summary(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise EeccError(f"'{path}' is not an eecc bundle (no {MANIFEST}); run eecc compile first")
    try:
        manifest = load_bundle(path).manifest
    except BundleError as exc:
        raise EeccError(str(exc)) from None
    platform = manifest.get("platform") or {}
    return {
        "bundle": str(path),
        "model": manifest.get("model"),
        "platform": platform.get("name"),
        "input": manifest.get("input"),
        "num_classes": manifest.get("num_classes"),
        "original_macs": manifest.get("original_macs"),
        "original": manifest.get("original"),
        "confidence_metric": manifest.get("confidence_metric"),
        "stages": [{**{k: s.get(k) for k in STAGE_KEYS}, "status": stage_status(s)} for s in manifest["stages"]],
        "placement": manifest.get("placement"),
        "codegen": manifest.get("codegen"),
        "single_file": manifest.get("single_file"),
    }


def stage_status(stage: dict) -> dict[str, bool | str]:
    """compiled (target code written), executed (run on an emulator or OpenCL device and compared with
    onnxruntime), counted (instructions per inference measured), and where it was executed."""
    cg, emu = stage.get("codegen") or {}, stage.get("emulation") or {}
    compiled = bool(cg) and "skipped" not in cg
    executed = compiled and "skipped" not in emu and bool(emu.get("samples"))
    return {"compiled": compiled, "executed": executed, "counted": executed and bool(emu.get("instructions")),
            "executed_on": (emu.get("device") or emu.get("emulator")) if executed else None}


def _status_text(status: dict) -> str:
    words = [w for w in ("compiled", "executed", "counted") if status[w]]
    return ", ".join(words) or "not compiled"


def calibrated_cells(stages: list[dict]) -> list[tuple[str, str]]:
    """(cal. latency, cal. energy) cells of inspect's stage table: a stage's exit figure is calibrated only when it
    and every stage before it ran under emulation, else "—", as the report's stage costs say (nu14 F8: a Mali stage
    run on PoCL for correctness showed stage 0's calibration carried into its cumulative figure)."""
    cells, whole = [], True
    for s in stages:
        whole = whole and bool(s.get("latency_calibrated_s"))
        cells.append((_si(s.get("exit_latency_calibrated_s"), "s"), _si(s.get("exit_energy_calibrated_j"), "J"))
                     if whole else ("—", "—"))
    return cells


def print_bundle(summary: dict, console: Console) -> None:
    stages = summary["stages"]
    title = (f"{summary['bundle']}: {things(len(stages), 'stage')} on '{summary['platform']}'"
             + (f" from {summary['model']}" if summary.get("model") else ""))
    table = Table(title=title)
    for col in ("#", "file", "processor", "kind", "MACs", "params", "weight B", "threshold", "est. latency",
                "cal. latency", "est. energy", "cal. energy"):
        table.add_column(col, justify="left" if col in ("file", "processor", "kind") else "right")
    for s, (cal_s, cal_j) in zip(stages, calibrated_cells(stages)):
        table.add_row(str(s["index"]), s["file"], s["target"], s["kind"], _int(s["macs"]), _int(s["params"]),
                      _int(s["weight_bytes"]), "—" if s["threshold"] is None else threshold_text(s["threshold"]),
                      _si(s["exit_latency_s"], "s"), cal_s, _si(s["exit_energy_j"], "J"), cal_j)
    console.print(table)
    print_codegen(stages, console)
    print_placement(summary, console)


def print_codegen(stages: list[dict], console: Console) -> None:
    if not any(s.get("codegen") for s in stages):
        console.print("codegen: none (bundle compiled without target code; ONNX stages only)")
        return
    table = Table(title="per-stage target code")
    for col in ("#", "processor", "backend", "flash B", "RAM B (unplanned)", "kernels", "compile s",
                "instr./inference", "max |err|", "est. compute", "calibrated", "ratio"):
        table.add_column(col, justify="left" if col in ("processor", "backend") else "right")
    notes = []
    for s in stages:
        cg, emu, cal = s.get("codegen") or {}, s.get("emulation") or {}, s.get("calibration") or {}
        status = s.get("status") or stage_status(s)
        notes.append(f"stage {s['index']} on '{s['target']}': {_status_text(status)}"
                     + (f" (on {status['executed_on']})" if status["executed_on"] else ""))
        if "skipped" in cg:
            notes.append(f"stage {s['index']} on '{s['target']}': codegen skipped: {cg['skipped']}")
        elif "skipped" in emu:
            notes.append(f"stage {s['index']} on '{s['target']}': not emulated: {emu['skipped']}")
        if cg.get("program") and cg["program_stages"][0] == s["index"]:
            notes.append(f"stages {cg['program_stages'][0]}-{cg['program_stages'][-1]} on '{s['target']}' are one "
                         f"program ({cg['program']}/): its flash and RAM are shown on each of them")
        if emu.get("purpose"):
            notes.append(f"stage {s['index']} on '{s['target']}': {emu['purpose']}")
        ram = "" if cg.get("ram_bytes") is None else f"{cg['ram_bytes']:,} ({cg.get('ram_unplanned_bytes', 0):,})"
        ratio = cal.get("calibrated_over_estimate")
        kernels = _int(cg.get("kernel_count")) + (f" ({cg['schedule_fallbacks']} fallback)"
                                                  if cg.get("schedule_fallbacks") else "")
        table.add_row(str(s["index"]), s["target"], cg.get("backend", "skipped"), _int(cg.get("flash_bytes")),
                      ram, kernels, _num(cg.get("compile_s")), _int(emu.get("instructions")),
                      _num(emu.get("max_abs_error"), "{:.1e}"), _si(s.get("latency_estimate_s"), "s"),
                      _si(s.get("latency_calibrated_s"), "s"), _num(ratio, "{:.2f}×"))
    console.print(table)
    stacks = sorted({(s.get("codegen") or {}).get("stack_bytes") for s in stages} - {None})
    if stacks:  # ram_bytes is .data + .bss + the stack the linker script reserves (targets/mcu_bundle.py)
        notes.append(f"RAM B includes the {' / '.join(f'{b:,}' for b in stacks)} B stack the linker script reserves")
    files = Table(title="artifacts")
    for col in ("#", "path", "bytes"):
        files.add_column(col, justify="left" if col == "path" else "right")
    for s in stages:
        files.add_row(str(s["index"]), s["file"], "")
        for art in s.get("artifacts") or []:
            files.add_row("", f"  {art['path']}", f"{art['bytes']:,}")
    console.print(files)
    for note in notes:
        console.print(note)


def print_placement(summary: dict, console: Console) -> None:
    placement = summary.get("placement") or {}
    console.print(f"placement: {' → '.join(placement.get('processors', []))}, cuts at "
                  f"{', '.join(map(str, placement.get('cuts', []))) or '—'}, thresholds "
                  f"{', '.join(map(threshold_text, placement.get('thresholds', []))) or '—'}")
    if placement.get("thresholds"):
        console.print(f"confidence metric {metric_meaning(str(summary.get('confidence_metric')))}; "
                      + "; ".join(f"stage {k}: {exit_rule(summary.get('confidence_metric'), t)}"
                                  for k, t in enumerate(placement["thresholds"])))
    worst = [f"{_int(placement.get('worst_case_macs'))} MACs",
             _si(placement.get("worst_case_latency_s"), "s"), _si(placement.get("worst_case_energy_j"), "J")]
    calibrated = (summary.get("codegen") or {}).get("worst_case_latency_calibrated_s")
    if calibrated:
        worst.append(f"calibrated {_si(calibrated, 's')}")
    console.print(f"worst case: {', '.join(worst)}")
    print_metrics(placement.get("metrics") or {}, console, (summary.get("original") or {}).get("accuracy"))


def _int(value) -> str:
    return "" if value is None else f"{int(value):,}"


def _num(value, fmt: str = "{:.2f}") -> str:
    return "" if value is None else fmt.format(value)


def _si(value, unit: str) -> str:
    """3 significant digits with an SI prefix: 0.00123 s -> 1.23 ms."""
    if value is None:
        return ""
    for scale, prefix in ((1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"
