"""annotate_cost: per-node MACs (README convention), other ops, params, bytes; graph unchanged otherwise."""

import numpy as np
import onnx

from eecc.model import ir
from eecc.passes.annotate_cost import annotate_cost, totals
from golden import assert_same_graph, canonical, parse, run

BEFORE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4, 8, 8] input) => (float[N, 10] logits)
  <float[8, 2, 3, 3] wg, float[8] bg, float[8, 4, 2, 2] wt, float[4, 5] wm, float[10, 20] fc, float[10] fcb,
   int64[2] shape = {0, -1}>
{
    g1 = Conv<group = 2, pads = [1, 1, 1, 1], strides = [2, 2]>(input, wg, bg)
    r = Relu(g1)
    t = ConvTranspose<strides = [2, 2]>(r, wt)
    p = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(t)
    m = MatMul(p, wm)
    q = ReduceMean<axes = [1], keepdims = 0>(m)
    f = Reshape(q, shape)
    logits = Gemm<transB = 1>(f, fc, fcb)
}
"""
# Every figure below is worked out by hand from the convention in annotate_cost's docstring.
EXPECTED = {  # op: (macs, other_ops, params, weight_bytes, activation_bytes)
    "Conv": (8 * 4 * 4 * (4 // 2) * 3 * 3, 8 * 4 * 4, 8 * 2 * 9 + 8, 4 * (8 * 2 * 9 + 8), 4 * 8 * 4 * 4),
    "Relu": (0, 128, 0, 0, 512),
    "ConvTranspose": (8 * 4 * 4 * 4 * 2 * 2, 0, 8 * 4 * 4, 4 * 128, 4 * 4 * 8 * 8),
    "MaxPool": (0, 4 * 4 * 4 * 4, 0, 0, 4 * 4 * 4 * 4),
    "MatMul": (4 * 4 * 5 * 4, 0, 20, 80, 4 * 80),  # no bias: no other ops
    "ReduceMean": (0, 4 * 4 * 5, 0, 0, 4 * 20),
    "Reshape": (0, 0, 0, 0, 4 * 20),   # the int64 shape constant is not a weight
    "Gemm": (20 * 10, 10, 210, 840, 40),
}


def test_annotations_match_hand_counts():
    before = parse(BEFORE)
    graph = ir.from_model(before)
    after = annotate_cost(graph)
    got = {n.op: tuple(ir.get_ann(n, k) for k in ("macs", "other_ops", "params", "weight_bytes", "activation_bytes"))
           for n in after.nodes}
    assert got == EXPECTED
    assert totals(after)["macs"] == sum(v[0] for v in EXPECTED.values())


def test_graph_is_unchanged_and_input_not_mutated():
    before = parse(BEFORE)
    graph = ir.from_model(before)
    snapshot = canonical(ir.to_model(graph))
    after = ir.to_model(annotate_cost(graph))
    assert canonical(ir.to_model(graph)) == snapshot
    assert all(not ir.annotations(n) for n in graph.nodes)
    assert_same_graph(after, before)
    onnx.checker.check_model(after, full_check=True)
    keys = {p.key for n in after.graph.node for p in n.metadata_props}
    assert keys == {f"pkg.eecc.{k}" for k in ("macs", "other_ops", "params", "weight_bytes", "activation_bytes")}


def test_numerics_unchanged():
    before = parse(BEFORE)
    after = ir.to_model(annotate_cost(ir.from_model(before)))
    x = np.random.default_rng(0).standard_normal((3, 4, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(after, {"input": x})["logits"], run(before, {"input": x})["logits"])



# Recurrent ops: a GRU with its sequence output Y omitted (''), a bidirectional LSTM.
RNN = """
<ir_version: 8, opset_import: ["" : 14]>
g (float[N, 6, 4] input) => (float[1, N, 3] yh, float[2, N, 5] h)
  <float[1, 9, 4] gw, float[1, 9, 3] gr, float[2, 20, 4] lw, float[2, 20, 5] lr>
{
    t = Transpose<perm = [1, 0, 2]>(input)
    , yh = GRU<hidden_size = 3>(t, gw, gr)
    ly, h, c = LSTM<hidden_size = 5, direction = "bidirectional">(t, lw, lr)
}
"""
# seq_length · directions · gates · H · (I + H): GRU 3 gates, LSTM 4 (ONNX operator spec); other ops are the
# first present output's elements. activation_bytes: every output that exists, per sample, wherever its batch is
# (seq-first X [6, N, 4], Y [6, 2, N, 5], Y_h [1, N, 3], Y_c [2, N, 5]).
EXPECTED_RNN = {
    "Transpose": (0, 0, 0, 0, 4 * 6 * 4),
    "GRU": (6 * 1 * 3 * 3 * (4 + 3), 3, 9 * 4 + 9 * 3, 4 * 63, 4 * 1 * 3),
    "LSTM": (6 * 2 * 4 * 5 * (4 + 5), 6 * 2 * 5, 2 * 20 * 4 + 2 * 20 * 5, 4 * 360, 4 * (6 * 2 * 5 + 2 * 5 + 2 * 5)),
}


def test_recurrent_macs_match_hand_counts_and_an_omitted_output_is_skipped():
    after = annotate_cost(ir.from_model(parse(RNN), classifier=False))
    keys = ("macs", "other_ops", "params", "weight_bytes", "activation_bytes")
    got = {n.op: tuple(ir.get_ann(n, k) for k in keys) for n in after.nodes}
    assert got == EXPECTED_RNN


# A Gemm on the batch folded with the tokens, as torch's MultiheadAttention exports its out-projection
# ([N·tokens, dim] from a Reshape to (-1, dim)): shape inference leaves its rows one symbolic dim (nu11 F6).
FOLDED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 5, 8] input) => (float[N, 3] logits)
  <float[4, 8] w, float[4] b, float[3, 4] fc, int64[2] rows = {-1, 8}, int64[3] back = {-1, 5, 4}>
{
    r = Reshape(input, rows)
    o = Gemm<transB = 1>(r, w, b)
    t = Reshape(o, back)
    m = ReduceMean<axes = [1], keepdims = 0>(t)
    logits = Gemm<transB = 1>(m, fc)
}
"""


def test_gemm_on_batch_folded_with_tokens_counts_every_row_of_a_sample():
    """DESIGN decision 4: M·K·N with every leading dim. Checked against torch's own FLOP counter on the same
    matrix product (2 FLOPs per MAC), at batch 3 divided by 3."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    after = annotate_cost(ir.from_model(parse(FOLDED)))
    got = {n.name: ir.get_ann(n, "macs") for n in after.nodes if n.op == "Gemm"}
    x, w = torch.zeros(3, 5, 8), torch.zeros(4, 8)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.linear(x.reshape(-1, 8), w)
    independent = counter.get_total_flops() // 2 // 3
    assert independent == 5 * 8 * 4
    assert sorted(got.values()) == [4 * 3, independent]  # the classifier Gemm: 4·3
