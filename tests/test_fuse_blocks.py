"""fuse_blocks: residual and re-merging branches collapse, post-ops fuse, heads are recognised."""

import numpy as np
import onnx
import pytest

from eecc.model import ir
from eecc.errors import EeccError
from eecc.driver.pipeline import analyse
from eecc.passes.annotate_cost import annotate_cost
from eecc.passes.fuse_blocks import fuse_blocks, read_blocks
from golden import assert_same_graph, parse, run

RESIDUAL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] input) => (float[N, 10] logits)
  <float[4, 3, 3, 3] w0, float[4, 4, 3, 3] w1, float[4, 4, 3, 3] w2, float[10, 4] fc, float[10] fcb>
{
    c0 = Conv<pads = [1, 1, 1, 1]>(input, w0)
    r0 = Relu(c0)
    c1 = Conv<pads = [1, 1, 1, 1]>(r0, w1)
    r1 = Relu(c1)
    c2 = Conv<pads = [1, 1, 1, 1]>(r1, w2)
    s = Add(r0, c2)
    r2 = Relu(s)
    mp = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(r2)
    c3 = Conv<pads = [1, 1, 1, 1]>(mp, w1)
    r3 = Relu(c3)
    p = GlobalAveragePool(r3)
    f = Flatten(p)
    logits = Gemm<transB = 1>(f, fc, fcb)
}
"""
# (ops, output, candidate) per backbone block; then the head.
RESIDUAL_BLOCKS = [
    (("Conv", "Relu"), "r0", True),
    (("Conv", "Relu", "Conv", "Add", "Relu"), "r2", True),   # the whole residual block, its Relu fused
    (("MaxPool",), "mp", True),
    (("Conv", "Relu"), "r3", False),                          # the head's input: no exit there
]

BRANCHES = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 6, 6] input) => (float[N, 3] logits)
  <float[4, 2, 1, 1] a, float[4, 2, 3, 3] b, float[4, 8, 1, 1] m, float[4, 3] fc, float[3] fcb>
{
    x = Conv(input, a)
    y = Conv<pads = [1, 1, 1, 1]>(input, b)
    yr = Relu(y)
    cat = Concat<axis = 1>(x, yr)
    mix = Conv(cat, m)
    mr = Relu(mix)
    q = ReduceMean<axes = [2, 3], keepdims = 0>(mr)
    h = MatMul(q, fc)
    logits = Add(h, fcb)
}
"""

HEADS = {
    "gap_flatten_gemm": ("GlobalAveragePool(t)", "Flatten(p)", "Gemm<transB = 1>(f, fc, fcb)"),
    "reducemean_reshape_gemm": ("ReduceMean<keepdims = 1>(t, axes)", "Reshape(p, shape)",
                                "Gemm<transB = 1>(f, fc, fcb)"),
    "reducemean_matmul_add": ("ReduceMean<keepdims = 0>(t, axes)", "Identity(p)",
                              "Add(MatMul(f, fcT), fcb)"),
}


def _head_model(kind: str) -> onnx.ModelProto:
    pool, flat, fc = HEADS[kind]
    fc_line = ("mm = MatMul(f, fcT)\n    logits = Add(mm, fcb)" if kind == "reducemean_matmul_add"
               else f"logits = {fc}")
    return parse(f"""
<ir_version: 8, opset_import: ["" : 18]>
g (float[N, 1, 8, 8] input) => (float[N, 5] logits)
  <float[4, 1, 3, 3] w0, float[4, 4, 3, 3] w1, float[5, 4] fc, float[4, 5] fcT, float[5] fcb, int64[2] shape = {{0, -1}},
   int64[2] axes = {{2, 3}}>
{{
    c0 = Conv<pads = [1, 1, 1, 1]>(input, w0)
    r0 = Relu(c0)
    c1 = Conv<pads = [1, 1, 1, 1], strides = [2, 2]>(r0, w1)
    t = Relu(c1)
    p = {pool}
    f = {flat}
    {fc_line}
}}
""")


def _fused(model):
    graph = ir.from_model(model)
    return graph, fuse_blocks(annotate_cost(graph))


def _table(bg):
    return [(b.ops, b.output, b.candidate_exit) for b in bg.blocks]


def test_residual_block_collapses_and_post_ops_fuse():
    before = parse(RESIDUAL)
    graph, after = _fused(before)
    bg = read_blocks(after)
    assert _table(bg) == RESIDUAL_BLOCKS
    assert bg.head.ops == ("GlobalAveragePool", "Flatten", "Gemm") and bg.head.input == "r3"
    assert bg.head.num_classes == 10
    macs = [4 * 64 * 3 * 9, 2 * 4 * 64 * 4 * 9, 0, 4 * 16 * 4 * 9]
    assert [b.macs for b in bg.blocks] == macs
    assert [b.cumulative_macs for b in bg.blocks] == list(np.cumsum(macs))
    assert bg.total_macs == sum(macs) + 40
    roles = {n.name: ir.get_ann(n, "role") for n in after.nodes}
    assert sorted(k for k, v in roles.items() if v == "head") == sorted(bg.head.nodes)


