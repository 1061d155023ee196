"""Placements aligned with processor boundaries, pruned by latency and memory before training."""

import pytest

from eecc.search.placement import ModelCost, enumerate_placements, stage_figures, surviving_candidates
from eecc.search.types import CandidateCost
from eecc.targets.platform import Link, Platform, Processor, load_platform

MODEL = ModelCost(total_macs=10_000_000, weight_bytes=400_000, peak_activation_bytes=50_000)


def _cands():
    # backbone MACs 2 M / 5 M / 8 M; hand-off shrinks with depth
    return [CandidateCost(f"t{i}", b, 10_000, h, w, 40_000, head_weight_bytes=4_000)
            for i, (b, h, w) in enumerate([(2_000_000, 32_000, 50_000), (5_000_000, 16_000, 150_000),
                                           (8_000_000, 8_000, 300_000)])]


def _platform(max_latency_s=None, storage=10**9, ram=10**9, shared=False, n=3):
    procs = tuple(Processor(f"p{i}", "cortex-a", 1e9 * 10 ** i, ram, storage, 1.0, 0.1)
                  for i in range(n))
    links = tuple(Link(f"p{i}", f"p{j}", 8e6, 0.001) for i in range(n) for j in range(i + 1, n))
    return Platform("test", procs, links, max_latency_s, shared)


def _eenn(placements):
    return [p for p in placements if p.exits]


def test_enumerates_one_exit_per_processor_on_every_subset_of_the_processors():
    everything = enumerate_placements(_platform(), _cands(), MODEL)
    # first the original model alone on each processor, then the early-exit placements
    assert [(p.exits, p.processors) for p in everything[:3]] == [((), ("p0",)), ((), ("p1",)), ((), ("p2",))]
    # the input arrives on p0: p2 alone first waits for it over the p0 -> p2 link (1 ms; MODEL's input_bytes: 0),
    # and its result goes back over it (1 ms; result_bytes: 0)
    assert everything[2].latency_s == pytest.approx(0.001 + MODEL.total_macs / 1e11 + 0.001)
    assert everything[0].latency_s == pytest.approx(MODEL.total_macs / 1e9)
    pl = _eenn(everything)
    assert all(p.fits and len(p.processors) == len(p.exits) + 1 for p in pl)
    # at most one exit per processor, in platform order, at most P - 1 exits as in NA; the final stage may
    # share the last exit's core
    assert all(len(set(p.processors[:-1])) == len(p.exits) and list(p.processors) == sorted(p.processors)
               for p in pl)
    assert max(len(p.exits) for p in pl) == 2
    shapes = {p.processors for p in pl}
    # NA's placements (stage 0 on the first processor, one stage per processor) are all there ...
    assert {("p0", "p1"), ("p0", "p2"), ("p0", "p1", "p2")} <= shapes
    # ... and so are those on a subset: one exit on the fastest core, the rest of the network after it there
    assert {("p2", "p2"), ("p1", "p2"), ("p1", "p2", "p2"), ("p0", "p0")} <= shapes
    one = _eenn(enumerate_placements(_platform(), _cands(), MODEL, max_exits=1))
    assert {p.processors for p in one} == {(a, b) for a in ("p0", "p1", "p2") for b in ("p0", "p1", "p2") if a <= b}
    assert len(one) == 6 * 3  # 6 processor pairs x 3 candidates
    # NA's shape first: where placements cost the same (objective MACs), the search keeps NA's placement
    assert [p.processors for p in one[:6]] == [("p0", "p1")] * 3 + [("p0", "p2")] * 3
    # an explicit K = 1 also lets the final stage share a core when every processor has its exit
    k1 = _eenn(enumerate_placements(_platform(), _cands(), MODEL, exits_per_processor=1))
    assert ("p0", "p1", "p2", "p2") in {p.processors for p in k1}


def test_stage_figures_split_the_model_and_charge_heads_on_their_stage():
    macs, weights, peaks, handoff = stage_figures(_cands()[:2], MODEL)
    assert macs == [2_010_000, 3_010_000, 5_000_000] and sum(macs) == MODEL.total_macs + 20_000
    assert weights == [54_000, 104_000, 250_000] and handoff == [32_000, 16_000]


