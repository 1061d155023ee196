"""The report of a compiled bundle: OUT/report.html (self-contained, PNGs inlined) and the PNGs beside it.

Everything is drawn from the bundle alone (manifest.json + the stage files), so `eecc report OUT`
re-renders any bundle; `threshold_maps` is the one piece computed at compile time, where the
candidate logits still exist, and stored in the manifest as `threshold_grid`.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from eecc.driver.prediction_gap import summary_lines
from eecc.errors import EeccError
from eecc.files import replacing
from eecc.progress import progress as show_progress
from eecc.runtime.bundle import MANIFEST
from eecc.report.classes import recall_line, recall_warning
from eecc.report.units import count, duration, energy, percents
from eecc.search.confidence import exit_rule, metric_meaning, threshold_text
from eecc.search.intervals import fmt

REPORT = "report.html"
FIGURES = (  # file stem, title, caption
    ("tradeoff", "Accuracy vs mean MACs",
     "Every evaluated placement (exits × processors, best thresholds each) on the test split; the Pareto "
     "front; the chosen cascade; the original model; the oracle of the chosen exits (each sample leaves at "
     "the earliest exit that agrees with the final classifier)."),
    ("exit_rates", "Exit rates per stage",
     "Share of test samples that leave at each stage: the search's simulation on cached logits and the "
     "written cascade run with onnxruntime."),
    ("stage_costs", "Latency and energy per stage",  # the caption names the cost source: stage_costs_caption
     "Per sample leaving at each stage: compute seconds {source}, energy from the platform's power figures, "
     "hand-offs from its link figures (calibrated from emulation where the bundle was compiled with --emulate); "
     "the dashed line is the mean over the test split."),
    ("threshold_maps", "Threshold grid",
     "Accuracy and mean MACs of the chosen exits over the search's threshold grid (13 quantiles per exit), "
     "evaluated on the test split; the star is the chosen thresholds."),
    ("blocks", "Block graph",
     "Backbone blocks in network order, grouped by the stage (processor) that runs them; candidate exit "
     "points and the chosen exit heads."),
)


def stage_costs_caption(manifest: dict, caption: str) -> str:
    """`caption` with {source}: where the stages' seconds came from, per processor, as the manifest's
    `cost_model.processors` records it (the measured cost model, or the platform's nominal MAC/s)."""
    from eecc.cost.segments import MEASURED

    sources = (manifest.get("cost_model") or {}).get("processors") or {}
    used = list(dict.fromkeys(s.get("target") for s in manifest.get("stages") or []))
    fitted = [p for p in used if sources.get(p) == MEASURED]
    nominal = [p for p in used if p not in fitted]
    parts = ([f"predicted by the measured cost model (TVM-compiled kernels counted under QEMU, fitted per "
              f"processor) at the processor's clock on {', '.join(fitted)}"] if fitted else []) + \
        ([f"from the platform's nominal MAC/s on {', '.join(nominal)}"] if nominal else [])
    held = [s for s in manifest.get("stages") or [] if (s.get("predicted") or {}).get("unmeasured_ops")]
    estimated = [f"stage {s['index']}'s {', '.join(s['predicted']['unmeasured_ops'])}" for s in held]
    counted = held and all(s.get("exit_latency_calibrated_s") is not None for s in held)  # --emulate (nu15 F2)
    never = (f"; {' and '.join(estimated)} never measured: those stages' {'estimated bars' if counted else 'figures'} "
             "are estimates (the cost model prices such ops by analogy: eecc/cost/coverage.py)"
             + ("; their calibrated bars are QEMU's counts" if counted else "")) if estimated else ""
    return caption.format(source=" and ".join(parts) + never if parts else "from the platform's nominal MAC/s")


def threshold_maps(logits, exits: Sequence[str], thresholds: Sequence[float], *, metric: str,
                   calibrate_on: str = "val", split: str = "test") -> dict | None:
    """Accuracy and mean MACs of the chosen exits over the threshold grid, for the report's heatmaps.

    The grid is the search's (quantiles of the calibration split's confidences) plus the chosen
    value, evaluated on `split`. One exit gives a curve; with more, one map per consecutive pair
    of exits, the other exits held at their chosen thresholds.
    """
    from eecc.search.policy import make_split, position_costs
    from eecc.search.thresholds import grid_tables, threshold_grid

    index = {t: i for i, t in enumerate(logits.tensors)}
    if not exits or any(t not in index for t in exits):
        return None
    idx = [index[t] for t in exits]
    calib, evaluated = make_split(logits, calibrate_on, metric), make_split(logits, split, metric)
    grids = [np.unique(np.append(threshold_grid(calib.conf[k]), t)) for k, t in zip(idx, thresholds)]
    costs = position_costs(logits, idx)
    pairs = [(0,)] if len(idx) == 1 else [(j, j + 1) for j in range(len(idx) - 1)]
    maps = []
    for pair in pairs:
        axes = [grids[j] if j in pair else np.array([thresholds[j]]) for j in range(len(idx))]
        acc, macs = grid_tables(evaluated, idx, axes, costs)
        shape = [len(grids[j]) for j in pair]
        maps.append({"exits": list(pair), "thresholds": [grids[j].tolist() for j in pair],
                     "accuracy": acc.reshape(shape).tolist(), "mean_macs": macs.reshape(shape).tolist()})
    return {"split": split, "grid_from": calibrate_on, "exits": list(exits),
            "chosen": [float(t) for t in thresholds], "original_macs": int(logits.final_macs), "maps": maps}


def write_report(bundle: str | Path, manifest: dict | None = None, *, progress: bool = False) -> Path:
    """Writes `bundle/report.html` and `bundle/report.<figure>.png`; returns the HTML path."""
    bundle = Path(bundle)
    if manifest is None:
        manifest = _load(bundle)
    from eecc.report import graph_picture, plots as report_plots

    builders: dict[str, Callable[[], object]] = {
        "tradeoff": lambda: report_plots.tradeoff(manifest),
        "exit_rates": lambda: report_plots.exit_rates(manifest),
        "stage_costs": lambda: report_plots.stage_costs(manifest),
        "threshold_maps": lambda: report_plots.threshold_maps(manifest),
    }
    sections, notes = [], []
    for stale in bundle.glob("report.*.png"):  # a figure not drawn this time must not linger from before
        stale.unlink()
    with show_progress(progress) as bar:
        task = bar("report", total=len(FIGURES))
        for name, title, caption in FIGURES:
            png = bundle / f"report.{name}.png"
            if name == "blocks":
                if not graph_picture.dot_available():
                    notes.append("block graph skipped: graphviz 'dot' is not installed (apt-get install graphviz)")
                    task.advance(note=name)
                    continue
                graph_picture.render_png(graph_picture.bundle_dot(bundle, manifest), png)
            else:
                fig = builders[name]()
                if fig is None:
                    notes.append(f"{title.lower()}: not drawn, {_missing(name)}")
                    task.advance(note=name)
                    continue
                fig.savefig(png, dpi=110)
                report_plots.plt.close(fig)
            sections.append((title, stage_costs_caption(manifest, caption) if name == "stage_costs" else caption, png))
            task.advance(note=name)
    out = bundle / REPORT
    with replacing(out) as tmp:
        tmp.write_text(render_html(manifest, sections, notes), encoding="utf-8")
    return out


def render_html(manifest: dict, sections: list[tuple[str, str, Path]], notes: list[str]) -> str:
    m = _get(manifest, "placement", "metrics", "measured") or {}
    platform = (manifest.get("platform") or {}).get("name", "?")
    title = f"eecc report: {manifest.get('model') or 'model'} on {platform}"
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>", _summary(manifest, m),
             _stage_table(manifest)]
    for heading, caption, png in sections:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<section><h2>{_e(heading)}</h2><p class=\"cap\">{_e(caption)}</p>"
                     f"<img alt=\"{_e(heading)}\" src=\"data:image/png;base64,{data}\"></section>")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts.append(_placements_table(manifest))
    parts.append(f"<p class=\"cap\">eecc {_e(str((manifest.get('versions') or {}).get('eecc', '')))}, "
                 f"written {_e(time.strftime('%Y-%m-%d %H:%M'))}. All figures are on the test split.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _summary(manifest: dict, m: dict) -> str:
    if not m:
        return "<p>No measured figures in the manifest.</p>"
    orig_acc, acc = m.get("original_accuracy", 0.0), m.get("accuracy", 0.0)
    orig_macs, macs = m.get("original_macs") or manifest.get("original_macs") or 1, m.get("mean_macs", 0.0)
    iv = m.get("intervals") or {}
    rows = [("test samples", f"{m.get('samples', 0):,}"),
            ("accuracy [95 % interval]", f"{fmt(acc, iv.get('accuracy'))} % (original "
             f"{fmt(orig_acc, iv.get('original_accuracy'))} %, {100 * (acc - orig_acc):+.2f} pt)"),
            ("accuracy drop [95 % interval]", f"{fmt(orig_acc - acc, iv.get('accuracy_drop'))} pt"),
            *_classes(manifest, m),
            ("mean MACs [95 % interval]", f"{count(macs, iv.get('mean_macs'))} (original {orig_macs:,}, "
             f"{100 * (macs / orig_macs - 1):+.1f} %)"),
            ("exit rates", ", ".join(f"stage {k}: {p} %" for k, p in enumerate(percents(m.get("exit_rates", []))))),
            ("mean latency (est.)", duration(m.get("mean_latency_s", 0.0))),
            ("mean energy (est.)", energy(m.get("mean_energy_j", 0.0))),
            *([("mean latency / energy (emulated)", f"{duration(m['mean_latency_calibrated_s'])}, "
                f"{energy(m['mean_energy_calibrated_j'])} (QEMU instruction counts at the test exit rates)")]
              if m.get("mean_energy_calibrated_j") is not None else []),
            *[("warning", line.removeprefix("warning: ").strip()) for line in
              summary_lines(manifest.get("prediction_check"))],
            ("objective", str(manifest.get("objective", "macs"))),
            ("deployment", (manifest.get("deployment") or {}).get("line", "-")),
            *([("deployment (search's prediction)", manifest["deployment"]["predicted_line"])]
              if (manifest.get("deployment") or {}).get("predicted_line") else []),
            ("search mode", str(manifest.get("mode", "?"))),
            ("confidence metric", metric_meaning(str(manifest.get("confidence_metric", "?"))))]
    return "<table class=\"kv\">" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _classes(manifest: dict, m: dict) -> list[tuple[str, str]]:
    """Per-class recall rows on a skewed test split (nu14 F5), and the warning the compile summary prints."""
    line = recall_line(m.get("per_class"))
    limit = ((manifest.get("search") or {}).get("options") or {}).get("max_accuracy_drop")
    warning = recall_warning(m.get("per_class"), limit)
    return ([("per-class recall", line)] if line else []) + ([("warning", warning)] if warning else [])


def _stage_table(manifest: dict) -> str:
    head = ("stage", "file", "processor", "kind", "MACs", "exit gate", "exit latency", "exit energy")
    rows = []
    for s in manifest.get("stages") or []:
        th = "final" if s.get("threshold") is None else exit_rule(manifest.get("confidence_metric"), s["threshold"])
        rows.append((s["index"], s["file"], s["target"], s["kind"], f"{s['macs']:,}", th,
                     duration(s["exit_latency_s"]), energy(s["exit_energy_j"])))
    return _table("Stages", head, rows)


def _placements_table(manifest: dict) -> str:
    placements = _get(manifest, "search", "placements") or []
    chosen = _get(manifest, "placement", "metrics", "search", "index")
    head = ("", "exits", "processors", "thresholds", "accuracy [95 %]", "mean MACs [95 %]", "mean energy",
            "mean latency", "oracle MACs", "feasible")

    def device(p, key, scale, unit):
        return "-" if p.get(key) is None else f"{scale * p[key]:.3g} {unit}"

    rows = [("★" if i == chosen else "", _exits(p) or "(original model)",
             " → ".join(p.get("processors") or []),
             ", ".join(map(threshold_text, p["thresholds"])),
             f"{fmt(p['accuracy'], (p.get('intervals') or {}).get('accuracy'))} %",
             count(p['mean_macs'], (p.get('intervals') or {}).get('mean_macs')),
             device(p, "mean_energy_j", 1e3, "mJ"), device(p, "mean_latency_s", 1e3, "ms"), f"{p['oracle_macs']:,.0f}",
             "yes" if p["feasible"] else "no: " + "; ".join(p.get("reasons") or []))
            for i, p in enumerate(placements)]
    return _table(f"Evaluated placements ({len(rows)})", head, rows) if rows else ""


def _exits(p: dict) -> str:
    """Exit tensors, each with its head design when the search chose among several per location."""
    heads = p.get("heads") or [""] * len(p["exits"])
    return ", ".join(f"{t} ({h})" if h else t for t, h in zip(p["exits"], heads))


def _table(title: str, head, rows) -> str:
    return (f"<h2>{_e(title)}</h2><table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{_e(str(c))}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def _missing(name: str) -> str:
    return {"tradeoff": "the manifest has no search results",
            "exit_rates": "the manifest has no exit rates",
            "stage_costs": "the manifest lists no stages",
            "threshold_maps": "the manifest has no threshold grid (bundles from an older eecc, or no exits)"}[name]


def _load(bundle: Path) -> dict:
    file = bundle / MANIFEST
    if not file.is_file():
        raise EeccError(f"'{bundle}' is not an eecc bundle (no {MANIFEST}); pass the output folder of eecc compile")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise EeccError(f"'{file}' is not valid JSON ({exc.msg}); recompile the bundle") from None


def _get(d: dict, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _e(text) -> str:
    return html.escape(str(text))


_CSS = """body{font-family:system-ui,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}
table.kv th{background:#f4f4f4}img{max-width:100%;height:auto;border:1px solid #eee}.cap{color:#555;font-size:.9em}"""