def test_pass_is_pure_and_keeps_the_graph():
    before = parse(RESIDUAL)
    graph, after = _fused(before)
    assert all(ir.get_ann(n, "block") is None for n in graph.nodes)
    out = ir.to_model(after)
    assert_same_graph(out, before)
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"input": x})["logits"], run(before, {"input": x})["logits"])


def test_blocks_survive_save_and_load(tmp_path):
    _, after = _fused(parse(RESIDUAL))
    path = ir.save(after, tmp_path / "fused.onnx")
    assert read_blocks(ir.load(path)) == read_blocks(after)


def test_remerging_branch_is_one_block():
    _, after = _fused(parse(BRANCHES))
    bg = read_blocks(after)
    assert _table(bg) == [(("Conv", "Conv", "Relu", "Concat"), "cat", True), (("Conv", "Relu"), "mr", False)]
    assert bg.head.ops == ("ReduceMean", "MatMul", "Add") and bg.head.macs == 12


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_each_head_kind_is_found(kind):
    _, after = _fused(_head_model(kind))
    bg = read_blocks(after)
    assert [b.output for b in bg.candidates()] == ["r0"]
    assert bg.head.input == "t" and bg.head.num_classes == 5
    assert any(op in ("Gemm", "MatMul") for op in bg.head.ops)


NO_HEAD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 1, 8, 8] input) => (float[N, 4, 8, 8] logits) <float[4, 1, 3, 3] w0, float[4, 4, 3, 3] w1>
{
    c0 = Conv<pads = [1, 1, 1, 1]>(input, w0)
    r0 = Relu(c0)
    c1 = Conv<pads = [1, 1, 1, 1]>(r0, w1)
    logits = Relu(c1)
}
"""


def test_head_with_shape_arithmetic_is_found():
    # What dynamo emits for a flatten of a tensor with odd strides: integer index arithmetic, then Gather.
    model = parse("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 1, 8, 8] input) => (float[N, 5] logits)
  <float[4, 1, 3, 3] w0, float[4, 4, 3, 3] w1, float[5, 4] fc, float[5] fcb, int64 zero = {0}, int64 four = {4},
   int64 one = {1}, int64 two = {2}, int64[1] ax = {0}, int64[1] minus1 = {-1}>
{
    c0 = Conv<pads = [1, 1, 1, 1]>(input, w0)
    r0 = Relu(c0)
    c1 = Conv<pads = [1, 1, 1, 1]>(r0, w1)
    t = Relu(c1)
    p = GlobalAveragePool(t)
    s = Shape(p)
    n = Gather<axis = 0>(s, zero)
    n1 = Unsqueeze(n, ax)
    shp = Concat<axis = 0>(n1, minus1)
    flat = Reshape(p, shp)
    r = Range(zero, four, one)
    r2 = Mul(r, one)
    idx = Add(r2, zero)
    f = Gather<axis = 1>(flat, idx)
    logits = Gemm<transB = 1>(f, fc, fcb)
}
""")
    _, after = _fused(model)
    bg = read_blocks(after)
    assert [b.output for b in bg.candidates()] == ["r0"]
    assert bg.head.input == "t" and "Range" in bg.head.ops and bg.head.macs == 20


def test_no_head_is_an_error():
    with pytest.raises(EeccError, match="no classifier head"):
        _fused(parse(NO_HEAD))


