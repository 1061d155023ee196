"""Head design rules: budget, NACHOS cost monotonicity, pooling shapes, CandidateCost."""

from __future__ import annotations

import numpy as np
import pytest

from eecc.errors import EeccError
from eecc.exits.run import plan_exits
from eecc.exits.heads import HeadSpec, design_heads, initial_head
from golden import parse

SMALL = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N,1,16,16] x) => (float[N,10] y) <float[8,1,3,3] w1, float[16,8,3,3] w2, float[16,16,1,1] w3, float[10,16] fw, float[10] fb> {
  c1 = Conv <pads=[1,1,1,1]> (x, w1)
  r1 = Relu (c1)
  c2 = Conv <pads=[1,1,1,1], strides=[2,2]> (r1, w2)
  r2 = Relu (c2)
  c3 = Conv (r2, w3)
  r3 = Relu (c3)
  g = GlobalAveragePool (r3)
  f = Flatten (g)
  y = Gemm <transB=1> (f, fw, fb)
}
"""


def test_initial_head_pools_to_small_map_and_keeps_width_capped():
    spec = initial_head("t", (256, 28, 28), num_classes=10, backbone_macs=0)
    assert spec.pool == (7, 7) and spec.pooled_shape == (256, 4, 4) and spec.width == 128
    odd = initial_head("t", (8, 7, 5), num_classes=3, backbone_macs=0)
    assert odd.pool == (2, 2) and odd.pooled_shape == (8, 4, 3)  # ceil mode keeps the border
    series = initial_head("t", (16, 100), num_classes=2, backbone_macs=0)
    assert series.pool == (13,) and series.pooled_shape == (16, 8)
    assert series.head_macs == 16 * 16 * 8 + 2 * 16
    vector = initial_head("t", (10,), num_classes=2, backbone_macs=0)  # an MLP's hidden vector: a Gemm on it
    assert (vector.kind, vector.pool, vector.width, vector.head_macs) == ("flat", (), None, 20)
    with pytest.raises(EeccError, match="need \\(F,\\) vectors, \\(C, L\\) or \\(C, H, W\\)"):
        initial_head("t", (2, 3, 4, 5), num_classes=2, backbone_macs=0)


def test_budget_pools_more_then_drops_conv_then_rejects():
    d = design_heads([("a", (64, 16, 16), 1000)], num_classes=10, final_macs=1_000_000, budget=0.02)
    (a,) = d.heads
    assert a.pool == (8, 8) and a.width == 64 and a.head_macs == 64 * 64 * 4 + 640 <= 20_000
    d = design_heads([("a", (64, 16, 16), 1000)], num_classes=10, final_macs=100_000, budget=0.02)
    assert d.heads[0].width is None and d.heads[0].head_macs == 640
    d = design_heads([("a", (64, 16, 16), 10)], num_classes=10, final_macs=10_000, budget=0.02)
    assert d.heads == [] and "exceeds the budget of 200 MACs" in d.rejected["a"]
    with pytest.raises(EeccError, match="budget"):
        design_heads([], num_classes=10, final_macs=1, budget=0)


def test_exit_cost_is_monotone_nachos():
    cands = [("a", (64, 16, 16), 1000), ("b", (8, 4, 4), 1100), ("c", (32, 8, 8), 50_000)]
    d = design_heads(cands, num_classes=10, final_macs=1_000_000, budget=0.02)
    a, b, c = d.heads
    # b is cheap, so a had to shrink all the way to a bare Gemm for exit(a) <= exit(b)
    assert a.width is None and a.exit_macs == 1000 + 640 <= b.exit_macs == 1100 + 8 * 8 * 16 + 80
    costs = [h.exit_macs for h in d.heads] + [d.final_macs]
    assert costs == sorted(costs)
    # the last exit may not cost more than the whole model
    d = design_heads([("z", (64, 4, 4), 999_000)], num_classes=10, final_macs=1_000_000, budget=0.02)
    assert d.heads[0].exit_macs <= 1_000_000 and d.heads[0].width is None


def test_monotonicity_rejects_candidate_that_cannot_be_cheap_enough():
    cands = [("a", (64, 4, 4), 5000), ("b", (4, 2, 2), 5100)]
    d = design_heads(cands, num_classes=10, final_macs=1_000_000, budget=0.02)
    assert [h.tensor for h in d.heads] == ["b"] and "more than exiting later" in d.rejected["a"]


def test_plan_exits_gives_candidate_costs_from_the_block_graph():
    plan = plan_exits(parse(SMALL))
    assert [h.tensor for h in plan.design.heads] == [c.tensor for c in plan.costs]
    by_tensor = {b.output: b for b in plan.blocks.blocks}
    for spec, cost in zip(plan.design.heads, plan.costs):
        block = by_tensor[spec.tensor]
        assert cost.backbone_macs == block.cumulative_macs == spec.backbone_macs
        assert cost.head_macs == spec.head_macs
        assert cost.handoff_bytes == 4 * int(np.prod(block.shape))
        assert cost.weight_bytes_before > 0 and cost.peak_activation_bytes_before >= block.activation_bytes
    assert plan.costs[0].tensor == "r1" and plan.costs[0].backbone_macs == 8 * 16 * 16 * 9
    assert plan.costs[0].weight_bytes_before == 4 * 8 * 9


def test_spec_params_and_feature_key():
    s = HeadSpec("t", (8, 4, 4), (2, 2), 4, 3, 0)
    assert s.params == 4 * 9 + 3 * 5
    assert s.feature_key != HeadSpec("t", (8, 4, 4), (1, 1), 4, 3, 0).feature_key
