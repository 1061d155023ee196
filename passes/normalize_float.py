"""normalize_float(m) -> m': a float16 model (all-fp16, or fp16 weights between Casts) computes in float32.

  float16 initializers / Constant values            -> float32 (exact: every fp16 value is a float32)
  Cast<to=FLOAT16>, ConstantOfShape/…<dtype=FLOAT16> -> the same with FLOAT
  float16 graph inputs, outputs, value_info          -> float32
eecc analyses, caches features and trains heads in float32; onnxruntime rejects the mixed types
that a half-converted graph would have. The stages eecc writes are float32 too (stated by
`inspect`). Does not mutate its input.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT
_DTYPE_ATTRS = {"Cast": "to", "CastLike": None, "EyeLike": "dtype", "RandomNormal": "dtype",
                "RandomUniform": "dtype", "RandomNormalLike": "dtype", "RandomUniformLike": "dtype"}


def is_float16(model: onnx.ModelProto) -> bool:
    g = model.graph
    return (any(t.data_type == F16 for t in g.initializer)
            or any(_elem(v) == F16 for v in [*g.input, *g.output, *g.value_info])
            or any(a.name in ("to", "dtype") and a.i == F16 for n in g.node for a in n.attribute)
            or any(a.t.data_type == F16 for n in g.node for a in n.attribute if a.type == a.TENSOR))


def normalize_float(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == F16:
            g.initializer[i].CopyFrom(_to_f32(t))
    for node in g.node:
        for attr in node.attribute:
            if attr.type == attr.TENSOR and attr.t.data_type == F16:
                attr.t.CopyFrom(_to_f32(attr.t))
            elif attr.name == _DTYPE_ATTRS.get(node.op_type) and attr.i == F16:
                attr.i = F32
    for vi in [*g.input, *g.output, *g.value_info]:
        if _elem(vi) == F16:
            vi.type.tensor_type.elem_type = F32
    return out


def _elem(vi: onnx.ValueInfoProto) -> int | None:
    return vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else None


def _to_f32(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)
