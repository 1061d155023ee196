"""normalize_opset(m) -> m': IR-3 weight inputs dropped, default-domain opset 7..10 upgraded to 13.

  graph inputs ∩ initializers  -> initializers only        (IR 3 listed every weight as an input too)
  opset_import "" : 7..10      -> onnx.version_converter.convert_version(m, 13)
Classic model-zoo exports (ResNet-50, VGG, SqueezeNet, DenseNet, Inception, AlexNet) are opset 7-9
with IR 3. Opset 13 is the first with per-axis Softmax and input-tensor axes for Squeeze/ReduceSum,
which the rest of eecc expects. Does not mutate its input.
"""

from __future__ import annotations

import onnx
from onnx import version_converter

from eecc.errors import EeccError

UPGRADE_FROM, UPGRADE_TO = 7, 13
MIN_IR = 7  # IR 7 is the oldest the checker accepts together with opset 13


def normalize_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Raises EeccError when the opset is older than 7 or the converter cannot upgrade an op."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _drop_weight_inputs(out.graph)
    opset = _default_opset(out)
    if opset is None or opset >= 11:
        return out
    if opset < UPGRADE_FROM:
        raise EeccError(f"model: default-domain opset {opset} is older than {UPGRADE_FROM}, which eecc cannot "
                        "upgrade; re-export it with opset 11..23 (e.g. torch.onnx.export(..., opset_version=17))")
    out.ir_version = max(out.ir_version, MIN_IR)
    try:
        converted = version_converter.convert_version(out, UPGRADE_TO)
    except Exception as exc:  # the converter raises RuntimeError / ConvertError with the op at fault
        first = str(exc).strip().splitlines()[0][:160]
        raise EeccError(f"model: upgrading opset {opset} to {UPGRADE_TO} failed ({first}); re-export it with "
                        "opset 11..23") from None
    converted.ir_version = max(converted.ir_version, MIN_IR)
    return converted


def _default_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _drop_weight_inputs(graph: onnx.GraphProto) -> None:
    inits = {i.name for i in graph.initializer}
    keep = [i for i in graph.input if i.name not in inits]
    del graph.input[:]
    graph.input.extend(keep)
