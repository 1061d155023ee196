"""The family of heads tried per candidate exit, the rules that admit them, and the choice among the trained ones.

Per candidate (beside the blueprint that `heads.design_heads` shapes), on maps pooled to S×S (S per
spatial dim for 1D; S ∈ FLAT_SIZES) by average or max pooling:
  flat linear heads (every pool op and size), flat heads with a 1×1 conv first (average pooling,
  width ≤ CONV_WIDTH), and a two-layer MLP (average pooling to 2, hidden width MLP_HIDDEN). On an MLP's
  hidden vector nothing pools: the linear head and the two-layer MLP.
Admission: head MACs ≤ the budget, and the NACHOS monotonic exit-cost rule for any choice of heads:
every head at candidate i costs no more to exit with than the cheapest admitted head at i+1 (the
last candidate: than the full model). The blueprint is always kept: `design_heads` already shaped
it by those rules against the next blueprint. After training, each candidate keeps its heads that are
Pareto-optimal in (validation accuracy, head MACs); the search gets one per location, the most
accurate of them (ties: the cheapest) is the one `eecc exits` marks; the search (eecc/search/run.py)
chooses among all of a location's Pareto heads (`searched_heads`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

from eecc.exits.heads import Design, HeadSpec

FLAT_SIZES = (2, 4)
HALVING_RULE = "front, twins within one standard error; rungs at TrainConfig.rung and one epoch"  # in cache keys
CONV_WIDTH = 32
MLP_HIDDEN = 32
KINDS = ("gap", "flat", "mlp")


def _pooled_to(spec: HeadSpec, size: int, op: str) -> HeadSpec:
    pool = tuple(max(1, math.ceil(d / size)) for d in spec.in_shape[1:])
    return replace(spec, pool=pool, pool_op=op, width=None, kind="flat", hidden=None)


def family(blueprint: HeadSpec) -> list[HeadSpec]:
    """Every head design tried at the blueprint's tensor (blueprint first), duplicates removed."""
    out = [blueprint]
    for size in FLAT_SIZES:
        for op in ("avg", "max"):
            out.append(_pooled_to(blueprint, size, op))
        if len(blueprint.in_shape) > 1:  # a 1×1 conv needs a map; on an MLP's vector it is just another Gemm
            out.append(replace(_pooled_to(blueprint, size, "avg"), width=min(blueprint.channels, CONV_WIDTH)))
    out.append(replace(_pooled_to(blueprint, FLAT_SIZES[0], "avg"), kind="mlp", hidden=MLP_HIDDEN))
    seen, unique = set(), []
    for spec in out:
        key = (spec.kind, spec.pool_kind, spec.pool, spec.width, spec.hidden)
        if key not in seen:
            seen.add(key)
            unique.append(spec)
    return unique


def admitted(design: Design) -> tuple[list[list[HeadSpec]], dict[str, str]]:
    """Per accepted candidate (network order) the family members within the budget and the cost rule.

    Returns (members per candidate, design label → why it was left out) for listing.
    """
    fams = [family(b) for b in design.heads]
    skipped: dict[str, str] = {}
    limit = design.final_macs
    kept: list[list[HeadSpec]] = [[] for _ in fams]
    for i in reversed(range(len(fams))):
        for spec in fams[i]:
            why = None
            if spec.head_macs > design.budget_macs:
                why = f"{spec.head_macs} head MACs > budget {design.budget_macs}"
            elif spec.exit_macs > limit:
                why = f"exit cost {spec.exit_macs} > {limit} of the next exit"
            if why and spec is not fams[i][0]:
                skipped[f"{spec.tensor}: {spec.design}"] = why
            else:
                kept[i].append(spec)
        limit = min(s.exit_macs for s in kept[i])
    return kept, skipped


