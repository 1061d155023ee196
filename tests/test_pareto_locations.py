"""nu14 F13: --pareto's NSGA-II had one gene per candidate row, so with several head designs per tensor every
solution (30/30 on res.onnx) stacked two or more designs on one tensor, which compile cannot build, and some
solutions differed only in a threshold no sample reaches. Genes are now per location (which design, and its
threshold) and such duplicates are one point."""

from __future__ import annotations

from dataclasses import replace

from eecc.search.moo import pareto_search
from eecc.search.points import locations
from eecc.search.policy import Objective, make_split, position_costs
from eecc.search.synthetic import synthetic_logits
from eecc.search.types import PAIR


def _two_designs_per_tensor():
    """Six rows, two head designs ("a", "b") on each of three tensors, in depth order."""
    lg = synthetic_logits(k=6, n_val=800, n_test=800, seed=3)
    return replace(lg, tensors=[f"block{i // 2}.out{PAIR}{'ab'[i % 2]}" for i in range(6)])


def test_locations_group_the_designs_of_a_tensor():
    tensors = ["t0|a", "t0|b", "t1|a", "t2", "t3|x", "t3|y"]
    assert locations(tensors, [0, 1, 2, 3, 4, 5]) == [[0, 1], [2], [3], [4, 5]]
    assert locations(tensors, [1, 4, 5]) == [[0], [1, 2]]  # positions in the candidate list


def _front(lg, groups):
    val = make_split(lg, "val")
    objective = Objective(float(lg.final_macs), val.final_accuracy, 0.9, 0.1, 0.05, None)
    return pareto_search(val, list(range(6)), lambda e: position_costs(lg, e), objective, max_exits=3,
                         pop_size=40, generations=15, seed=0, groups=groups)


def test_every_solution_holds_one_design_per_tensor_and_none_repeats():
    lg = _two_designs_per_tensor()
    stacked = _front(lg, None)  # the old genome: one gene per row
    assert any(len({lg.tensors[i].split(PAIR)[0] for i in p.exits}) < len(p.exits) for p in stacked)
    front = _front(lg, locations(lg.tensors, list(range(6))))
    assert front
    for p in front:
        names = [lg.tensors[i].split(PAIR)[0] for i in p.exits]
        assert len(set(names)) == len(names) and list(p.exits) == sorted(p.exits), p.exits
    keys = [(p.exits, p.val.accuracy, p.val.mean_macs) for p in front]
    assert len(set(keys)) == len(keys)
