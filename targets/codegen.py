"""Per-stage TVM artifacts of a bundle: one backend per processor kind, emulation against onnxruntime,
and CPU latency recalibrated from emulated instruction counts (targets/calibration.py)."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from eecc import signals
from eecc.errors import EeccError
from eecc.targets.calibration import CPI, calibrate, with_exit_estimates
from eecc.targets.platform import Platform, Processor, load_platform

TOLERANCE = 1e-4
TOOLS = {"cortex-m0plus": ("arm-none-eabi-gcc", "arm-none-eabi-size"),
         "cortex-m4": ("arm-none-eabi-gcc", "arm-none-eabi-size"),
         "cortex-a": ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-size")}
EMULATORS = {"cortex-m0plus": "qemu-system-arm", "cortex-m4": "qemu-system-arm", "cortex-a": "qemu-aarch64"}
GPU_KINDS = ("mali", "cuda")
# No int8 stage is built for a GPU: TVM's GPU pipeline computes a QDQ stage in float (dequantise, float conv, quantise)
# in its own summation order, which does not reproduce onnxruntime's int8 stage: on nu8's ds_ts11 (rk3588, the
# second of three stages, 500 test samples) the Mali stage's exit logits differed by up to 0.32 (2 quantisation
# steps), predicted onnxruntime's class for 98.8 % and flipped 2 exit flags, where eecc's integer lowering
# (targets/int8_lowering.py, the CPU backends) gave identical exit logits and flags. The search keeps int8 stages
# off these kinds (eecc/search/placement.py `keep_int8_off`) and codegen refuses one.
NO_INT8_KINDS = GPU_KINDS
NO_INT8 = ("eecc builds no int8 GPU stages (TVM's GPU code computes a QDQ stage in float and does not reproduce "
           "onnxruntime's int8 stage)")
MCU_KINDS = ("cortex-m0plus", "cortex-m4")
NOT_REQUESTED = "not requested (eecc compile --emulate runs the stages under QEMU on test samples)"
CORTEX_A_CPU = "cortex-a76"  # rk3588's big cores; QEMU also runs the A55's ARMv8.2-A code as A76
NO_CODEGEN = "compile with --no-codegen to write the bundle without target code (onnxruntime runs it)"


def compile_stages(stage_models: Sequence[onnx.ModelProto], manifest: dict, platform: Platform | str,
                   out_dir: Path, *, emulate_inputs: np.ndarray | None = None,
                   emulate_samples: int = 4) -> dict[str, Any]:
    """Writes `out_dir/<processor>/` per stage; returns {"stages": [per-stage update], "codegen": summary}.

    Merge the result with `apply_updates(manifest, result)`. `emulate_inputs` are samples of the MODEL
    input; stage k is emulated on the hand-off that onnxruntime computes from stages 0..k-1.
    """
    platform = load_platform(platform) if isinstance(platform, (str, Path)) else platform
    entries = manifest["stages"]
    if len(stage_models) != len(entries):
        raise EeccError(f"codegen: {len(stage_models)} stage models for {len(entries)} manifest stages; "
                        "pass the models in manifest order")
    out_dir, start = Path(out_dir), time.perf_counter()
    feeds, samples = None, 0
    if emulate_inputs is not None:
        x = np.asarray(emulate_inputs)[:max(1, emulate_samples)]
        feeds, samples = reference_runs(stage_models, x), len(x)
    updates, programs, targets = [], [], [e["target"] for e in entries]
    scale = (manifest.get("input") or {}).get("scale")  # --scale: stage 0's folder says so (mcu_bundle.scaled_header)
    with _advise_no_codegen():
        for run in core_runs(platform, entries):
            if len(run) > 1:  # consecutive stages of one Cortex-M core: one program, back to back
                from eecc.targets.program_codegen import compile_core_run
                stage_updates, program = compile_core_run(stage_models, entries, run, platform, out_dir, feeds,
                                                          emulate_inputs, scale=scale if run[0] == 0 else None)
                updates += stage_updates
                programs += [program] if program else []
                continue
            k = run[0]
            model, entry, proc = stage_models[k], entries[k], platform.processor(entries[k]["target"])
            # Several stages on one processor that are not one program (other backends) get one folder each.
            folder = proc.name if targets.count(proc.name) == 1 else f"{proc.name}.stage{k}"
            update = _compile_one(model, proc, out_dir, k, folder, scale if k == 0 else None)
            if "skipped" in update["codegen"]:
                update["emulation"] = {"skipped": "stage not compiled"}
            elif feeds is None:
                update["emulation"] = {"skipped": NOT_REQUESTED}
            else:
                update["emulation"] = _emulate(out_dir / folder, proc, entry, k, *feeds[k], int8=is_int8(model))
            update.update(calibrate(entry, proc, update["emulation"]))
            updates.append(update)
    check_shared_memory(platform, entries, updates)
    updates = with_exit_estimates(platform, entries, updates)
    return {"stages": updates,
            "codegen": {"cpi": dict(CPI), "tolerance": TOLERANCE,
                        "worst_case_latency_calibrated_s": updates[-1]["exit_latency_calibrated_s"],
                        "emulate_samples": samples, **({"programs": programs} if programs else {}),
                        "total_s": round(time.perf_counter() - start, 3)}}


@contextlib.contextmanager
def _advise_no_codegen():
    """TVM's frontend refusing an op (tvm_import's error) leaves the model fine: name --no-codegen as a way out."""
    try:
        yield
    except EeccError as exc:
        if not str(exc).startswith("tvm_import:"):
            raise
        raise EeccError(f"{exc}, or {NO_CODEGEN}") from exc


def apply_updates(manifest: dict, result: dict) -> dict:
    """A new manifest with compile_stages' per-stage fields merged into the stages and its summary added."""
    stages = [{**entry, **update} for entry, update in zip(manifest["stages"], result["stages"])]
    return {**manifest, "stages": stages, **{k: v for k, v in result.items() if k != "stages"}}