def pareto(rows: Sequence[tuple[float, int]]) -> list[bool]:
    """rows: (validation accuracy, head MACs) → whether each is Pareto-optimal (none better in both)."""
    from eecc.search.pareto import non_dominated

    front = set(non_dominated(range(len(rows)), key=lambda k: (rows[k][1], rows[k][0])))
    return [k in front for k in range(len(rows))]


def promising(specs: Sequence[HeadSpec], first_accuracy: Sequence[float | None], n_val: int) -> list[bool]:
    """Successive halving's rungs (eecc.train.fit.fit_heads: after `TrainConfig.rung` of the first epoch, then
    at its end): which heads train on. Per location, the front of (validation accuracy at the rung, head
    MACs): a head stops when a cheaper head of its location was more accurate, or a head of equal MACs
    (average vs max pooling twins) more accurate by over one standard error of its accuracy
    (sqrt(a(1-a)/n_val): 0.5 pt at a = 0.87 on 5000 samples); None = not judged (dropped or stopped
    before). The heads left behind keep their weights from the rung and may still be searched. Measured (bench/exits.py, strong ResNet): the plain front lost the pooling twin that the
    guarantee mode chose; a one-error slack against cheaper heads too let the dearest late heads, all
    within noise of each other, train on (train time x3).
    """
    out = [False] * len(specs)
    for k, (spec, acc) in enumerate(zip(specs, first_accuracy)):
        if acc is None:
            continue
        slack = [(a - math.sqrt(a * (1 - a) / max(n_val, 1))) if s.head_macs == spec.head_macs else a
                 for s, a in zip(specs, first_accuracy)
                 if a is not None and s.tensor == spec.tensor and s.head_macs <= spec.head_macs and s is not spec]
        out[k] = not any(r > acc for r in slack)
    return out


def choose(rows: Sequence[tuple[float, int]], on_front: Sequence[bool]) -> int:
    """Index of the head a location offers the search: the most accurate Pareto head, then the cheapest."""
    return min((k for k in range(len(rows)) if on_front[k]), key=lambda k: (-rows[k][0], rows[k][1]))


def expand(design: Design, blueprints: Sequence[HeadSpec]) -> list[HeadSpec]:
    """Every admitted family member of the given blueprints (a subset of `design.heads`), network order."""
    wanted = {b.tensor for b in blueprints}
    kept, _ = admitted(design)
    return [s for fam in kept if fam[0].tensor in wanted for s in fam]


def mark(results: Sequence) -> list[int]:
    """Set `pareto` and `chosen` on trained `CandidateResult`s; the chosen index per tensor, network order.

    A tensor whose heads were all dropped offers its first (the blueprint) as a dropped result.
    """
    by_tensor: dict[str, list[int]] = {}
    for k, r in enumerate(results):
        by_tensor.setdefault(r.spec.tensor, []).append(k)
    chosen = []
    for ks in by_tensor.values():
        alive = [k for k in ks if not results[k].dropped]
        if not alive:
            chosen.append(ks[0])
            continue
        rows = [(results[k].val_accuracy, results[k].spec.head_macs) for k in alive]
        front = pareto(rows)
        for k, on in zip(alive, front):
            results[k].pareto = on
        pick = alive[choose(rows, front)]
        results[pick].chosen = True
        chosen.append(pick)
    return chosen


def searched_heads(results: Sequence, pareto_only: bool = True,
                   numeric: str = "fp32") -> dict[str, list[tuple[str, int, int]]]:
    """tensor → [(design, head MACs, head weight bytes in `numeric`)] of its trained Pareto (or all trained) heads
    (`mark`), most accurate first (ties: the cheapest): the search's choices per location
    (eecc.search.placement.with_heads)."""
    out: dict[str, list] = {}
    for r in sorted((r for r in results if (r.pareto or not pareto_only) and not r.dropped),
                    key=lambda r: (-r.val_accuracy, r.spec.head_macs)):
        out.setdefault(r.spec.tensor, []).append((r.spec.design, r.spec.head_macs, r.spec.weight_bytes(numeric)))
    return out
