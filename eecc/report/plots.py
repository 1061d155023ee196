"""The report's figures (matplotlib, Agg), each drawn from a bundle manifest alone.

Every function returns a matplotlib Figure, or None when the manifest lacks what the figure needs.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on build hosts and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from eecc.report.graph_picture import STAGE_COLOURS  # noqa: E402
from eecc.search.pareto import non_dominated  # noqa: E402

NEVER_LABEL = "never"


def _measured(manifest: dict) -> dict:
    return ((manifest.get("placement") or {}).get("metrics") or {}).get("measured") or {}


def _chosen(manifest: dict) -> dict:
    return ((manifest.get("placement") or {}).get("metrics") or {}).get("search") or {}


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated (mean MACs, accuracy) points: no other point is cheaper and at least as accurate."""
    return non_dominated(points, key=lambda p: p)


def tradeoff(manifest: dict):
    """Accuracy vs mean MACs of every evaluated placement, the Pareto front, chosen, original, oracle."""
    placements = (manifest.get("search") or {}).get("placements") or []
    original = manifest.get("original") or {}
    chosen = _chosen(manifest)
    if not placements and not chosen:
        return None
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    ok = [p for p in placements if p.get("feasible")]
    bad = [p for p in placements if not p.get("feasible")]
    if ok:
        ax.scatter([p["mean_macs"] for p in ok], [100 * p["accuracy"] for p in ok], s=22, color="#1f77b4",
                   alpha=0.7, label=f"feasible placement ({len(ok)})")
    if bad:
        ax.scatter([p["mean_macs"] for p in bad], [100 * p["accuracy"] for p in bad], s=22, marker="x",
                   color="#999999", label=f"infeasible placement ({len(bad)})")
    nsga = manifest.get("pareto") or []
    if nsga:
        # NSGA-II's set is non-dominated on the validation split; on the test split some points fall behind.
        ax.scatter([p["mean_macs"] for p in nsga], [100 * p["accuracy"] for p in nsga], s=40, facecolor="none",
                   edgecolor="#ff7f0e", label=f"NSGA-II solutions ({len(nsga)})")
        front = pareto_front([(p["mean_macs"], p["accuracy"]) for p in nsga])
        label = "Pareto front of the NSGA-II solutions (test split)"
    else:
        front = pareto_front([(p["mean_macs"], p["accuracy"]) for p in placements])
        label = "Pareto front of the evaluated placements"
    if front:
        xs, ys = zip(*front)
        # Markers too: a front of one point (one placement dominates all) draws no line.
        ax.step(xs, [100 * y for y in ys], where="post", color="#ff7f0e", lw=1.6, marker="o", ms=11, mfc="none",
                mew=1.6, label=label)
    if original:
        ax.scatter([original["macs"]], [100 * original["accuracy"]], marker="s", s=60, color="black",
                   zorder=5, label="original model")
    if chosen:
        ax.scatter([chosen["mean_macs"]], [100 * chosen["accuracy"]], marker="*", s=260, color="#d62728",
                   edgecolor="black", zorder=6, label="chosen")
        if chosen.get("oracle_macs") is not None and original:
            # The oracle leaves where an exit already agrees with the final classifier: final accuracy.
            ax.scatter([chosen["oracle_macs"]], [100 * original["accuracy"]], marker="D", s=55, color="#2ca02c",
                       edgecolor="black", zorder=6, label="oracle (chosen exits)")
    marks = {"global_threshold": "^", "nachos_greedy": "v"}
    for name, b in ((manifest.get("search") or {}).get("baselines") or {}).items():
        ax.scatter([b["mean_macs"]], [100 * b["accuracy"]], marker=marks.get(name, "P"), s=50, color="#9467bd",
                   edgecolor="black", zorder=5, label=f"baseline: {name.replace('_', ' ')}")
    ax.set_xlabel("mean MACs per sample (test split)")
    ax.set_ylabel("accuracy (%, test split)")
    ax.set_title("accuracy vs mean MACs", pad=28)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    secondary = ax.secondary_xaxis("top", functions=(lambda v: 100 * v / max(original.get("macs", 0) or 1, 1),
                                                     lambda p: p * max(original.get("macs", 0) or 1, 1) / 100))
    secondary.set_xlabel("% of the original model's MACs", fontsize=8)
    fig.tight_layout()
    return fig


