"""Benchmark of `run_exits`: cold vs warm cache against one plain onnxruntime pass; prints a table, writes JSON.

    python bench/exits.py [--model tests/fixtures/models/resnet.onnx] [--data fashion-mnist] [--limit N]
                          [--heads family|blueprint]

Targets: features_s + train_s <= 3 x reference_pass_s on the ResNet fixture and the full Fashion-MNIST
training set, with every head of the family of every candidate trained (--heads family, the default);
warm run >= 10x faster than the cold one; last head within 2 points of the original model's test accuracy.
Each step's CPU seconds (this process, its threads and its finished children: eecc.data.footprint.cpu_seconds) are
printed beside its wall time: the machine may be shared, and wall-clock ratios only mean something idle.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console

from eecc.examples import datasets
from eecc.exits.run import plan_exits, run_exits, time_reference_pass
from common import table as results_table, write_results

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "tests/fixtures/models/resnet.onnx"))
    ap.add_argument("--data", default="fashion-mnist", help=f"one of {datasets.names()}")
    ap.add_argument("--limit", type=int, default=None, help="keep the first N training samples")
    ap.add_argument("--heads", choices=("family", "blueprint"), default="family")
    ap.add_argument("--out", default=str(ROOT / "bench/results/exits.json"))
    args = ap.parse_args(argv)

    data = datasets.load(args.data, limit_train=args.limit)
    plan = plan_exits(args.model)
    load_start = os.getloadavg()[0]  # the machine is shared: a timing means little without it
    # The yardstick is timed before and after the cold run and averaged: on a shared machine the load
    # drifts within a run, and one pass at the end alone skewed the ratio either way by up to 50 %.
    ref_before, ref_cpu_before = time_reference_pass(plan, data)
    with tempfile.TemporaryDirectory(prefix="eecc-bench-") as cache:
        t0 = time.perf_counter()
        cold = run_exits(plan, data, cache_dir=cache, reference_pass=True, progress=True, head_set=args.heads)
        cold_wall = time.perf_counter() - t0 - cold.timings["reference_pass_s"]
        t0 = time.perf_counter()
        run_exits(plan, data, cache_dir=cache, head_set=args.heads)  # warm: everything from the cache
        warm_wall = time.perf_counter() - t0
    t = cold.timings
    ref_after, ref_cpu_after = t["reference_pass_s"], t["reference_pass_cpu_s"]
    t["reference_pass_s"] = (ref_before + ref_after) / 2
    t["reference_pass_cpu_s"] = (ref_cpu_before + ref_cpu_after) / 2
    last = [r for r in cold.results if not r.dropped][-1]
    record = {
        "model": Path(args.model).name, "data": args.data, "train_samples": len(data["y_train"]),
        "head_set": args.heads, "heads_trained": len(cold.tried), "candidates_with_heads": len(cold.results),
        "head_epochs": sum(r.epochs for r in cold.tried),  # successive halving stops most heads at its rung
        "val_samples": len(data["y_val"]), "test_samples": len(data["y_test"]),
        **cold.to_json(),
        "ratio_features_train_to_reference": (t["features_s"] + t["train_s"]) / t["reference_pass_s"],
        "cpu_ratio_features_train_to_reference": (t["features_cpu_s"] + t["train_cpu_s"]) / t["reference_pass_cpu_s"],
        "cold_wall_s": cold_wall, "warm_wall_s": warm_wall, "warm_speedup": cold_wall / warm_wall,
        "original_test_accuracy": cold.final_test_accuracy, "last_head_test_accuracy": last.test_accuracy,
        "last_head_gap_points": 100 * (cold.final_test_accuracy - last.test_accuracy),
        "reference_pass_before_s": ref_before, "reference_pass_after_s": ref_after, "cpus": os.cpu_count(),
        "reference_pass_cpu_before_s": ref_cpu_before, "reference_pass_cpu_after_s": ref_cpu_after,
        "loadavg_1min_start": load_start, "loadavg_1min_end": os.getloadavg()[0],
    }
    Console().print(_table(record, cold, args.data, args.heads))
    write_results(args.out, record)
    return 0


def _table(record: dict, cold, data: str, heads: str):
    """The figures of `record` against their targets, one row per figure and per candidate exit."""
    t = record
    last = [c for c in cold.results if not c.dropped][-1]
    rows = [("heads trained (candidates)", f"{len(cold.tried)} ({len(cold.results)})", heads),
            ("head epochs (halving)", f"{t['head_epochs']:.1f}", "heads stopped at the rung count its fraction"),
            ("features_s (CPU s)", _wall_cpu(cold.timings, "features"), ""),
            ("train_s (CPU s)", _wall_cpu(cold.timings, "train"), "CPU: forked trainers too"),
            ("reference_pass_s (CPU s), mean of before / after", _wall_cpu(cold.timings, "reference_pass"),
             f"{t['reference_pass_before_s']:.2f} ({t['reference_pass_cpu_before_s']:.2f}) / "
             f"{t['reference_pass_after_s']:.2f} ({t['reference_pass_cpu_after_s']:.2f})"),
            ("(features+train)/reference", f"{t['ratio_features_train_to_reference']:.2f}", "<= 3 (idle)"),
            ("the same in CPU s", f"{t['cpu_ratio_features_train_to_reference']:.2f}", ""),
            ("warm run wall s", f"{t['warm_wall_s']:.2f}", ""),
            ("warm speed-up", f"{t['warm_speedup']:.1f}x", ">= 10x"),
            ("peak RSS MB", f"{t['peak_rss_mb']:.0f}", ""),
            ("load average start / end", f"{t['loadavg_1min_start']:.2f} / {t['loadavg_1min_end']:.2f}",
             f"{t['cpus']} CPUs"),
            ("original test acc", f"{100 * cold.final_test_accuracy:.2f}", ""),
            ("last head test acc", f"{100 * last.test_accuracy:.2f}", "gap <= 2 points")]
    for k, c in enumerate(cold.results):
        acc = "dropped" if c.dropped else f"val {100 * c.val_accuracy:.2f} / test {100 * c.test_accuracy:.2f}"
        rows.append((f"exit {k} {c.spec.tensor} ({c.spec.design})", acc, f"{c.spec.exit_macs:,} MACs"))
    out = results_table(f"run_exits on {t['model']} / {data} ({t['train_samples']} train)",
                        ("figure", "value", "target"), left=("figure",))
    for row in rows:
        out.add_row(*row)
    return out


def _wall_cpu(timings: dict, step: str) -> str:
    return f"{timings[f'{step}_s']:.2f} ({timings[f'{step}_cpu_s']:.2f})"


if __name__ == "__main__":
    raise SystemExit(main())
