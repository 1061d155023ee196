"""onnxruntime session options for every session eecc opens: onnxruntime's own warnings off, and int8 (QDQ)
models run without onnxruntime's int8 kernel fusions, so that every int8 figure eecc reports is the QDQ
model's own arithmetic on any x86 CPU.

Warnings: an int8 stage's QDQ graph makes onnxruntime log one "Removing initializer '…'. It is not used by any
node" line per folded constant when the session is made (nu9: ~420 lines on stderr under --quiet for one int8
compile).

Fusions: at ORT_ENABLE_EXTENDED and above onnxruntime replaces DequantizeLinear → Conv/MatMul/Gemm →
QuantizeLinear by QLinearConv/QLinearMatMul, whose x86 kernels without AVX-VNNI multiply u8 × s8 with
VPMADDUBSW and saturate the pair sums at int16 (onnxruntime's quantization guide, "When and why do I need
to try U8U8?"). Measured 2026-12-01 on an AMD EPYC with AVX2 and no VNNI (onnxruntime 1.30 and 1.32): the
README main job's int8 stage 0 gave exit logits up to 8.1 off the QDQ model's and the cascade measured
83.96 % test accuracy where the QDQ stages give 91.25 %. ORT_ENABLE_BASIC (constant folding, redundant-node
removal; no QDQ fusion) gives the same outputs as ORT_DISABLE_ALL bit for bit on those stages, at the same speed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnxruntime as ort

ERROR = 3  # onnxruntime's log severities: 0 verbose, 1 info, 2 warning (its default), 3 error, 4 fatal
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


def session_options(threads: int | None = None, *, optimize: bool = True,
                    model: Any | str | os.PathLike | None = None) -> ort.SessionOptions:
    """`threads`: intra-op threads (None: onnxruntime's default); `optimize` False: ORT_DISABLE_ALL (the
    references tests and checks compare with, where the runtime's fusions must not hide a bug); `model` (the
    model or its file) with a QuantizeLinear/DequantizeLinear: ORT_ENABLE_BASIC, no int8 kernel fusion
    (module docstring)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = ERROR
    if threads:
        opts.intra_op_num_threads = threads
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif model is not None and is_quantized(model):
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return opts


def is_quantized(model: Any | str | os.PathLike) -> bool:
    """True when the onnx.ModelProto has a quantise or dequantise node in its graph; for an ONNX file, when its
    bytes hold the op name "QuantizeLinear" (DequantizeLinear contains it): the runtime reads no protobuf
    without onnx, which a device host may lack (tests/test_cascade.py), and a false match only costs fusions."""
    if hasattr(model, "graph"):
        return any(node.op_type in QDQ_OPS for node in model.graph.node)
    return b"QuantizeLinear" in Path(model).read_bytes()


def quiet_default_logger() -> None:
    """onnxruntime's default logger at ERROR too: the sessions of its quantiser and of code whose text is hashed
    for the cost model (targets/tvm_import.py: a change there means a refit) take their severity from it. The
    command line sets it once; a program using eecc as a library keeps its own setting."""
    ort.set_default_logger_severity(ERROR)
