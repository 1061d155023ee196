"""Codegen of consecutive stages on one Cortex-M core as one program (targets/mcu_program.py): the per-stage
manifest records, each stage emulated alone on onnxruntime's hand-off (instructions per stage, outputs
compared), and the cascade emulated as deployed (exit taken and prediction per sample against onnxruntime).

  emulated mean instructions of the cascade = mean over samples of the ticks of the stages each sample ran / 0.8
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from eecc import signals
from eecc.errors import EeccError
from eecc.targets.calibration import calibrate
from eecc.targets.codegen import EMULATORS, NOT_REQUESTED, emulation_record, is_int8, reference_runs, skip_reason
from eecc.targets.platform import Platform

CASCADE_SAMPLES = 64  # test samples, spread over the split, run through the program's gates
LISTED = 5  # disagreements listed in the manifest


def compile_core_run(models, entries: list[dict], run: list[int], platform: Platform, out_dir: Path,
                     feeds: list | None, x: np.ndarray | None, *,
                     scale: float | None = None) -> tuple[list[dict], dict | None]:
    """Per-stage updates for stages `run` (consecutive, one Cortex-M processor) and the program's record.
    `feeds`: onnxruntime (inputs, outputs) per stage on the emulation samples, None when not emulating;
    `x`: the test inputs of the model, from which CASCADE_SAMPLES are taken for the cascade run; `scale`: the
    program holds stage 0 of a --scale S bundle (targets/mcu_bundle.py make_buildable)."""
    from eecc.targets.mcu_program import compile_program

    proc = platform.processor(entries[run[0]]["target"])
    reason = skip_reason(proc.kind)
    if reason is not None:
        return [{"codegen": {"skipped": reason}, "artifacts": [], "emulation": {"skipped": "stage not compiled"},
                 **calibrate(entries[k], proc, {})} for k in run], None
    alone = sum(e["target"] == proc.name for e in entries) == len(run)
    folder = proc.name if alone else f"{proc.name}.stages{run[0]}-{run[-1]}"
    try:
        arts, stages = compile_program([models[k] for k in run], [entries[k] for k in run], cpu=proc.kind,
                                       out_dir=out_dir / folder, name=f"stages{run[0]}-{run[-1]}",
                                       flash_bytes=proc.storage_bytes, ram_bytes=proc.ram_bytes)
    except EeccError:
        raise
    except Exception as exc:  # TVM raises bare errors for what it cannot compile
        signals.reraise()  # a Ctrl-C inside TVM's Python callbacks comes out as a bare RuntimeError
        raise EeccError(f"codegen: TVM failed on stages {run[0]}-{run[-1]} for '{proc.name}' ({proc.kind}): "
                        f"{type(exc).__name__} {str(exc).strip()[-160:]}; compile with --no-codegen") from exc
    from eecc.targets.cortex_m import STACK_BYTES
    from eecc.targets.mcu_bundle import make_buildable

    # the folder builds alone
    shared = [arts.files[0], arts.files[1], arts.manifest, *make_buildable(arts, program=True, scale=scale)]
    updates = []
    for pos, (k, st) in enumerate(zip(run, stages)):
        files = [*(shared if pos == 0 else []), out_dir / folder / f"kernels{k}.o"]
        codegen = {"backend": "cortex_m", "cpu": arts.cpu, "program": folder, "program_stages": list(run),
                   "flash_bytes": arts.flash_bytes, "ram_bytes": arts.ram_bytes,
                   "ram_unplanned_bytes": arts.ram_unplanned_bytes, "stack_bytes": STACK_BYTES,
                   "arena_bytes": st.arena_bytes,
                   "arena_unplanned_bytes": st.arena_unplanned_bytes, "workspace_bytes": st.workspace_bytes,
                   "kernel_count": st.kernel_count, "compile_s": arts.compile_s}
        updates.append({"codegen": codegen, "artifacts": [{"path": f.relative_to(out_dir).as_posix(),
                                                           "bytes": f.stat().st_size} for f in files]})
    emulator = shutil.which(EMULATORS[proc.kind]) is not None
    for pos, (k, update) in enumerate(zip(run, updates)):
        if feeds is None or not emulator:
            update["emulation"] = {"skipped": NOT_REQUESTED if feeds is None else
                                   f"'{EMULATORS[proc.kind]}' is not installed (Debian: qemu-system-arm)"}
        else:
            update["emulation"] = _stage_alone(arts, pos, k, proc, entries[k], *feeds[k], int8=is_int8(models[k]))
        update.update(calibrate(entries[k], proc, update["emulation"]))
    program = {"folder": folder, "stages": list(run), "elf": arts.files[0].name,
               "flash_bytes": arts.flash_bytes, "ram_bytes": arts.ram_bytes}
    if feeds is not None and emulator and x is not None:
        program["cascade"] = cascade_check(arts, models, entries, run, np.asarray(x), updates)
    return updates, program


def _stage_alone(arts, pos: int, k: int, proc, entry: dict, inputs: dict, want: dict, *, int8: bool) -> dict:
    from eecc.runtime.emulate import EmulationError
    from eecc.runtime.emulate_program import emulate_program_stage

    start = time.perf_counter()
    try:
        result = emulate_program_stage(arts, pos, inputs)
    except EmulationError as exc:
        raise EeccError(f"codegen: stage {k} on '{proc.name}' did not run under emulation ({exc}); the program in "
                        f"'{arts.out_dir}' is broken: report it with the stage ONNX files") from None
    return {**emulation_record(result, want, entry, where=f"stage {k} on '{proc.name}'",
                               emulator=EMULATORS[proc.kind], int8=int8, start=start),
            "run": "alone, on onnxruntime's hand-off"}


def cascade_check(arts, models, entries: list[dict], run: list[int], x: np.ndarray, updates: list[dict]) -> dict:
    """The program run as deployed on CASCADE_SAMPLES test samples, against onnxruntime's stages routed by
    their own exit flags: agreement of the exit taken and of the prediction, each disagreement listed with
    onnxruntime's confidence at the gate, and the cascade's emulated mean instructions against the mean
    implied by the per-stage counts."""
    from eecc.runtime.emulate_program import emulate_cascade

    idx = np.unique(np.linspace(0, len(x) - 1, min(CASCADE_SAMPLES, len(x))).astype(int))
    ref = reference_runs(models[:run[-1] + 1], x[idx])
    got = emulate_cascade(arts, ref[run[0]][0])
    flags = [np.asarray(ref[k][1][entries[k]["outputs"]["exit"]]).reshape(-1).astype(bool) for k in run[:-1]]
    want = np.full(len(idx), len(run) - 1)
    for pos in reversed(range(len(run) - 1)):
        want = np.where(flags[pos], pos, want)
    logits = np.stack([np.asarray(ref[run[p]][1][entries[run[p]]["outputs"]["logits"]][i]).reshape(-1)
                       for i, p in enumerate(want)])
    bad = np.flatnonzero((want != got.exit_stage) | (logits.argmax(-1) != got.logits.argmax(-1)))
    listed = []
    for i in bad[:LISTED]:
        gate = run[min(want[i], got.exit_stage[i])]  # the first gate the two disagree at
        conf = entries[gate]["outputs"].get("confidence")
        listed.append({"sample": int(idx[i]), "onnxruntime_stage": run[int(want[i])],
                       "emulated_stage": run[int(got.exit_stage[i])], "gate": gate,
                       "onnxruntime_confidence": float(np.asarray(ref[gate][1][conf]).reshape(-1)[i]) if conf else None,
                       "threshold": entries[gate].get("threshold")})
    per_stage = np.array([u["emulation"].get("instructions") or 0 for u in updates], dtype=np.float64)
    from_stages = [per_stage[:p + 1].sum() for p in got.exit_stage]
    return {"samples": int(len(idx)), "run": "as deployed: stage, gate, next stage (no copy between them)",
            "exit_agreement": float((want == got.exit_stage).mean()),
            "prediction_agreement": float((logits.argmax(-1) == got.logits.argmax(-1)).mean()),
            "exit_counts": [int((got.exit_stage == p).sum()) for p in range(len(run))],
            "disagreements": listed,
            "mean_instructions": float(got.instructions.sum(1).mean()),
            "mean_instructions_from_stages": float(np.mean(from_stages)) if per_stage.all() else None}
