"""Static int8 quantisation of cascade stages with onnxruntime (QDQ, per-channel weights).

  stage(x)  ->  Q/DQ around every Conv, Gemm, MatMul, Add, pool and reshape; the exit gate stays float.

Stage k is calibrated on the hand-off that the float stages 0..k-1 compute from training samples, so
every stage sees the activation ranges of real data. Weights are symmetric int8 per output channel
(zero point 0, what the integer kernels of int8_lowering and CMSIS-NN expect), activations asymmetric
int8, biases int32 at scale s_x·s_w.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from eecc.errors import EeccError

# Ops that get Q/DQ. The gate (Softmax, ReduceMax, TopK, comparison) is left out on purpose: its
# confidence is compared with a threshold, and a quantised softmax would move every threshold.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "Add", "GlobalAveragePool", "MaxPool", "AveragePool", "Flatten",
                 "Reshape", "Relu", "Clip")
CALIBRATION_SAMPLES = 512
_ROLE = "pkg.eecc.role"


def quantize_stage(model: onnx.ModelProto, calibration: dict[str, np.ndarray], *,
                   per_channel: bool = True) -> onnx.ModelProto:
    """One stage, calibrated (MinMax) on `calibration` (input name -> [N, ...] float32)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    missing = [n for n in names if n not in calibration]
    if missing:
        raise EeccError(f"quantize: no calibration data for input(s) {missing} of stage '{model.graph.name}'")
    n = min(len(calibration[k]) for k in names)
    if n == 0:
        raise EeccError(f"quantize: stage '{model.graph.name}' got no calibration samples; pass training data")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.start = 0

        def get_next(self):
            if self.start >= n:
                return None
            stop = min(self.start + 64, n)
            feed = {k: np.ascontiguousarray(calibration[k][self.start:stop], dtype=np.float32) for k in names}
            self.start = stop
            return feed

    gates = [node.name for node in model.graph.node
             if any(p.key == _ROLE and p.value == '"gate"' for p in node.metadata_props)]
    with tempfile.TemporaryDirectory(prefix="eecc-quant-") as tmp:
        out, src = Path(tmp) / "stage.int8.onnx", Path(tmp) / "stage.onnx"
        onnx.save(model, str(src))  # a ModelProto argument would be rewritten to external data in place
        # onnxruntime logs a pre-processing hint on the root logger for every stage: noise for our users.
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(logging.ERROR)
        try:
            quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANTIZED_OPS), per_channel=per_channel,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=gates, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        except EeccError:
            raise
        except Exception as exc:  # onnxruntime raises plain errors for graphs it cannot quantise
            raise EeccError(f"quantize: onnxruntime could not quantise stage '{model.graph.name}' "
                            f"({str(exc).splitlines()[-1] if str(exc) else type(exc).__name__}); "
                            "compile without --quantize or simplify the model") from exc
        finally:
            root.setLevel(level)
        quantized = onnx.load(str(out))
    quantized.graph.name = model.graph.name
    _keep_annotations(model, quantized)
    return quantized


def quantize_stages(models: Sequence[onnx.ModelProto], x: np.ndarray, *, samples: int = CALIBRATION_SAMPLES,
                    per_channel: bool = True) -> list[onnx.ModelProto]:
    """Every stage of a cascade; `x` are model inputs (training data), the first `samples` are used."""
    from eecc.targets.codegen import reference_runs

    x = np.asarray(x, dtype=np.float32)[:samples]
    runs = reference_runs(models, x)
    return [quantize_stage(m, inputs, per_channel=per_channel) for m, (inputs, _) in zip(models, runs)]


def stage_logits(models: Sequence[onnx.ModelProto], manifest_stages: Sequence[dict], x: np.ndarray,
                 *, batch: int = 256) -> tuple[list[np.ndarray], np.ndarray]:
    """([E] exit logits [N, C], final logits [N, C]) of every sample at every stage, no routing:
    what a threshold search needs. Stage k is fed the hand-off of stage k-1 (of the same models)."""
    from eecc.targets.codegen import reference_runs

    heads: list[list[np.ndarray]] = [[] for _ in manifest_stages[:-1]]
    final: list[np.ndarray] = []
    x = np.asarray(x, dtype=np.float32)
    for start in range(0, len(x), batch):
        runs = reference_runs(models, x[start:start + batch])
        for k, (entry, (_, outputs)) in enumerate(zip(manifest_stages, runs)):
            logits = outputs[entry["outputs"]["logits"]]
            (final if entry["outputs"]["exit"] is None else heads[k]).append(logits)
    return [np.concatenate(h) for h in heads], np.concatenate(final)


def set_threshold(model: onnx.ModelProto, threshold: float) -> onnx.ModelProto:
    """A copy of a gated stage with its `exit<k>.threshold` constant replaced."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    found = [t for t in out.graph.initializer if t.name.startswith("exit") and t.name.endswith(".threshold")]
    if len(found) != 1:
        raise EeccError(f"quantize: stage '{model.graph.name}' has {len(found)} 'exit<k>.threshold' constants, "
                        "needs one; only gated stages (all but the last) have a threshold")
    found[0].CopyFrom(onnx.numpy_helper.from_array(np.array(threshold, dtype=np.float32), found[0].name))
    return out


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of all initializers: int8 weights + int32 biases + scales for a quantised stage."""
    return int(sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer))


def _keep_annotations(src: onnx.ModelProto, dst: onnx.ModelProto) -> None:
    """onnxruntime rebuilds nodes without their metadata_props; copy eecc's back by node name."""
    props = {n.name: list(n.metadata_props) for n in src.graph.node if n.name}
    for node in dst.graph.node:
        if node.name in props and not node.metadata_props:
            node.metadata_props.extend(props[node.name])
    dst.metadata_props.extend(p for p in src.metadata_props if p.key not in {q.key for q in dst.metadata_props})
