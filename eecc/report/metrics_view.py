"""`eecc inspect OUT`: the placement's figures, the search's prediction beside the cascade's measured run.

The manifest keeps every raw figure (`placement.metrics.search`, `.measured`; `eecc inspect OUT --json`);
the text view prints the ones a user compares, in the units the summaries use (eecc.report.units)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from eecc.report.units import count, duration, energy, percents
from eecc.search.confidence import threshold_text
from eecc.search.intervals import fmt


def _percent(value, iv=None) -> str:
    """0.9073, [0.8885, 0.9260] -> '90.73 % [88.85, 92.60]'."""
    text = f"{100 * value:.2f} %"
    return text if not iv else f"{text} [{100 * iv[0]:.2f}, {100 * iv[1]:.2f}]"


def _rows(m: dict) -> dict[str, str]:
    """One column of the table: figure name -> text, for the figures this metrics dict holds."""
    iv = m.get("intervals") or {}
    cells = {}
    if m.get("accuracy") is not None:
        cells["accuracy"] = _percent(m["accuracy"], iv.get("accuracy"))
    if m.get("original_accuracy") is not None:
        cells["original accuracy"] = _percent(m["original_accuracy"], iv.get("original_accuracy"))
    if m.get("accuracy") is not None and m.get("original_accuracy") is not None:  # point [low, high]
        cells["accuracy drop (pt)"] = fmt(m["original_accuracy"] - m["accuracy"], iv.get("accuracy_drop"))
    elif iv.get("accuracy_drop"):  # an older manifest without the original's accuracy: the interval alone
        cells["accuracy drop (pt)"] = f"[{100 * iv['accuracy_drop'][0]:.2f}, {100 * iv['accuracy_drop'][1]:.2f}]"
    pc = m.get("per_class") or {}
    if pc.get("skewed"):  # a skewed test split: accuracy can hold while a rare class's recall falls (nu14 F5)
        cells["balanced accuracy"] = _percent(pc["balanced_accuracy"])
        cells["original balanced accuracy"] = _percent(pc["original_balanced_accuracy"])
    if m.get("mean_macs") is not None:
        cells["mean MACs"] = count(m["mean_macs"], iv.get("mean_macs"))
    if m.get("exit_rates"):
        cells["exit rates"] = ", ".join(f"{p} %" for p in percents(m["exit_rates"]))
    for key, name, unit in (("mean_latency_s", "mean latency", duration), ("mean_energy_j", "mean energy", energy),
                            ("mean_latency_calibrated_s", "mean latency, emulated", duration),
                            ("mean_energy_calibrated_j", "mean energy, emulated", energy),
                            ("worst_case_latency_s", "worst-case latency", duration)):
        if m.get(key) is not None:
            cells[name] = unit(m[key])
    if m.get("thresholds"):
        cells["thresholds"] = ", ".join(map(threshold_text, m["thresholds"]))
    if m.get("agreement_with_search") is not None:
        cells["exit agreement with search"] = _percent(m["agreement_with_search"])
    return cells


def print_metrics(metrics: dict, console: Console, original_accuracy: float | None = None) -> None:
    """A table: one row per figure, a column for the search's prediction and one for the measured run.

    `original_accuracy` is the search's reference (the manifest's `original.accuracy`): its column's figures
    leave it out, and the accuracy drop is printed as a point value with its interval."""
    search = metrics.get("search")
    if isinstance(search, dict) and search.get("original_accuracy") is None and original_accuracy is not None:
        search = {**search, "original_accuracy": original_accuracy}
    columns = [(name, _rows(m)) for m, name in
               ((search, "search (predicted)"), (metrics.get("measured"), "measured")) if isinstance(m, dict)]
    if not columns:
        return
    measured = metrics.get("measured") or {}
    title = "placement figures" + (f" (measured on the {measured['split']} split, {measured['samples']:,} samples)"
                                   if measured.get("split") and measured.get("samples") else "")
    table = Table(title=title)
    table.add_column("figure")
    for name, _ in columns:
        table.add_column(name, justify="right")
    order = list(_rows(dict(metrics.get("measured") or {}, **(search or {}))))
    names = sorted({n for _, cells in columns for n in cells}, key=order.index)
    for name in names:
        table.add_row(name, *(cells.get(name, "") for _, cells in columns))
    console.print(table)
    console.print("every raw figure: eecc inspect OUT --json (placement.metrics)")
