"""inline_functions(m) -> m': every call of a model-local function replaced by its body (onnx.inliner).

  y = local.Block(x)  with  Block(x) { t = Conv(x, w); y = Relu(t) }   ->   t' = Conv(x, w); y = Relu(t')
Exporters emit local functions when modules are kept as functions; eecc's cost and block analysis
only see top-level nodes, so a Conv inside a function would be counted as nothing. Does not mutate its input.
"""

from __future__ import annotations

import onnx
from onnx import inliner


def inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    if not model.functions:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        return out
    out = inliner.inline_local_functions(model)  # returns a new model; the input is untouched
    del out.functions[:]
    return out