def skip_reason(kind: str) -> str | None:
    """Why a stage of this processor kind cannot be compiled on this machine, or None."""
    if kind not in TOOLS and kind not in GPU_KINDS:
        return f"no eecc backend for processor kind '{kind}' (backends: {', '.join([*TOOLS, *GPU_KINDS])})"
    try:
        import tvm  # noqa: F401
    except ImportError:
        return "apache-tvm is not installed (pip install apache-tvm)"
    missing = [tool for tool in TOOLS.get(kind, ()) if shutil.which(tool) is None]
    if missing:
        return (f"'{missing[0]}' is not installed (Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi "
                "gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu)")
    return None


def core_runs(platform: Platform, entries: list[dict]) -> list[list[int]]:
    """Stage indices grouped into runs of consecutive stages on one Cortex-M processor (built as one program);
    every other stage is a run of its own."""
    runs: list[list[int]] = []
    for k, e in enumerate(entries):
        kind = platform.processor(e["target"]).kind
        if runs and kind in MCU_KINDS and entries[runs[-1][-1]]["target"] == e["target"]:
            runs[-1].append(k)
        else:
            runs.append([k])
    return runs


def reference_runs(models: Sequence[onnx.ModelProto], x: np.ndarray) -> list[tuple[dict, dict]]:
    """(inputs, outputs) of every stage under onnxruntime, each stage fed by the tensors of the ones before."""
    import onnxruntime as ort
    from eecc.runtime.sessions import session_options

    opts = session_options(optimize=False)
    inits = {i.name for i in models[0].graph.initializer}
    first = [i for i in models[0].graph.input if i.name not in inits][0]
    pool = {first.name: x.astype(onnx.helper.tensor_dtype_to_np_dtype(first.type.tensor_type.elem_type))}
    runs = []
    for model in models:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        inputs = {i.name: pool[i.name] for i in sess.get_inputs()}
        outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
        pool.update(outputs)
        runs.append((inputs, outputs))
    return runs


def check_shared_memory(platform: Platform, entries: list[dict], updates: list[dict]) -> None:
    """On a shared-memory platform every stage's image is resident at once: flash and static RAM add up."""
    if not platform.shared_memory:
        return
    built, seen = [], set()
    for e, u in zip(entries, updates):  # the stages of one program count once
        program = u["codegen"].get("program", e["index"])
        if "flash_bytes" in u["codegen"] and program not in seen:
            built.append((e, u["codegen"]))
            seen.add(program)
    if len(built) < 2:
        return
    for key, cap, what in (("flash_bytes", "storage_bytes", "flash"), ("ram_bytes", "ram_bytes", "RAM")):
        total = sum(c[key] for _, c in built)
        limit = min(getattr(platform.processor(e["target"]), cap) for e, _ in built)
        if total > limit:
            parts = " + ".join(f"stage {e['index']} on '{e['target']}' {c[key]} B" for e, c in built)
            raise EeccError(f"codegen: the stages share {limit} B of {what} on '{platform.name}' but need "
                            f"{parts} = {total} B together; move exits earlier or assign fewer layers")


