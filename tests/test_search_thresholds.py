"""Threshold search: exact = brute force, the graph method's measured gap, the finer pass."""

import itertools

import numpy as np
import pytest

from eecc.search.policy import Objective, evaluate_policy, make_split, position_costs
from eecc.search.synthetic import synthetic_logits
from eecc.search.thresholds import (NEVER, exact_search, graph_search, grid_tables, refine,
                                    search_thresholds, threshold_grid)


@pytest.fixture(scope="module")
def data():
    lg = synthetic_logits(k=6, n_val=1500, n_test=1500, seed=4)
    return lg, make_split(lg, "val")


def _brute(split, exits, grids, costs, obj):
    best = None
    for th in itertools.product(*grids):
        r = evaluate_policy(split, exits, th, costs)
        key = (not obj.feasible(r.accuracy, r.mean_macs), float(obj.cost(r.accuracy, r.mean_macs)))
        best = min(best, (key, th)) if best else (key, th)
    return best


def _cost(split, exits, th, costs, obj):
    r = evaluate_policy(split, exits, th, costs)
    return float(obj.cost(r.accuracy, r.mean_macs))


def test_grid_is_sorted_spans_all_exit_rates_and_ends_with_never(data):
    _, split = data
    g = threshold_grid(split.conf[2])
    assert np.all(np.diff(g) > 0) and len(g) <= 13 and g[-1] == NEVER
    assert (split.conf[2] >= g[0]).all()  # the lowest threshold lets every sample out


@pytest.mark.parametrize("exits", [[1], [0, 3], [1, 2, 4]])
def test_grid_tables_equal_the_policy_evaluation_for_every_combination(data, exits):
    lg, split = data
    costs = position_costs(lg, exits)
    grids = [threshold_grid(split.conf[k], 6) for k in exits]
    acc, macs = grid_tables(split, exits, grids, costs)
    for idx in itertools.product(*[range(len(g)) for g in grids]):
        r = evaluate_policy(split, exits, [g[i] for g, i in zip(grids, idx)], costs)
        assert acc[idx] == pytest.approx(r.accuracy, abs=1e-12)
        assert macs[idx] == pytest.approx(r.mean_macs, rel=1e-12)


@pytest.mark.parametrize("limits", [(None, None), (0.005, None), (None, 0.75), (0.01, 0.8)])
def test_exact_search_finds_the_brute_force_optimum(data, limits):
    lg, split = data
    exits = [0, 2, 4]
    obj = Objective(lg.final_macs, split.final_accuracy, 0.7, 0.3, limits[0],
                    None if limits[1] is None else limits[1] * lg.final_macs)
    costs = position_costs(lg, exits)
    grids = [threshold_grid(split.conf[k], 7) for k in exits]
    th, n = exact_search(split, exits, grids, costs, obj)
    (infeasible, best_cost), _ = _brute(split, exits, grids, costs, obj)
    assert n == np.prod([len(g) for g in grids])
    r = evaluate_policy(split, exits, th, costs)
    assert bool(obj.feasible(r.accuracy, r.mean_macs)) != infeasible
    assert _cost(split, exits, th, costs, obj) == pytest.approx(best_cost, abs=1e-12)


def _gaps(lg, split, order, rounds):
    gaps = []
    for exits in ([0, 2], [1, 3], [0, 2, 4], [1, 2, 3], [0, 1, 3, 5], [0, 1, 2, 3, 4]):
        costs = position_costs(lg, exits)
        grids = [threshold_grid(split.conf[k]) for k in exits]
        for w_acc in (0.05, 0.1, 0.3):
            obj = Objective(lg.final_macs, split.final_accuracy, 1 - w_acc, w_acc)
            best = _cost(split, exits, exact_search(split, exits, grids, costs, obj)[0], costs, obj)
            got = _cost(split, exits, graph_search(split, exits, grids, costs, obj,
                                                   order=order, rounds=rounds)[0], costs, obj)
            assert got >= best - 1e-12  # exact is the optimum of the same grid
            gaps.append((len(exits), (got - best) / abs(best)))
    return gaps


