"""nu14 F13: --pareto's NSGA-II had one gene per candidate row, so with several head designs per tensor every
solution (30/30 on res.onnx) stacked two or more designs on one tensor, which compile cannot build, and some
solutions differed only in a threshold no sample reaches. Genes are now per location (which design, and its
threshold) and such duplicates are one point; so are solutions that send each validation sample out at the same
exit (later exits never reached)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from eecc.search.moo import ParetoPoint, merge_same_policies, pareto_search
from eecc.search.points import locations
from eecc.search.policy import Objective, PolicyResult, SplitScores, make_split, position_costs
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


def _one_exit_takes_all():
    """Validation split of 400 samples, 4 candidates (one location each): candidate 1 is always right, and at its
    lowest grid threshold every sample leaves there, so exits after it are never reached; candidate 0 is 60 % right.
    Position costs: 100 MACs per candidate depth + 10 per head evaluated; the final classifier 1000."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    pred = np.where(rng.random((4, 400)) < [[0.6], [1.0], [0.9], [0.95]], y, (y + 1) % 5)
    split = SplitScores(conf=rng.uniform(0.2, 1.0, (4, 400)), pred=pred, final_pred=y.copy(), y=y)

    def costs(exits):
        return np.array([100.0 * (i + 1) + 10 * (j + 1) for j, i in enumerate(exits)] + [1000.0 + 10 * len(exits)])
    return split, costs


def test_solutions_with_the_same_exit_per_sample_are_one_policy():
    """nu14 F13's remainder: 9 of 15 digits solutions sent every sample out at exits 1-2 and differed only in exits
    never reached. Here the old front listed several of (1,), (1, 2), (1, 3), (1, 2, 3) at 100 % and 210 MACs; now
    one, the others counted in its `merged`."""
    split, costs = _one_exit_takes_all()
    objective = Objective(1000.0, 1.0, 0.9, 0.1, 0.05, None)
    front = pareto_search(split, range(4), costs, objective, max_exits=4, pop_size=40, generations=20, seed=0)
    decisions = [tuple(np.append(p.exits, -1)[p.val.exit_index]) for p in front]
    assert len(set(decisions)) == len(decisions)
    best = front[0]
    assert (best.exits[0], best.val.accuracy, best.val.mean_macs) == (1, 1.0, 210.0)
    assert best.merged >= 1  # the same policy with unreached exits after 1, listed before


def test_the_cheapest_then_the_shortest_of_a_policy_stays():
    """Hand-made points: A and B send every sample out at candidate 3 (B also evaluates candidate 1's head, which no
    sample leaves at: dearer, so dominated); C = A plus candidate 5 never reached (equal figures, one exit more); D a
    different policy. Left: A (merged 1: C, which the front listed beside it; B it did not list) and D."""
    n = 10
    y = np.zeros(n, np.int64)

    def point(exits, where, macs, accuracy):
        r = PolicyResult(exits=exits, thresholds=(0.5,) * len(exits), exit_index=np.asarray(where), prediction=y,
                         macs=np.full(n, macs), accuracy=accuracy, mean_macs=macs, exit_rates=np.zeros(len(exits) + 1))
        return ParetoPoint(exits, r.thresholds, r)

    a = point((3,), [0] * n, 50.0, 0.9)
    b = point((1, 3), [1] * n, 60.0, 0.9)
    c = point((3, 5), [0] * n, 50.0, 0.9)
    d = point((3,), [0] * 5 + [1] * 5, 300.0, 1.0)
    front = merge_same_policies([c, b, d, a])
    assert [(p.exits, p.merged) for p in front] == [((3,), 1), ((3,), 0)] and front[0] is a and front[1] is d
