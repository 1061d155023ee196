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


CHEAPER_BY = 0.05  # a cheaper feasible placement is named when it saves more than this share of the objective's unit


def cheaper_note(results: list, feasible: list[int], chosen: int | None, unit: str, w_eff: float,
                 w_acc: float) -> str | None:
    """The feasible placement cheapest in the objective's unit (validation split), when the weighted cost chose one
    costing over CHEAPER_BY more for its accuracy (nu15 F7: 0.257 mJ at 89.70 % chosen, 0.199 mJ at 87.74 % within
    the 1 pt limit unsaid; a user reading 'objective energy' took 0.257 mJ for the least): both placements' test
    figures and the weight that buys the difference, and --w-acc 0, which chooses on the unit alone."""
    if chosen is None or w_acc == 0:
        return None
    cheapest = min(feasible, key=lambda i: (results[i].extra["val_mean_cost"], rank(results[i])))
    a, b = results[chosen], results[cheapest]
    if b.extra["val_mean_cost"] >= a.extra["val_mean_cost"] * (1 - CHEAPER_BY):
        return None
    from eecc.report.units import count, duration, energy

    shown = {"energy": energy, "latency": duration, "macs": lambda v: f"{count(v)} MACs"}[unit]

    def text(r) -> str:  # the exits too: two placements on m4 → m4 → m4 differ only in them (digits cnn, psoc6)
        exits = f"exits at {', '.join(r.exits)}" if r.exits else "no exit"
        where = f"{' → '.join(r.processors)} ({exits})" if r.processors else exits
        return f"{where} at {shown(r.extra['mean_cost'])} mean, {100 * r.test.accuracy:.2f} % (test split)"

    saved = 1 - b.extra["val_mean_cost"] / a.extra["val_mean_cost"]
    name = "MACs" if unit == "macs" else unit
    return (f"the scalar cost (--w-eff {w_eff:g} on {name}, --w-acc {w_acc:g} per accuracy point) chose {text(a)} "
            f"over {text(b)}, also within the limits and {100 * saved:.0f} % {'fewer' if unit == 'macs' else 'less'} "
            f"{name} on the validation split; --w-acc 0 chooses on {name} alone within the limits")
