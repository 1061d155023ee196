"""tvm_import: pads computed at run time are folded before TVM sees them (TorchScript 'same' padding)."""

import numpy as np

from eecc.targets import tvm_import
from golden import parse, run

DYNAMIC_PAD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 1, 6, 6] input) => (float[N, 2] logits) <float[2, 1, 3, 3] w, float[2, 2] fc, int64[1] four = {4},
   int64[1] two = {2}>
{
    s = Shape(input)
    hw = Slice(s, two, four)
    ones = Div(hw, hw)
    z = Sub(ones, ones)
    pads = Concat<axis = 0>(z, ones, z, ones)
    padded = Pad(input, pads)
    c = Conv(padded, w)
    p = GlobalAveragePool(c)
    f = Flatten(p)
    logits = MatMul(f, fc)
}
"""


def test_dynamic_pads_are_folded_exactly():
    model = parse(DYNAMIC_PAD)
    folded = tvm_import.fold_dynamic_pads(model)
    consts = {i.name for i in folded.graph.initializer}
    assert all(n.input[1] in consts for n in folded.graph.node if n.op_type == "Pad")  # folded, or fused into Conv
    assert not any(n.op_type in ("Shape", "Concat") for n in folded.graph.node)
    x = np.random.default_rng(0).standard_normal((1, 1, 6, 6)).astype(np.float32)  # stages compile at batch 1
    np.testing.assert_array_equal(run(folded, {"input": x})["logits"], run(model, {"input": x})["logits"])
    tvm_import.relax_module(model)  # raised "Dynamic pads are not supported yet" before folding


def test_static_models_pass_through_untouched():
    model = parse(DYNAMIC_PAD.replace("padded = Pad(input, pads)", "padded = Identity(input)"))
    assert tvm_import.fold_dynamic_pads(model) is model
