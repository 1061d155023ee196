"""The unit the search's scalar cost counts (energy, latency or MACs) and its reference, the original model
alone on its best single processor; and the check that the no-exit baselines do not hide dropped heads."""

from __future__ import annotations

import numpy as np

from eecc.errors import EeccError

UNITS = {"energy": "J", "latency": "s", "macs": "MACs"}
# search._one's `extra` of a placement with processors: per-position costs [E+1] and the means they give
PER_EXIT = {"energy": "exit_energy_j", "latency": "exit_latency_s"}
MEANS = (("mean_energy_j", "exit_energy_j"), ("mean_latency_s", "exit_latency_s"))


def priced_in(extra: dict) -> str:
    """The unit `exit_costs` prices a placement in: its objective (energy, latency) where `extra` holds the
    per-exit figures of that unit, else macs."""
    unit = extra.get("objective")
    return unit if PER_EXIT.get(unit) in extra else "macs"


def exit_costs(extra: dict, macs) -> np.ndarray:
    """[E+1] cost of leaving at each position in the unit the search scored in: the device's joules or seconds
    where the placement has processors (`extra` holds them), else `macs`."""
    unit = priced_in(extra)
    return np.asarray(extra[PER_EXIT[unit]] if unit != "macs" else macs, dtype=np.float64)


def device_means(extra: dict, exit_index: np.ndarray, prefix: str = "") -> dict:
    """`prefix` + mean_energy_j / mean_latency_s of `extra`'s per-exit figures over the samples' exits
    `exit_index` [N] (thresholds changed after the search: the figures follow them)."""
    return {prefix + mean: float(np.asarray(extra[per], dtype=np.float64)[exit_index].mean())
            for mean, per in MEANS if per in extra}


def reference_cost(placements, unit: str, final_macs: int) -> float:
    """What the scalar cost divides by: the original model's MACs, or its energy / latency on the best
    single processor (of those that fit; of all when none fits)."""
    if unit == "macs":
        return float(final_macs)
    field_ = "exit_energy_j" if unit == "energy" else "exit_latency_s"
    singles = [p for p in placements if not p.exits]
    pool = [p for p in singles if p.fits] or singles or list(placements)
    return float(min(getattr(p, field_)[-1] for p in pool))


def rank(result) -> tuple[float, float, float]:
    """Sort key of the single-processor deployments (the original alone): validation cost, ties broken by mean
    energy, then latency, on the calibration split (search._one's `extra`). Under objective macs every processor
    runs the original at the same MACs: the first listed was the best (nu12 F7: the M0+, 22x the M4's energy)."""
    extra = result.extra or {}
    return (result.val_cost, extra.get("val_mean_energy_j", 0.0), extra.get("val_mean_latency_s", 0.0))


DROPPED = "was dropped or not trained"
ALL_DROPPED = ("no feasible placement: every exit head of every placement was dropped (no better than "
               "chance after one epoch); check that the labels belong to the inputs and that the data are "
               "preprocessed as the model was trained")


def check_heads(todo: list, pruned: list[dict], strict: bool, notes: list[str]) -> None:
    """Every exit-bearing placement lost its heads: the labels likely do not belong to the inputs, so the
    single-processor baselines (which need no head) must not hide it behind a no-exit bundle."""
    with_exits = [p for p in pruned if p["exits"]]
    if not with_exits or any(t[0] for t in todo):
        return
    if all(DROPPED in r for p in with_exits for r in p["reasons"]):
        if strict:
            raise EeccError(ALL_DROPPED)
        notes.append(ALL_DROPPED)