def exit_rates(manifest: dict):
    """Share of test samples leaving at each stage: the search's simulation and the measured cascade."""
    stages = manifest.get("stages") or []
    measured, chosen = _measured(manifest).get("exit_rates"), _chosen(manifest).get("exit_rates")
    if not stages or not (measured or chosen):
        return None
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(stages) + 2), 3.8))
    x = np.arange(len(stages))
    series = [(r, n) for r, n in ((chosen, "search (simulated)"), (measured, "cascade (measured)")) if r]
    width = 0.8 / len(series)
    for j, (rates, name) in enumerate(series):
        colours = [STAGE_COLOURS[k % len(STAGE_COLOURS)] for k in range(len(stages))]
        bars = ax.bar(x + (j - (len(series) - 1) / 2) * width, [100 * r for r in rates], width, color=colours,
                      alpha=0.55 if j == 0 and len(series) > 1 else 1.0, edgecolor="black",
                      hatch="//" if j == 0 and len(series) > 1 else None, label=name)
        for bar, r in zip(bars, rates):
            ax.annotate(f"{100 * r:.1f} %", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"stage {s['index']}\n{s['target']}" for s in stages])
    ax.set_ylabel("samples leaving here (%)")
    ax.set_ylim(0, 110)
    ax.set_title("exit rates per stage (test split)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def stage_costs(manifest: dict):
    """Latency and energy of a sample that leaves at each stage, estimated (and calibrated if emulated)."""
    stages = manifest.get("stages") or []
    if not stages:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(max(7.5, 2.4 * len(stages) + 3), 4.6))
    x = np.arange(len(stages))
    colours = [STAGE_COLOURS[k % len(STAGE_COLOURS)] for k in range(len(stages))]
    labels = [f"stage {s['index']}\n{s['target']}" for s in stages]
    measured = _measured(manifest)
    # A stage's exit figure is calibrated only when it and every stage before it ran under emulation; else it mixes
    # emulated seconds with nominal ones and is not drawn as emulated (nu13 F10: un-emulated Cortex-M7 stages were).
    emulated = np.cumprod([bool(s.get("latency_calibrated_s")) for s in stages]).astype(bool)
    skipped = [str(s["index"]) for s, whole in zip(stages, emulated) if not whole]
    partly = (f"; none for stage{'s' if len(skipped) > 1 else ''} {', '.join(skipped)}: not emulated"
              if skipped and emulated.any() else "")
    for ax, key, cal_key, scale, unit, mean_key in (
            (axes[0], "exit_latency_s", "exit_latency_calibrated_s", 1e3, "ms", "mean_latency_s"),
            (axes[1], "exit_energy_j", "exit_energy_calibrated_j", 1e3, "mJ", "mean_energy_j")):
        est = [scale * (s.get(key) or 0.0) for s in stages]
        cal = [s.get(cal_key) if whole else None for s, whole in zip(stages, emulated)]
        has_cal = any(c is not None for c in cal)
        width = 0.38 if has_cal else 0.6
        ax.bar(x - (width / 2 if has_cal else 0), est, width, color=colours, edgecolor="black", label="estimated")
        if has_cal:
            ax.bar(x + width / 2, [scale * c if c is not None else 0.0 for c in cal], width, color=colours,
                   edgecolor="black", hatch="xx", alpha=0.6, label="calibrated (emulated)" + partly)
        if measured.get(mean_key) is not None:
            ax.axhline(scale * measured[mean_key], color="#d62728", ls="--", lw=1.2,
                       label=f"mean over test samples ({scale * measured[mean_key]:.3g} {unit})")
        ax.set_xticks(x, labels)
        ax.set_ylabel(f"{'latency' if unit == 'ms' else 'energy'} when leaving here ({unit})")
        if max(est) > 0 and max(est) / max(min(v for v in est if v > 0), 1e-30) > 200:
            ax.set_yscale("log")
        # below the bars: inside, 3 entries covered the last stage's bar (nu15 F8)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title("estimated latency per exit")
    axes[1].set_title("estimated energy per exit")
    fig.tight_layout()
    return fig


def threshold_maps(manifest: dict):
    """Accuracy and mean MACs over the threshold grid (manifest `threshold_grid`), chosen point marked."""
    grid = manifest.get("threshold_grid")
    if not grid or not grid.get("maps"):
        return None
    maps = grid["maps"]
    fig, axes = plt.subplots(len(maps), 2, figsize=(10, 4.2 * len(maps)), squeeze=False)
    chosen = grid["chosen"]
    for row, m in zip(axes, maps):
        pair = m["exits"]
        for ax, key, title, cmap in ((row[0], "accuracy", "accuracy (%)", "viridis"),
                                     (row[1], "mean_macs", "mean MACs (% of original)", "magma")):
            values = np.asarray(m[key], dtype=float)
            values = 100 * values if key == "accuracy" else 100 * values / grid["original_macs"]
            if len(pair) == 1:
                ts = m["thresholds"][0]
                ax.plot(range(len(ts)), values, marker="o", color="#1f77b4")
                i = _index(ts, chosen[pair[0]])
                ax.plot([i], [values[i]], marker="*", ms=16, color="#d62728", mec="black")
                _ticks(ax.set_xticks, ts, rotation=45, ha="right")
                ax.set_xlabel(f"threshold of exit {pair[0]}")
                ax.set_ylabel(title)
                ax.grid(alpha=0.3)
                continue
            t0, t1 = m["thresholds"]
            im = ax.imshow(values, origin="lower", aspect="auto", cmap=cmap)
            fig.colorbar(im, ax=ax, shrink=0.85)
            ax.plot([_index(t1, chosen[pair[1]])], [_index(t0, chosen[pair[0]])], marker="*", ms=18,
                    color="white", mec="black")
            _ticks(ax.set_xticks, t1, rotation=45, ha="right")
            _ticks(ax.set_yticks, t0)
            ax.set_xlabel(f"threshold of exit {pair[1]}")
            ax.set_ylabel(f"threshold of exit {pair[0]}")
        held = [f"exit {j} at {chosen[j]:.3f}" for j in range(len(chosen)) if j not in pair]
        row[0].set_title(f"accuracy ({grid['split']} split)" + (f"; {', '.join(held)}" if held else ""), fontsize=10)
        row[1].set_title(f"mean MACs, % of original ({grid['split']} split)", fontsize=10)
    fig.tight_layout()
    return fig


def _index(values: list[float], t: float) -> int:
    return int(np.argmin(np.abs(np.asarray(values) - t)))


def _ticks(setter, values: list[float], **text) -> None:
    step = max(1, len(values) // 8)
    idx = list(range(0, len(values), step))
    setter(idx, [NEVER_LABEL if values[i] > 1.0 else f"{values[i]:.3f}" for i in idx], fontsize=7, **text)
