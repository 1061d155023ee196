"""One-line messages for a search where no placement fits: the limit that binds, where it comes from, and the
smallest value of it that works (the placement closest to fitting), before training (eecc/search/run.py) and
after it (search.binding_constraint: the trained heads' placements all pruned, or no thresholds that meet the
accuracy and MAC limits)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from eecc.search.placement import shown_above
from eecc.search.policy import DROP_TOLERANCE, Objective
from eecc.search.thresholds import EXACT_LIMIT, grid_tables, threshold_grid
from eecc.search.unit import ALL_DROPPED, DROPPED


@dataclass(frozen=True)
class Pruned:
    """What the messages read of a placement (eecc.search.placement.Placement has the same fields)."""

    exits: tuple[str, ...]
    processors: tuple[str, ...]
    needs: tuple[tuple[str, float, float], ...]  # (limit, need, have) per broken limit, as Placement.needs
    reasons: tuple[str, ...] = ()


def no_fit_message(placements, platform, max_latency_s: float | None, int8_fits: bool = False) -> str:
    """Before training: which limit leaves no placement of `platform` (eecc.search.placement.Placement's)."""
    if not placements:
        return f"platform '{platform.name}' has no processor; describe at least one under [[processors]]"
    if not any(p.needs for p in placements):
        return f"no feasible placement before training ({placements[0].reasons[0]}); add the missing [[links]]"
    source = "--max-latency-ms" if max_latency_s is not None else f"platform '{platform.name}''s max_latency_s"
    return limit_message(placements, "before training", source, replaces=max_latency_s is None,
                         int8_fits=int8_fits)


def limit_message(placements, when: str, source: str | None = None, *, replaces: bool = False,
                  int8_fits: bool = False) -> str:
    """The limit that binds and the smallest value of it that works: every placement too slow: the fastest's
    worst case; else the placement with the smallest memory overflow (need / have), what it needs and holds."""
    placements = [p for p in placements if p.needs]
    timed = [p for p in placements if all(k == "latency" for k, _, _ in p.needs)]
    if timed:
        best = min(timed, key=lambda p: p.needs[0][1])
        limit, ms = best.needs[0][2] * 1e3, best.needs[0][1] * 1e3
        with_exit = "" if best.exits else exit_latency_advice(timed, _round_up(ms) / 1e3)
        return (f"no feasible placement {when}: every placement takes longer than the worst-case latency limit ("
                + (f"{source}: " if source else "") + f"{limit:g} ms); the fastest, {_described(best)}, takes "
                f"{shown_above(ms, limit)} ms: pass --max-latency-ms {_round_up(ms):g} or more"
                + (" (it replaces the platform's limit)" if replaces else "")
                + (f"; {_round_up(ms):g} admits only the original model: {with_exit}" if with_exit else ""))
    best = min(placements, key=lambda p: max(n / h for k, n, h in p.needs if k != "latency"))
    over = [f"{_memory_name(k)} needs {int(n):,} B but holds {int(h):,} B" for k, n, h in best.needs if k != "latency"]
    return (f"no feasible placement {when}: the smallest, {_described(best)}, overflows memory ("
            + "; ".join(over) + "): use a platform with at least that much (storage_bytes, ram_bytes in its TOML)"
            + (", or compile with --quantize int8 (int8 weights and activations fit)" if int8_fits else ""))


def exit_latency_advice(placements, limit_s: float | None = None) -> str | None:
    """The latency limit that admits the fastest placement with an exit among `placements` (pruned for latency
    alone, at `limit_s` or their own limit), as advice; None when none was pruned for latency alone. nu12 F10:
    the limit that admitted the original model pruned every exit, and the message quoted another placement."""
    timed = [p for p in placements if p.exits and p.needs and all(k == "latency" for k, _, _ in p.needs)]
    if not timed:
        return None
    best = min(timed, key=lambda p: p.needs[0][1])
    ms, limit = best.needs[0][1] * 1e3, (limit_s if limit_s is not None else best.needs[0][2]) * 1e3
    if ms <= limit:
        return None
    return (f"the fastest with an exit, {_described(best)}, takes {shown_above(ms, limit)} ms: pass "
            f"--max-latency-ms {_round_up(ms):g} to allow an exit")


def _described(p) -> str:
    if not p.exits:
        return f"the original model alone on '{p.processors[0]}'"
    return f"{len(p.exits)} exit(s) on {' → '.join(p.processors)}"


def _memory_name(limit: str) -> str:
    kind, _, proc = limit.partition(":")
    return {"storage": f"storage on '{proc}'", "ram": f"RAM on '{proc}'", "shared storage": "the shared storage",
            "shared ram": "the shared RAM"}[kind]


def _round_up(x: float, digits: int = 3) -> float:
    """The next `digits`-significant-digit value above x: a limit that x meets with margin for float rounding."""
    step = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return float(f"{(math.floor(x / step) + 1) * step:.{digits}g}")


def binding_constraint(logits, calib, res, objective: Objective) -> str:
    """After training (a search.SearchResult with no feasible placement): the constraint that binds, and what to
    relax."""
    from eecc.search.policy import position_costs

    if not res.placements and not res.pruned:
        return ("no placement to search: no trained candidate exit (or a platform with a single "
                "processor); use a platform with at least two processors")
    if not res.placements:
        reasons = [r for p in res.pruned for r in p["reasons"]]
        if reasons and all(DROPPED in r for r in reasons):
            return ALL_DROPPED
        limited = [Pruned(tuple(p["exits"]), tuple(p["processors"]), tuple(map(tuple, p["needs"])))
                   for p in res.pruned if p.get("needs")]
        if not limited:
            return "no feasible placement: every placement was pruned; run eecc search --json to see why"
        return limit_message(limited, "with the trained heads")
    floor = min(position_costs(logits, p.indices)[0] for p in res.placements)
    m, a = objective.max_mean_macs, objective.max_accuracy_drop
    if m is None:  # objective energy / latency: the MAC limit is the search options'
        m = (res.options or {}).get("max_mean_macs")
    if m is not None and m < floor and a is None:
        return (f"no feasible placement: max mean MACs {m:.4g} is below the cheapest possible "
                f"({floor:.4g}, every sample at the first exit); raise --max-macs to {_round_up(floor):g} or more")
    if m is not None and a is not None:
        best, macs_needed = None, None
        for p in res.placements:
            grids = [threshold_grid(calib.conf[k]) for k in p.indices]
            if np.prod([len(g) for g in grids]) > EXACT_LIMIT:
                continue
            acc, macs = grid_tables(calib, p.indices, grids, position_costs(logits, p.indices))
            ok = macs <= m
            if ok.any():
                d = float(objective.original_accuracy - acc[ok].max())
                best = d if best is None else min(best, d)
            meets = (objective.original_accuracy - acc) <= a + DROP_TOLERANCE
            if meets.any():  # the least mean MACs that meets the accuracy limit: a MAC limit that works
                least = float(macs[meets].min())
                macs_needed = least if macs_needed is None else min(macs_needed, least)
        reached = f"the smallest reachable is {100 * best:.2f} pt" if best is not None else "none reached"
        below = (f"max mean MACs {m:.4g} is below the cheapest possible ({floor:.4g}, every sample at the first exit)"
                 if m < floor else f"with mean MACs <= {m:.4g} the accuracy drop must stay <= {100 * a:.2f} pt but "
                 + reached)
        works = (f"raise --max-macs to {_round_up(macs_needed):g} (the least mean MACs that keeps the accuracy drop "
                 f"<= {100 * a:.2f} pt)" if macs_needed is not None else "raise --max-macs")
        return f"no feasible placement: {below}; {works}, or relax --max-acc-drop"
    why = "; ".join(sorted({v for p in res.placements for v in p.reasons})) or "constraints"
    return f"no feasible placement: {why}; relax the constraint named"