def test_no_candidate_is_an_error():
    model = parse("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 1, 8, 8] input) => (float[N, 3] logits) <float[4, 1, 3, 3] w0, float[3, 4] fc>
{
    c0 = Conv<pads = [1, 1, 1, 1]>(input, w0)
    r0 = Relu(c0)
    p = GlobalAveragePool(r0)
    f = Flatten(p)
    logits = Gemm<transB = 1>(f, fc)
}
""")
    with pytest.raises(EeccError, match="no candidate exit point"):
        _fused(model)


def test_requires_annotate_cost():
    with pytest.raises(EeccError, match="annotate_cost first"):
        fuse_blocks(ir.from_model(parse(RESIDUAL)))


def test_analyse_matches_manual_pipeline():
    model = parse(RESIDUAL)
    _, bg = analyse(model)
    assert _table(bg) == RESIDUAL_BLOCKS


MLP = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 1, 4, 4] input) => (float[N, 3] probs) <float[8, 16] a, float[8, 8] b, float[8, 8] c, float[3, 8] d>
{
    x = Flatten(input)
    h = Gemm<transB = 1>(x, a)
    r = Relu(h)
    h2 = Gemm<transB = 1>(r, b)
    r2 = Relu(h2)
    h3 = Gemm<transB = 1>(r2, c)
    r3 = Tanh(h3)
    logits = Gemm<transB = 1>(r3, d)
    probs = Softmax<axis = 1>(logits)
}
"""


def test_an_mlp_gets_exits_on_its_hidden_vectors():
    """No maps: the head is the classifier layer and what follows; every hidden vector before its input is a
    candidate, the flattened input (no MACs yet) is not."""
    graph, after = _fused(parse(MLP))
    bg = read_blocks(after)
    assert _table(bg) == [(("Flatten",), "x", False), (("Gemm", "Relu"), "r", True), (("Gemm", "Relu"), "r2", True),
                          (("Gemm", "Tanh"), "r3", False)]
    assert bg.head.ops == ("Gemm", "Softmax") and bg.head.input == "r3" and bg.head.macs == 24
    assert [b.cumulative_macs for b in bg.candidates()] == [128, 192]
    np.testing.assert_array_equal(run(ir.to_model(after), {"input": np.ones((2, 1, 4, 4), np.float32)})["probs"],
                                  run(parse(MLP), {"input": np.ones((2, 1, 4, 4), np.float32)})["probs"])


def test_an_mlp_without_a_hidden_layer_before_the_classifier_input_is_refused_with_the_reason():
    model = parse("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 16] input) => (float[N, 3] logits) <float[8, 16] a, float[3, 8] c>
{
    h = Gemm<transB = 1>(input, a)
    r = Relu(h)
    logits = Gemm<transB = 1>(r, c)
}
""")
    with pytest.raises(EeccError, match="MLP has 2 layer.*at least two hidden layers"):
        _fused(model)


def test_branches_that_merge_only_after_pooling_leave_no_exit_and_say_so():
    """Not an MLP: the feature maps exist, but no map lies on every path to the output."""
    model = parse("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 1, 8, 8] input) => (float[N, 3] logits) <float[4, 1, 3, 3] w0, float[4, 1, 3, 3] w1, float[3, 4] c>
{
    a = Conv<pads = [1, 1, 1, 1]>(input, w0)
    b = Conv<pads = [1, 1, 1, 1]>(input, w1)
    pa = GlobalAveragePool(a)
    pb = GlobalAveragePool(b)
    s = Add(pa, pb)
    f = Flatten(s)
    logits = Gemm<transB = 1>(f, c)
}
""")
    with pytest.raises(EeccError, match="branches only merge at the end.*no place for an exit"):
        _fused(model)


def test_a_multi_fc_head_after_average_pooling_is_the_head_and_no_vector_is_a_candidate():
    model = parse("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 1, 8, 8] input) => (float[N, 3] logits)
  <float[4, 1, 3, 3] w0, float[4, 4, 3, 3] w1, float[6, 16] a, float[3, 6] c, int64[2] shp = {0, -1}>
{
    c0 = Conv<pads = [1, 1, 1, 1]>(input, w0)
    r0 = Relu(c0)
    c1 = Conv<pads = [1, 1, 1, 1]>(r0, w1)
    r1 = Relu(c1)
    p = AveragePool<kernel_shape = [4, 4], strides = [4, 4]>(r1)
    f = Reshape(p, shp)
    h = Gemm<transB = 1>(f, a)
    hr = HardSwish(h)
    logits = Gemm<transB = 1>(hr, c)
}
""")
    bg = read_blocks(_fused(model)[1])
    assert bg.head.input == "p" and bg.head.ops == ("Reshape", "Gemm", "HardSwish", "Gemm")
    # r1 is a feature map, but its prefix holds 11,520 of the 11,634 MACs (99.0 %): an exit there saves < 1 %
    assert [b.output for b in bg.candidates()] == ["r0"]
    assert [b.output for b in bg.blocks] == ["r0", "r1", "p"]


GELU_MLP = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 1, 4, 4] input) => (float[N, 3] logits)
  <float[8, 16] w1, float[8] b1, float[8, 8] w2, float[8] b2, float[4, 8] w3, float[4] b3, float[3, 4] fc, float[3] fcb,
   float sqrt2 = {1.4142135}, float one = {1.0}, float half = {0.5}>
{
    x = Flatten(input)
    h1 = Gemm<transB = 1>(x, w1, b1)
    d1 = Div(h1, sqrt2)
    e1 = Erf(d1)
    a1 = Add(e1, one)
    m1 = Mul(h1, a1)
    g1 = Mul(m1, half)
    h2 = Gemm<transB = 1>(g1, w2, b2)
    s2 = Sigmoid(h2)
    g2 = Mul(h2, s2)
    h3 = Gemm<transB = 1>(g2, w3, b3)
    r3 = Relu(h3)
    logits = Gemm<transB = 1>(r3, fc, fcb)
}
"""


def test_an_activation_written_out_of_its_input_alone_fuses_into_the_block_before():
    """A new user's finding: a TorchScript export of a GELU MLP writes GELU as Div, Erf, Add, Mul, Mul, which branches
    from the Gemm's output and re-merges: it was a block of its own, so the Gemm's output and the GELU's were two exit
    candidates at one point (the same for SiLU's x · Sigmoid(x)); the dynamo export's Gelu op fused with its Gemm."""
    before = parse(GELU_MLP)
    graph, after = _fused(before)
    bg = read_blocks(after)
    assert _table(bg) == [(("Flatten",), "x", False), (("Gemm", "Div", "Erf", "Add", "Mul", "Mul"), "g1", True),
                          (("Gemm", "Sigmoid", "Mul"), "g2", True), (("Gemm", "Relu"), "r3", False)]
    assert_same_graph(ir.to_model(after), before)
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(ir.to_model(after), {"input": x})["logits"], run(before, {"input": x})["logits"])