def _compile_one(model: onnx.ModelProto, proc: Processor, out_dir: Path, k: int, folder: str,
                 scale: float | None) -> dict:
    try:
        return _compile_one_unchecked(model, proc, out_dir, k, folder, scale)
    except EeccError:
        raise
    except Exception as exc:  # TVM raises bare errors (assertions in schedules) for what it cannot compile
        signals.reraise()  # a Ctrl-C inside TVM's Python callbacks comes out as a bare RuntimeError
        detail = (str(exc).strip().splitlines() or [""])[-1][:160]
        raise EeccError(f"codegen: TVM failed on stage {k} for '{proc.name}' ({proc.kind}): "
                        f"{type(exc).__name__} {detail}; {NO_CODEGEN}") from exc


def _compile_one_unchecked(model: onnx.ModelProto, proc: Processor, out_dir: Path, k: int, folder: str,
                           scale: float | None) -> dict:
    reason = skip_reason(proc.kind)
    if reason is not None:
        return {"codegen": {"skipped": reason}, "artifacts": []}
    if proc.kind in NO_INT8_KINDS and is_int8(model):  # the search never places one there (NO_INT8_KINDS)
        raise EeccError(f"codegen: stage {k} on '{proc.name}' is int8, but {NO_INT8}; compile without --quantize "
                        "int8 to run fp32 stages there")
    stage_dir, name = out_dir / folder, f"stage{k}"
    if proc.kind in TOOLS:
        from eecc.targets import cortex_a, cortex_m, linux_bundle, mcu_bundle

        limits = {"flash_bytes": proc.storage_bytes, "ram_bytes": proc.ram_bytes}
        if proc.kind == "cortex-a":
            arts = cortex_a.compile_stage(model, cpu=CORTEX_A_CPU, out_dir=stage_dir, name=name, **limits)
            arts.files += linux_bundle.make_buildable(arts, name, scale)  # the folder builds without eecc
        else:
            arts = cortex_m.compile_stage(model, cpu=proc.kind, out_dir=stage_dir, name=name, **limits)
            arts.files += mcu_bundle.make_buildable(arts, program=False, scale=scale)
        codegen = {"backend": "cortex_a" if proc.kind == "cortex-a" else "cortex_m", "cpu": arts.cpu,
                   "flash_bytes": arts.flash_bytes, "ram_bytes": arts.ram_bytes,
                   "ram_unplanned_bytes": arts.ram_unplanned_bytes, "arena_bytes": arts.arena_bytes,
                   "arena_unplanned_bytes": arts.arena_unplanned_bytes, "workspace_bytes": arts.workspace_bytes,
                   "kernel_count": arts.kernel_count, "compile_s": arts.compile_s}
        if proc.kind != "cortex-a":  # ram_bytes holds the stack mcu.ld reserves: name it
            codegen["stack_bytes"] = cortex_m.STACK_BYTES
    else:
        from eecc.targets import cuda, mali

        backend = mali if proc.kind == "mali" else cuda
        arts = backend.compile_stage(model, out_dir=stage_dir, name=name)
        # mali's checker leaves its host-built OpenCL compiler driver beside the kernels: not an artifact
        (stage_dir / "clbuild").unlink(missing_ok=True)
        codegen = {"backend": proc.kind, "kernel_count": arts.kernel_count, "compile_s": arts.compile_s,
                   "checked": arts.checked, "check_note": arts.check_note, **arts.extra}
    files = [Path(f) for f in arts.files if Path(f).is_file()]
    return {"codegen": codegen,
            "artifacts": [{"path": f.relative_to(out_dir).as_posix(), "bytes": f.stat().st_size} for f in files]}


def is_int8(model: onnx.ModelProto) -> bool:
    from eecc.targets.int8_lowering import has_qdq

    return has_qdq(model)