def test_graph_method_gap_is_measured_against_exact(data):
    lg, split = data
    plain = _gaps(lg, split, order=1, rounds=1)   # the NA paper's (exit, threshold) graph
    ours = _gaps(lg, split, order=2, rounds=2)
    # first-order edges are exact for two exits, second-order ones for three
    assert all(g == pytest.approx(0, abs=1e-12) for e, g in plain if e <= 2)
    assert all(g == pytest.approx(0, abs=1e-12) for e, g in ours if e <= 3)
    mean_plain = np.mean([g for _, g in plain])
    mean_ours = np.mean([g for _, g in ours])
    print(f"graph gap vs exact: plain mean {100 * mean_plain:.3f} % max "
          f"{100 * max(g for _, g in plain):.3f} %; order-2 mean {100 * mean_ours:.3f} % max "
          f"{100 * max(g for _, g in ours):.3f} %")
    assert mean_ours <= mean_plain and mean_ours < 0.002


def test_finer_pass_never_worsens_and_stays_on_the_split(data):
    lg, split = data
    exits = [1, 3]
    obj = Objective(lg.final_macs, split.final_accuracy, 0.9, 0.1)
    costs = position_costs(lg, exits)
    grids = [threshold_grid(split.conf[k]) for k in exits]
    coarse, _ = exact_search(split, exits, grids, costs, obj)
    fine, n = refine(split, exits, grids, coarse, costs, obj)
    assert n > 0 and _cost(split, exits, fine, costs, obj) <= _cost(split, exits, coarse, costs, obj)


@pytest.mark.parametrize("method", ["exact", "graph"])
def test_search_thresholds_honours_constraints(data, method):
    lg, split = data
    exits = [1, 3, 5]
    obj = Objective(lg.final_macs, split.final_accuracy, 0.9, 0.1, max_accuracy_drop=0.003,
                    max_mean_macs=0.9 * lg.final_macs)
    c = search_thresholds(split, exits, position_costs(lg, exits), obj, method=method)
    assert c.feasible and not c.violations
    assert split.final_accuracy - c.val.accuracy <= 0.003 + 1e-12
    assert c.val.mean_macs <= 0.9 * lg.final_macs
    assert c.method.startswith(method)


def test_auto_switches_to_the_graph_above_the_exact_limit(data):
    lg, split = data
    exits = [0, 1, 2]
    obj = Objective(lg.final_macs, split.final_accuracy)
    costs = position_costs(lg, exits)
    assert search_thresholds(split, exits, costs, obj, fine=False).method == "exact"
    assert search_thresholds(split, exits, costs, obj, fine=False, exact_limit=100).method == "graph"


def _transform_by_copies(a, j, sizes):
    """The tables as first written (suffix sums by flipping, prefixes copied with take): the reference that the
    faster views and total - prefix must equal bit for bit, so no search result moves."""
    for i in range(j + 1, len(sizes)):
        a = a.sum(axis=i, keepdims=True)
    for i in range(min(j, len(sizes))):
        a = np.cumsum(a, axis=i).take(np.arange(sizes[i]), axis=i)
    if j < len(sizes):
        a = np.flip(np.cumsum(np.flip(a, axis=j), axis=j), axis=j).take(np.arange(1, sizes[j] + 1), axis=j)
    return a


@pytest.mark.parametrize("sizes", [[40], [13, 13], [9, 5, 7], [4, 6, 3, 5]])
def test_tables_are_bit_identical_to_the_copying_formulation(sizes):
    from eecc.search.thresholds import _transform

    rng = np.random.default_rng(len(sizes))
    dims = [t + 1 for t in sizes]
    cells = rng.integers(0, int(np.prod(dims)), 3000)
    for weights in (None, rng.random(3000) < 0.7):  # sample counts, and counts of right predictions
        hist = np.bincount(cells, weights=weights, minlength=int(np.prod(dims))).astype(np.float64).reshape(dims)
        for j in range(len(sizes) + 1):
            assert np.array_equal(_transform(hist, j, sizes), _transform_by_copies(hist, j, sizes))
