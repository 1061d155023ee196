"""The original model alone on the best single processor, measured the way the written bundle was: the same
numeric format (int8: quantised with the bundle's calibration samples), accuracy by onnxruntime on the test
split, and, after --emulate, compiled with TVM and counted under QEMU like the bundle's stages.

  compute_s = instructions × CPI / clock_hz; latency and energy from eecc.targets.platform.estimate_exits as
  for a one-stage bundle (the float input sent from the first processor, the logits back, that processor idling)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from eecc.model import ir
from eecc.targets.platform import Platform, estimate_exits


def original_alone(plan_graph, processor: str, platform: Platform, test, *, int8_calibration: np.ndarray | None,
                   emulate: bool, fp32_accuracy: float, samples: int = 4) -> dict:
    """{"processors", "exits", "numeric", "accuracy", and after emulation "instructions", "mean_latency_s",
    "mean_energy_j", "worst_case_*" (one stage: mean = worst case), or "skipped" saying why not counted}.
    `int8_calibration`: model inputs to quantise with (None: fp32, whose test accuracy `fp32_accuracy` is known)."""
    model = ir.to_model(plan_graph)
    out = {"processors": [processor], "exits": [], "numeric": "fp32", "accuracy": fp32_accuracy}
    if int8_calibration is not None:
        import onnxruntime as ort
        from eecc.runtime.sessions import session_options

        from eecc.driver.int8 import per_axis_opset
        from eecc.targets.quantize import quantize_stages

        model = quantize_stages(per_axis_opset([model]), int8_calibration)[0]
        sess = ort.InferenceSession(model.SerializeToString(), session_options(optimize=False), providers=["CPUExecutionProvider"])
        x, y = test
        logits = sess.run(None, {sess.get_inputs()[0].name: np.asarray(x, np.float32)})[0]
        out.update(numeric="int8", accuracy=float((logits.argmax(-1) == np.asarray(y)).mean()))
    if emulate:
        out.update(emulated_alone(model, platform, processor, np.asarray(test[0][:samples], np.float32)))
    return out


def emulated_alone(model: onnx.ModelProto, platform: Platform, processor: str, x: np.ndarray) -> dict:
    """`model` as one stage on `processor`, compiled with TVM and counted under QEMU on x [n, ...] float32:
    {"instructions" (per sample), "samples", "mean_latency_s", "mean_energy_j", "worst_case_*", "flash_bytes",
    "ram_bytes"}, or {"skipped": why} where no emulator counts the processor's kind here."""
    from eecc.runtime.emulate import AARCH64_SYSROOT, emulate_stage
    from eecc.targets.calibration import CPI
    from eecc.targets.codegen import CORTEX_A_CPU, EMULATORS, skip_reason

    proc = platform.processor(processor)
    # the kinds whose bundle stages codegen counts under QEMU (eecc.targets.codegen._emulate): the original is
    # counted the same way, so the deployment line never sets an emulated cascade against a nominal original
    reason = skip_reason(proc.kind) or (None if proc.kind in EMULATORS else f"no emulator counts {proc.kind} here")
    if reason is None and not proc.clock_hz:
        reason = f"processor '{proc.name}' has no clock_hz in the platform TOML"
    if reason is None:
        import shutil

        reason = None if shutil.which(EMULATORS[proc.kind]) else f"'{EMULATORS[proc.kind]}' is not installed"
    if reason is None and proc.kind == "cortex-a" and not Path(AARCH64_SYSROOT).is_dir():
        reason = f"no aarch64 sysroot at {AARCH64_SYSROOT}"
    if reason is not None:
        return {"skipped": reason}
    from eecc.targets import cortex_a, cortex_m

    with tempfile.TemporaryDirectory(prefix="eecc-single-") as tmp:
        if proc.kind == "cortex-a":
            arts = cortex_a.compile_stage(model, cpu=CORTEX_A_CPU, out_dir=Path(tmp))
        else:
            arts = cortex_m.compile_stage(model, cpu=proc.kind, out_dir=Path(tmp))
        n = emulate_stage(arts, x).instructions
    seconds = n * CPI[proc.kind] / proc.clock_hz
    shape, out = ([d.dim_value for d in t.type.tensor_type.shape.dim][1:] for t in (model.graph.input[0],
                                                                                  model.graph.output[0]))
    (est,) = estimate_exits(platform, [processor], [0], [0], compute_s=[seconds], input_bytes=4 * int(np.prod(shape)),
                            result_bytes=4 * int(np.prod(out)))  # the float input sent where it runs, its logits back
    return {"instructions": n, "samples": len(x), "mean_latency_s": est["latency_s"],
            "worst_case_latency_s": est["latency_s"], "mean_energy_j": est["energy_j"],
            "worst_case_energy_j": est["energy_j"], "flash_bytes": arts.flash_bytes, "ram_bytes": arts.ram_bytes}
