"""Placements of exits on a platform's processors, pruned by latency and memory before training.

A placement with E exits cuts the backbone at E candidate tensors k1 < ... < kE; stage 0 (input to
k1, plus head 1) runs on the first processor, where the data arrives, and stage i on a later
processor, in platform order; the last stage (rest of the backbone and the original classifier)
runs on the last processor chosen. At most one exit per processor, so E <= P - 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from eecc.search.types import CandidateCost


@dataclass(frozen=True)
class ModelCost:
    """Whole-model figures the last stage needs (the candidates only describe prefixes)."""

    total_macs: int
    weight_bytes: int
    peak_activation_bytes: int

    @classmethod
    def from_blocks(cls, blocks) -> "ModelCost":
        return cls(int(blocks.total_macs), 4 * int(blocks.total_params),
                   int(max(b.activation_bytes for b in blocks.blocks)))


@dataclass(frozen=True)
class Placement:
    exits: tuple[str, ...]            # candidate tensors, network order
    processors: tuple[str, ...]       # one per stage: len(exits) + 1
    stage_macs: tuple[int, ...]
    exit_latency_s: tuple[float, ...]  # latency of a sample that leaves at each position
    exit_energy_j: tuple[float, ...]
    reasons: tuple[str, ...]          # why it cannot run; empty = fits

    @property
    def fits(self) -> bool:
        return not self.reasons

    @property
    def latency_s(self) -> float:
        """Worst case: the sample that runs every stage."""
        return self.exit_latency_s[-1]


def _head_weight_bytes(c: CandidateCost) -> int:
    return c.head_weight_bytes if c.head_weight_bytes is not None else 4 * c.head_macs


def stage_figures(cands: list[CandidateCost], model: ModelCost):
    """Per stage: (MACs, weight bytes, peak activation bytes) and the hand-off bytes between them.

    Activation peaks are those of the whole prefix up to the cut (an upper bound for later stages:
    the candidates only record cumulative peaks).
    """
    macs, weights, peaks, prev_b, prev_w = [], [], [], 0, 0
    for c in cands:
        macs.append(c.backbone_macs - prev_b + c.head_macs)
        weights.append(c.weight_bytes_before - prev_w + _head_weight_bytes(c))
        peaks.append(c.peak_activation_bytes_before)
        prev_b, prev_w = c.backbone_macs, c.weight_bytes_before
    macs.append(model.total_macs - prev_b)
    weights.append(model.weight_bytes - prev_w)
    peaks.append(model.peak_activation_bytes)
    return macs, weights, peaks, [c.handoff_bytes for c in cands]


def place(platform, cands: list[CandidateCost], procs: tuple[str, ...], model: ModelCost,
          max_latency_s: float | None = None) -> Placement:
    from eecc.targets.platform import estimate_exits

    macs, weights, peaks, handoff = stage_figures(cands, model)
    reasons = []
    links_ok = all(platform.link(a, b) is not None for a, b in zip(procs, procs[1:]))
    if links_ok:
        est = estimate_exits(platform, procs, macs, handoff)
        lat = tuple(e["latency_s"] for e in est)
        energy = tuple(e["energy_j"] for e in est)
    else:
        lat = energy = tuple(float("inf") for _ in procs)
        reasons.append("no link between " + " -> ".join(procs))
    limit = platform.max_latency_s if max_latency_s is None else max_latency_s
    if limit is not None and lat[-1] > limit:
        reasons.append(f"worst-case latency {lat[-1] * 1e3:.3g} ms > max {limit * 1e3:.3g} ms")
    by_name = {p.name: p for p in platform.processors}
    if platform.shared_memory:
        used = [by_name[p] for p in procs]
        storage, ram = min(p.storage_bytes for p in used), min(p.ram_bytes for p in used)
        if sum(weights) > storage:
            reasons.append(f"weights {sum(weights)} B > shared storage {storage} B")
        if max(peaks) > ram:
            reasons.append(f"activations {max(peaks)} B > shared RAM {ram} B")
    else:
        for p, w, a in zip(procs, weights, peaks):
            if w > by_name[p].storage_bytes:
                reasons.append(f"stage on '{p}': weights {w} B > storage {by_name[p].storage_bytes} B")
            if a > by_name[p].ram_bytes:
                reasons.append(f"stage on '{p}': activations {a} B > RAM {by_name[p].ram_bytes} B")
    return Placement(tuple(c.tensor for c in cands), procs, tuple(int(m) for m in macs), lat, energy,
                     tuple(reasons))


def enumerate_placements(platform, costs: list[CandidateCost], model: ModelCost, *,
                         max_exits: int | None = None,
                         max_latency_s: float | None = None) -> list[Placement]:
    """Every placement of 1..P-1 exits (or fewer with max_exits), each with its feasibility."""
    names = [p.name for p in platform.processors]
    most = len(names) - 1 if max_exits is None else min(max_exits, len(names) - 1)
    out = []
    for e in range(1, most + 1):
        for later in combinations(names[1:], e):
            for cands in combinations(costs, e):
                out.append(place(platform, list(cands), (names[0], *later), model, max_latency_s))
    return out


def surviving_candidates(placements: list[Placement], costs: list[CandidateCost]) -> list[str]:
    """The union of candidates of placements that fit, in network order: the heads to train."""
    keep = {t for p in placements if p.fits for t in p.exits}
    return [c.tensor for c in costs if c.tensor in keep]
