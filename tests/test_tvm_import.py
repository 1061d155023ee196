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


SLASHED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 4, 4] "/5/Relu_output_0") => (float[N, 3] logits) <float[2, 3] fc>
{
    p = GlobalAveragePool("/5/Relu_output_0")
    f = Flatten(p)
    logits = MatMul(f, fc)
}
"""


def test_hand_off_names_become_identifiers_for_gpu_kernels(tmp_path):
    model = parse(SLASHED)
    renamed = tvm_import.with_identifier_inputs(model)
    assert [i.name for i in renamed.graph.input] == ["stage_input0"]
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(renamed, {"stage_input0": x})["logits"],
                                  run(model, {"/5/Relu_output_0": x})["logits"])
    from eecc.targets import mali

    arts = mali.compile_stage(model, out_dir=tmp_path, name="stage1")  # the OpenCL compiler rejected '/5/...'
    assert arts.kernel_count >= 1