def test_worst_case_latency_counts_compute_and_transfers_and_prunes():
    p = [p for p in enumerate_placements(_platform(), _cands()[:1], MODEL, max_exits=1)
         if p.processors == ("p0", "p1")][0]
    # 2.01 M MAC at 1 G MAC/s, then 32 kB over 8 Mbit/s + 1 ms, then 8 M MAC at 10 G MAC/s, then the result back
    # over the link (1 ms: MODEL's result_bytes 0)
    assert p.latency_s == pytest.approx(2.01e-3 + 0.001 + 32_000 * 8 / 8e6 + 8e-4 + 0.001)
    assert p.exit_latency_s[0] == pytest.approx(2.01e-3)
    limit = 0.03
    pl = _eenn(enumerate_placements(_platform(max_latency_s=limit), _cands(), MODEL))
    assert any(p.fits for p in pl) and any(not p.fits for p in pl)
    for p in pl:
        assert p.fits == (p.latency_s <= limit)
        if not p.fits:
            assert "latency" in p.reasons[0]
    # across processors the deepest cut hands off the smallest tensor: it survives; the earliest does not ...
    across = [p for p in pl if len(set(p.processors)) == len(p.processors)]
    assert surviving_candidates(across, _cands()) == ["t1", "t2"]
    # ... but on one core there is no hand-off, and the earliest cut fits there
    assert any(p.fits and p.exits == ("t0",) and p.processors == ("p2", "p2") for p in pl)
    assert surviving_candidates(pl, _cands()) == ["t0", "t1", "t2"]


def test_memory_limits_prune_per_processor_or_shared():
    small = _platform(storage=260_000)
    pl = _eenn(enumerate_placements(small, _cands(), MODEL, max_exits=1))
    assert {p.exits[0] for p in pl if p.fits} == {"t1"}  # only the middle cut fits both stages
    assert all("storage" in " ".join(p.reasons) for p in pl if not p.fits)
    shared = _platform(storage=400_000, shared=True)
    shared_pl = enumerate_placements(shared, _cands(), MODEL)
    # the original model alone (400 kB) fits; every exit head on top of it does not
    assert [p.exits for p in shared_pl if p.fits] == [(), (), ()] and not any(p.fits for p in _eenn(shared_pl))
    tight_ram = _platform(ram=45_000, shared=True)
    assert all("RAM" in " ".join(p.reasons) for p in enumerate_placements(tight_ram, _cands(), MODEL))


def test_builtin_psoc6_offers_one_exit_per_processor_on_either_core_or_both():
    psoc6 = load_platform("psoc6")
    pl = _eenn(enumerate_placements(psoc6, _cands(), MODEL))
    by_cores = {}
    for p in pl:
        by_cores[p.processors] = by_cores.get(p.processors, 0) + 1
    # NA's m0plus -> m4 for each candidate (first), and one exit on either core alone
    assert by_cores == {("m0plus", "m0plus"): 3, ("m0plus", "m4"): 3, ("m4", "m4"): 3}
    assert [p.processors for p in pl[:3]] == [("m0plus", "m4")] * 3


def test_several_exits_per_processor_run_back_to_back_on_one_core():
    one = Platform("mcu", (Processor("cpu", "cortex-m4", 1e7, 10**9, 10**9, 0.03, 0.001),), (), None, False)
    pl = enumerate_placements(one, _cands(), MODEL)
    # a one-processor platform: the original model, then up to two exits on the same core (K = 2)
    assert pl[0].exits == () and max(len(p.exits) for p in pl) == 2
    assert all(set(p.processors) == {"cpu"} for p in pl)
    two = [p for p in pl if len(p.exits) == 2][0]
    # back to back: no hand-off transfer, so the worst case is the MACs of every stage at 10 M MAC/s
    assert two.latency_s == pytest.approx(sum(two.stage_macs) / 1e7)
    k1 = _eenn(enumerate_placements(_platform(n=2), _cands(), MODEL, exits_per_processor=1))
    # K = 1: at most one exit per processor, the final stage may share the last exit's core, and the
    # cascade may start on the second processor as the single-processor baseline there does
    assert {p.processors for p in k1} == {("p0", "p0"), ("p0", "p1"), ("p1", "p1"), ("p0", "p1", "p1")}


def test_an_explicit_placement_is_the_only_sequence_enumerated_beside_the_baselines():
    """--placement P0,...,PE: every choice of E candidates on exactly those processors, after the baselines."""
    from eecc.search.placement import count_placements

    psoc6 = load_platform("psoc6")
    pl = enumerate_placements(psoc6, _cands(), MODEL, processors=("m0plus", "m4"))
    assert [(p.exits, p.processors) for p in pl[:2]] == [((), ("m0plus",)), ((), ("m4",))]
    assert [(p.exits, p.processors) for p in pl[2:]] == [((c,), ("m0plus", "m4")) for c in ("t0", "t1", "t2")]
    # the same placements as the enumeration's own m0plus -> m4 ones, priced alike
    every = {(p.exits, p.processors): p for p in enumerate_placements(psoc6, _cands(), MODEL)}
    assert all(p == every[(p.exits, p.processors)] for p in pl)
    two = _eenn(enumerate_placements(_platform(), _cands(), MODEL, processors=("p1", "p1", "p2")))
    assert [p.exits for p in two] == [("t0", "t1"), ("t0", "t2"), ("t1", "t2")]
    assert {p.processors for p in two} == {("p1", "p1", "p2")}
    assert count_placements(psoc6, 3, processors=("m0plus", "m4")) == len(pl)
    assert count_placements(_platform(), 3, processors=("p1", "p1", "p2")) == 3 + 3
