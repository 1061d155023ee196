"""fold_constants(m) -> m': subgraphs that depend on no graph input are evaluated into initializers.

  w = Mul(ConstantOfShape<value=0.1>(Constant[64, 3, 3, 3]), s)  ->  w = initializer float[64, 3, 3, 3]
  c = Div(Gather(Shape(x), 1), 2)  with x: [N, 8, 6, 6]         ->  c = initializer int64 4
Old exports compute weights and shape arithmetic at run time (classic model zoo, channel shuffles).
Folding uses onnxscript's optimizer (the onnx project's rewriter), limits raised so that classifier
weights of any size fold; unused nodes are removed afterwards. Needs static non-batch input dims.
Does not mutate its input.
"""

from __future__ import annotations

import onnx

_LIMIT = 1 << 28  # elements; the library default (262144) would leave a VGG classifier weight unfolded


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxscript.optimizer as opt  # heavy import, only when a model is loaded

    out = onnx.ModelProto()
    out.CopyFrom(model)
    # The library keeps ConstantOfShape to keep files small; here its output is usually a weight
    # that cost analysis must see as an initializer, so it is folded too.
    opt.fold_constants(out, onnx_shape_inference=True, input_size_limit=_LIMIT, output_size_limit=_LIMIT,
                       should_fold=lambda node: True if node.op_type == "ConstantOfShape" else None)
    opt.remove_unused_nodes(out)
    return out
