"""The peer in bench/mcu.py: the same int8 stage compiled to C by emx-onnx-cgen (PyPI), built with eecc's
arm-none-eabi-gcc flags and counted in eecc's QEMU harness (mcu_main.c: semihosting I/O, SysTick count).

  stage (QDQ) --onnxruntime ORT_ENABLE_EXTENDED--> QOperator graph (QLinearConv, QGemm, ...)
              --emx-onnx-cgen--> model.c + a 20-line adapter to eecc's driver ABI --gcc--> ELF

onnxruntime's own QDQ->QOperator fusion gives the peer integer kernels (int32 accumulation, float
requantisation) instead of the float-simulated QDQ graph, i.e. its best int8 input. emx-onnx-cgen keeps
temporaries on the stack (--large-temp-threshold 0), so the peer's RAM is .data + .bss + measured stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from eecc.targets import cortex_m

PEER = "emx-onnx-cgen"
PEER_STACK_BYTES = 1 << 20  # the board has 4 MB of RAM; the peer's real need is measured (stack paint)


def peer_version() -> str | None:
    try:
        from importlib.metadata import version

        return version(PEER)
    except Exception:
        return None


def qoperator(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's fused int8 graph of a QDQ stage (batch 1), with every intermediate typed: the
    com.microsoft ops have no ONNX shape inference, so one onnxruntime run supplies dtypes and shapes."""
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    for v in [*model.graph.input, *model.graph.output]:
        dim = v.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 1
    with tempfile.TemporaryDirectory(prefix="eecc-peer-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(tmp) / "qop.onnx")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        fused = onnx.load(opts.optimized_model_filepath)
    probe = onnx.ModelProto.FromString(fused.SerializeToString())
    known = {o.name for o in probe.graph.output}
    inner = [t for n in probe.graph.node for t in n.output if t and t not in known]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in inner)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros([d.dim_value for d in i.type.tensor_type.shape.dim],
                             helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)) for i in fused.graph.input}
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    del fused.graph.value_info[:]
    fused.graph.value_info.extend(helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(values[t].dtype),
                                                                list(values[t].shape)) for t in inner)
    return fused


def _adapter(model: onnx.ModelProto) -> str:
    """eecc_run() and the I/O table of eecc's driver ABI around emx-onnx-cgen's `void model(in..., out...)`."""
    ctype = {np.dtype(np.float32): "float", np.dtype(np.int8): "int8_t", np.dtype(np.uint8): "uint8_t",
             np.dtype(np.bool_): "_Bool", np.dtype(np.int64): "int64_t", np.dtype(np.int32): "int32_t"}
    lines, params, ios = ['#include "eecc_driver.h"'], [], {"in": [], "out": []}
    for kind, values in (("in", model.graph.input), ("out", model.graph.output)):
        for i, v in enumerate(values):
            dt = np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
            n = int(np.prod([d.dim_value for d in v.type.tensor_type.shape.dim]))
            lines.append(f"static {ctype[dt]} {kind}{i}[{n}] __attribute__((aligned(8)));")
            params.append(f"{'const ' if kind == 'in' else ''}{ctype[dt]}*")
            ios[kind].append(f"{{{json.dumps(v.name)}, {kind}{i}, {n * dt.itemsize}}}")
    args = [f"in{i}" for i in range(len(ios["in"]))] + [f"out{i}" for i in range(len(ios["out"]))]
    lines += [f"void model({', '.join(params)});",
              f"int eecc_run(void) {{ model({', '.join(args)}); return 0; }}",
              f"const eecc_io eecc_inputs[] = {{{', '.join(ios['in'])}}};",
              f"const eecc_io eecc_outputs[] = {{{', '.join(ios['out'])}}};",
              f"const int eecc_num_inputs = {len(ios['in'])}, eecc_num_outputs = {len(ios['out'])};",
              "uint8_t eecc_workspace[8];", "const uint32_t eecc_workspace_bytes = 8;"]
    return "\n".join(lines) + "\n"


def compile_peer(model: onnx.ModelProto, *, cpu: str, out_dir: Path) -> dict:
    """Build the peer's ELF for `cpu` in out_dir (a stage directory emulate_stage can run); returns
    {"flash_bytes", "static_ram_bytes", "c_bytes"}. Raises RuntimeError when the generator fails."""
    cpu = cortex_m.canonical_cpu(cpu)
    spec, out_dir = cortex_m.CPUS[cpu], Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fused = qoperator(model)
    onnx.save(fused, str(out_dir / "stage.qop.onnx"))
    proc = subprocess.run([sys.executable, "-m", "emx_onnx_cgen", "compile", "--large-weight-threshold", "0", "--large-temp-threshold", "0",
                           "--restrict-arrays", "--color", "never", str(out_dir / "stage.qop.onnx"),
                           str(out_dir / "model.c")], capture_output=True, text=True)
    if proc.returncode != 0 or not (out_dir / "model.c").exists():
        raise RuntimeError(f"{PEER} failed: {(proc.stdout + proc.stderr).strip()[-600:]}")
    (out_dir / "adapter.c").write_text(_adapter(fused))
    elf = out_dir / "peer.elf"
    cmd = [cortex_m.require_tool("arm-none-eabi-gcc"), *spec["cflags"], "-O2", "-ffunction-sections",
           "-fdata-sections", "-nostartfiles", f"-I{cortex_m.CDRIVER}", "-T", str(cortex_m.CDRIVER / "mcu.ld"),
           f"-Wl,--defsym=STACK_SIZE={PEER_STACK_BYTES}", "-Wl,--gc-sections", "--specs=nano.specs",
           "--specs=nosys.specs", str(out_dir / "model.c"), str(out_dir / "adapter.c"),
           str(cortex_m.CDRIVER / "runtime_common.c"), str(cortex_m.CDRIVER / "mcu_main.c")]
    if cpu == "cortex-m0plus":
        cmd.append(str(cortex_m.CDRIVER / "softfloat_v6m.c"))
    proc = subprocess.run(cmd + ["-o", str(elf), "-lm", "-lgcc"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"arm-none-eabi-gcc failed on {PEER}'s C: {proc.stderr.strip()[-600:]}")
    flash, ram = cortex_m.section_sizes(elf)
    io = lambda vs: [{"name": v.name, "shape": [d.dim_value for d in v.type.tensor_type.shape.dim],  # noqa: E731
                      "dtype": str(np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)))}
                     for v in vs]
    (out_dir / "stage.json").write_text(json.dumps({"kind": "mcu", "run": {"board": spec["board"], "elf": elf.name},
                                                    "inputs": io(fused.graph.input),
                                                    "outputs": io(fused.graph.output)}))
    return {"flash_bytes": flash, "static_ram_bytes": ram - PEER_STACK_BYTES,
            "c_bytes": (out_dir / "model.c").stat().st_size}
