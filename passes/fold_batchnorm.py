"""fold_batchnorm(m) -> m': inference BatchNormalization folded into the Conv / ConvTranspose / Gemm before it.

  y = BatchNormalization(Conv(x, W, B), γ, β, μ, σ²; ε)  ->  y = Conv(x, W·s, (B − μ)·s + β),  s = γ / √(σ² + ε)
(s broadcast along W's output-channel axis; ONNX BatchNormalization spec, inference mode). TorchScript exports
at opset ≤ 10, or with `training=TrainingMode.PRESERVE` / `do_constant_folding=False`, keep BatchNormalization as
a node of its own: left there it runs in float between the int8 kernels (+34 % instructions on a 1-D CNN's int8
stage) and its stage costs are mispredicted (+22..44 %).

The rewrite is onnxscript's rule set (`onnxscript.rewriter.rules.common`, the onnx project's rewriter that
fold_constants already uses): it touches BatchNormalization and its producer only. onnxruntime's basic level
(ORT_ENABLE_BASIC) folds BatchNormalization too but applies every other basic rewrite with it (Conv+Add/Mul
fusion, unsqueeze/identity elimination, constant folding), which is not this pass's business.
The rule folds only when the producer's output feeds nothing else and is not a graph output, and every weight,
bias and statistic is a constant initializer used by no other node; any other BatchNormalization stays (the
cost model prices it as elementwise work, one unit per output element: eecc/cost/features.py; `inspect` lists
it). The folded node keeps the producer's name and takes the BatchNormalization's output name.

Raises EeccError for a BatchNormalization in training mode (training_mode = 1: its output depends on the
batch, so samples cannot be routed one by one). Does not mutate its input.
"""

from __future__ import annotations

import onnx
from onnx import helper

from eecc.errors import EeccError

FOLDS_INTO = ("Conv", "ConvTranspose", "Gemm")


def fold_batchnorm(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    bns = [n for n in out.graph.node if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx")]
    for n in bns:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if attrs.get("training_mode", 0):
            raise EeccError(f"model: BatchNormalization '{n.name}' is in training mode (training_mode=1: it "
                            "normalises with the batch's own statistics); export the model after model.eval()")
    producer = {o: n for n in out.graph.node for o in n.output}
    # output of the BatchNormalization -> the name of the node it folds into (the rewriter names new nodes itself)
    names = {n.output[0]: producer[n.input[0]].name for n in bns
             if n.input[0] in producer and producer[n.input[0]].op_type in FOLDS_INTO}
    if not names:
        return out
    from onnxscript import rewriter  # heavy import, only when there is something to fold
    from onnxscript.rewriter.rules.common import (fuse_batchnorm_into_conv_rule,
                                                  fuse_batchnorm_into_conv_transpose_rule,
                                                  fuse_batchnorm_into_gemm_rule)

    out = rewriter.rewrite(out, pattern_rewrite_rules=[fuse_batchnorm_into_conv_rule,
                                                       fuse_batchnorm_into_conv_transpose_rule,
                                                       fuse_batchnorm_into_gemm_rule])
    for node in out.graph.node:
        if node.op_type in FOLDS_INTO and node.output[0] in names:
            node.name = names[node.output[0]]
    return out