def _emulate(stage_dir: Path, proc: Processor, entry: dict, k: int, inputs: dict, want: dict, *,
             int8: bool = False) -> dict:
    from eecc.runtime.emulate import AARCH64_SYSROOT, EmulationError, emulate_stage

    if proc.kind == "mali":  # the OpenCL kernels on this machine's OpenCL device (PoCL): outputs, not speed
        from eecc.targets.mali import run_on_opencl

        return run_on_opencl(stage_dir, f"stage{k}", inputs, want, entry, where=f"stage {k} on '{proc.name}'")
    if proc.kind not in EMULATORS:
        return {"skipped": f"no emulator for {proc.kind} stages (kernels are compiled, not run)"}
    if shutil.which(EMULATORS[proc.kind]) is None:
        return {"skipped": f"'{EMULATORS[proc.kind]}' is not installed (Debian: qemu-system-arm qemu-user)"}
    if proc.kind == "cortex-a" and not Path(AARCH64_SYSROOT).is_dir():
        return {"skipped": f"no aarch64 sysroot at {AARCH64_SYSROOT} (Debian: gcc-aarch64-linux-gnu)"}
    start = time.perf_counter()
    try:
        result = emulate_stage(stage_dir, inputs)
    except EmulationError as exc:
        raise EeccError(f"codegen: stage {k} on '{proc.name}' did not run under emulation ({exc}); "
                        f"the {proc.kind} build in '{stage_dir}' is broken: report it with the stage ONNX file"
                        ) from None
    return emulation_record(result, want, entry, where=f"stage {k} on '{proc.name}'", emulator=EMULATORS[proc.kind],
                            int8=int8, start=start)


def emulation_record(result, want: dict, entry: dict, *, where: str, emulator: str, int8: bool, start: float) -> dict:
    """An emulated stage's outputs against onnxruntime's (`result`: outputs, instructions, samples, and
    stack_used where known), as the manifest's per-stage `emulation` record."""
    head = {"emulator": emulator, "samples": result.samples, "instructions": result.instructions or None,
            "stack_bytes": getattr(result, "stack_used", 0) or None}
    if int8:  # Integer requantisation may land one step away from onnxruntime's float rounding
        from eecc.targets.int8_parity import compare_int8

        return {**head, **compare_int8(result.outputs, want, entry, where=where),
                "emulate_s": round(time.perf_counter() - start, 3)}
    errors, flips = compare_outputs(result.outputs, want, entry, where=where)
    worst = max(errors, key=errors.get) if errors else None
    return {**head, "max_abs_error": errors[worst] if worst else 0.0, "max_abs_error_by_output": errors,
            "exit_flags_at_threshold": flips, "emulate_s": round(time.perf_counter() - start, 3)}


def compare_outputs(got: dict[str, np.ndarray], want: dict[str, np.ndarray], entry: dict, *,
                    where: str) -> tuple[dict[str, float], int]:
    """(max abs error per float output, exit flags flipped at the threshold); raises EeccError beyond
    TOLERANCE. Integer/bool outputs must match exactly, except exit flags of samples whose confidence
    lies within TOLERANCE of the threshold: there a 1e-6 difference legitimately flips the decision."""
    errors, flips = {}, 0
    outs = entry.get("outputs") or {}
    for name, ref in want.items():
        ref = np.asarray(ref).reshape(len(ref), -1)
        if name not in got:
            raise EeccError(f"codegen: {where} has no output '{name}' in its compiled form; report it")
        mine = np.asarray(got[name]).reshape(len(ref), -1)
        if np.issubdtype(ref.dtype, np.floating):
            errors[name] = float(np.max(np.abs(mine.astype(np.float64) - ref))) if ref.size else 0.0
            if not errors[name] <= TOLERANCE:
                raise EeccError(f"codegen: {where} differs from onnxruntime by {errors[name]:.3g} (> {TOLERANCE:g}) "
                                f"in output '{name}'; the compiled stage is wrong, report it with the stage ONNX file")
            continue
        bad = np.any(mine != ref, axis=1)
        if name == outs.get("exit") and outs.get("confidence") in want and entry.get("threshold") is not None:
            conf = np.asarray(want[outs["confidence"]]).reshape(len(ref))
            bad_far = bad & (np.abs(conf - entry["threshold"]) > TOLERANCE)
            flips += int(bad.sum() - bad_far.sum())
            bad = bad_far
        if np.any(bad):
            raise EeccError(f"codegen: {where} gives a different '{name}' than onnxruntime for {int(bad.sum())} "
                            f"of {len(bad)} samples; the compiled stage is wrong, report it with the stage ONNX file")
    return errors, flips
