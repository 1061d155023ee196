"""The search chooses among (location, head design) pairs: every Pareto head of a location enters, each
placement is re-placed with its head's costs, and the choice names the design."""

from __future__ import annotations

import numpy as np
import pytest

from eecc.exits.family import mark, searched_heads
from eecc.exits.heads import HeadSpec
from eecc.exits.store import CandidateResult
from eecc.search.placement import MAX_HEAD_COMBOS, ModelCost, enumerate_placements, with_heads
from eecc.search.search import SearchOptions, search
from eecc.search.types import CandidateCost, ExitLogits, pair_name
from eecc.targets.platform import Link, Platform, Processor

C, N = 10, 4000
MODEL = ModelCost(total_macs=1_000_000, weight_bytes=400_000, peak_activation_bytes=50_000)
BACKBONE = {"a": 200_000, "b": 500_000}


def _spec(tensor: str, kind: str, size: int, width: int | None = None) -> HeadSpec:
    """A real family member on a 16x8x8 map pooled to size x size (head MACs from HeadSpec)."""
    return HeadSpec(tensor, (16, 8, 8), (8 // size, 8 // size), width, C, BACKBONE[tensor], kind=kind, pool_op="avg")


def _platform(n: int = 2) -> Platform:
    procs = tuple(Processor(f"p{i}", "cortex-a", 1e8 * 10 ** i, 10**9, 10**9, 1.0, 0.1) for i in range(n))
    links = tuple(Link(f"p{i}", f"p{j}", 8e8, 1e-4) for i in range(n) for j in range(i + 1, n))
    return Platform("two", procs, links, None, False)


def _head_logits(rng, y, sure, right):
    """[N, C] logits: confident and right on `sure`, unsure elsewhere, right on `right` of those."""
    z = rng.normal(0, 0.1, (len(y), C)).astype(np.float32)
    wrong = (y + 1 + rng.integers(0, C - 1, len(y))) % C
    pred = np.where(sure | right, y, wrong)
    z[np.arange(len(y)), pred] += np.where(sure, 8.0, 0.5)
    return z


def _pairs(seed: int = 0):
    """Location a: a big head (most accurate on validation) and a small one (second best, 8x cheaper) that
    are equally sure of the same samples; location b: one head. Rows named "<tensor>|<design>"."""
    rng = np.random.default_rng(seed)
    big, small, late = _spec("a", "flat", 4, 16), _spec("a", "flat", 2), _spec("b", "flat", 2)
    assert small.head_macs * 8 <= big.head_macs
    logits = {}
    for split in ("val", "test"):
        y = rng.integers(0, C, N)
        sure = rng.random(N) < 0.6
        luck = rng.random(N)
        final = np.eye(C, dtype=np.float32)[np.where(rng.random(N) < 0.97, y, (y + 1) % C)] * 5
        rows = [_head_logits(rng, y, sure, luck < 0.5), _head_logits(rng, y, sure, luck < 0.4),
                _head_logits(rng, y, sure | (rng.random(N) < 0.3), luck < 0.6)]
        logits[split] = (y, final, np.stack(rows))
    specs = [big, small, late]
    lg = ExitLogits(tensors=[pair_name(s.tensor, s.design) for s in specs],
                    exit_macs=[s.exit_macs for s in specs], head_macs=[s.head_macs for s in specs],
                    final_macs=MODEL.total_macs, val_logits=logits["val"][2], test_logits=logits["test"][2],
                    final_val_logits=logits["val"][1], final_test_logits=logits["test"][1],
                    y_val=logits["val"][0], y_test=logits["test"][0])
    results = [CandidateResult(s, None, float((lg.val_logits[k].argmax(1) == lg.y_val).mean()), None, 0.5, 1, False)
               for k, s in enumerate(specs)]
    return specs, lg, results


def _costs(specs):
    return [CandidateCost(t, BACKBONE[t], s.head_macs, 1000, 100_000 * (k + 1), 40_000, 4 * s.params)
            for k, (t, s) in enumerate((t, next(s for s in specs if s.tensor == t)) for t in BACKBONE)]


def test_the_cheaper_second_best_head_is_chosen_and_named():
    specs, lg, results = _pairs()
    big, small, _ = results
    assert big.val_accuracy > small.val_accuracy  # "best head per location" would offer the big one
    chosen = mark(results)
    assert results[chosen[0]] is big and big.pareto and small.pareto
    heads = searched_heads(results)
    assert [d for d, _, _ in heads["a"]] == [big.spec.design, small.spec.design]  # most accurate first
    platform = _platform()
    placements = enumerate_placements(platform, _costs(specs), MODEL)
    paired = with_heads(platform, placements, _costs(specs), heads, MODEL)
    at_a = [p for p in paired if p.exits == ("a",) and p.processors == ("p0", "p1")]  # NA's placement at a
    assert sorted(p.heads for p in at_a) == sorted([(big.spec.design,), (small.spec.design,)])
    # each pair is placed with its own head: the stage that carries the exit pays that head's MACs
    by_head = {p.heads[0]: p for p in at_a}
    assert (by_head[big.spec.design].stage_macs[0] - by_head[small.spec.design].stage_macs[0]
            == big.spec.head_macs - small.spec.head_macs)
    res = search(lg, placements=paired, options=SearchOptions(objective="macs", max_accuracy_drop=0.02))
    best = res.best
    assert best.exits == ("a",) and best.heads == (small.spec.design,)
    assert lg.tensors[best.indices[0]] == pair_name("a", small.spec.design)
    assert res.to_json()["chosen"]["heads"] == [small.spec.design]
    # the same thresholds on the big head would cost more at the same accuracy
    twin = next(p for p in res.placements if p.heads == (big.spec.design,))
    assert twin.test.mean_macs > best.test.mean_macs


def test_combinations_per_placement_are_bounded():
    specs, _, _ = _pairs()
    platform = _platform(3)
    costs = _costs(specs)
    many = {t: [(f"d{k}", 100 + k, 400) for k in range(6)] for t in BACKBONE}
    placements = enumerate_placements(platform, costs, MODEL)
    paired = with_heads(platform, placements, costs, many, MODEL)
    for p in placements:
        copies = [q for q in paired if q.exits == p.exits and q.processors == p.processors]
        if not p.exits:
            assert copies == [p]
        else:
            assert 1 < len(copies) <= MAX_HEAD_COMBOS
            # the first designs of each exit (most accurate first) are the ones kept
            assert all(set(q.heads) <= {f"d{k}" for k in range(len(copies))} for q in copies)
    assert with_heads(platform, placements, costs, {}, MODEL) == placements  # no heads: passed on as is


@pytest.mark.parametrize("pareto_only", [True, False])
def test_searched_heads_skip_dropped_and_off_front_heads(pareto_only):
    specs, _, results = _pairs()
    extra = CandidateResult(_spec("a", "gap", 1), None, 0.1, None, 0.1, 1, False)  # the cheapest: on the front
    worse = CandidateResult(_spec("a", "flat", 4), None, 0.05, None, 0.1, 1, False)  # dearer and worse: off front
    gone = CandidateResult(_spec("b", "flat", 4), None, 0.0, None, 0.1, 1, True)
    rows = results + [extra, worse, gone]
    mark(rows)
    got = searched_heads(rows, pareto_only)
    names = {d for d, _, _ in got["a"]}
    assert (worse.spec.design in names) == (not pareto_only)
    assert gone.spec.design not in {d for d, _, _ in got["b"]}
