"""Decision modes compared on the same trained exits: default (single exit) vs AEP ensembles; prints a table,
writes JSON.

    python bench/modes.py [--fixtures cnn,resnet,dscnn,cnn1d] [--max-exits 2] [--limit N]

For every fixture the exits are trained once on the frozen model (run_exits, cached) and every mode searches
the same validation logits (all placements of 1..max-exits candidates, default objective, 1-point accuracy
limit) and is reported on the test split: accuracy, mean MACs, oracle MACs, test ECE per position of the
chosen cascade (15 bins), search wall time. The training wall time is shared by all modes (the ensembles
reuse the frozen-backbone heads) and is printed once per fixture.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from eecc.examples import datasets
from eecc.exits.run import run_exits
from eecc.exits.ensemble import WEIGHT_MODES
from eecc.search.search import SearchOptions, search
from common import fixture_args, table as results_table, write_results

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests/fixtures/models"
MODES = [("single", None)] + [("ensemble", w) for w in WEIGHT_MODES]


def bench_fixture(name: str, *, max_exits: int, limit: int | None, cache_dir: str) -> dict:
    meta = json.loads((MODELS / f"{name}.json").read_text())
    data = datasets.load(meta["dataset"], limit_train=limit)
    t0 = time.perf_counter()
    ex = run_exits(MODELS / f"{name}.onnx", data, cache_dir=cache_dir)
    train_s = time.perf_counter() - t0
    rows = []
    for decision, weights in MODES:
        opts = SearchOptions(max_accuracy_drop=0.01, max_exits=max_exits, decision=decision,
                             ensemble_weights=weights or "desc", prune=decision == "ensemble")
        t1 = time.perf_counter()
        res = search(ex.logits, options=opts, strict=False)
        seconds = time.perf_counter() - t1
        best = res.best
        row = {"decision": decision, "weights": weights, "search_s": seconds, "feasible": best is not None}
        if best is not None:
            row |= {"exits": list(best.exits), "thresholds": list(best.thresholds),
                    "accuracy": best.test.accuracy, "mean_macs": best.test.mean_macs,
                    "oracle_macs": best.oracle.mean_macs, "ece": best.extra["ece"],
                    "exit_rates": [float(r) for r in best.test.exit_rates]}
            if "aep" in best.extra:
                row["aep_best"] = best.extra["aep"][0]
        rows.append(row)
    return {"fixture": name, "dataset": meta["dataset"], "original_accuracy": res.original["accuracy"],
            "original_macs": res.original["macs"], "candidates": ex.logits.tensors,
            "exits_wall_s": train_s, "exits_timings": ex.timings, "warm": ex.warm, "modes": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    fixture_args(ap, fixtures="cnn,resnet,dscnn,cnn1d", limit=None, name="modes")
    args = ap.parse_args(argv)
    out = [bench_fixture(n, max_exits=args.max_exits, limit=args.limit, cache_dir=args.cache_dir)
           for n in args.fixtures.split(",") if n]
    write_results(args.out, {"max_exits": args.max_exits, "limit": args.limit, "results": out})
    console = Console(width=170)
    table = results_table(f"decision modes on the same exits (test split; <= {args.max_exits} exits, "
                          "max drop 1 pt on val)",
                          ("fixture", "mode", "exits", "test acc", "Δ acc pt", "mean MACs %", "oracle MACs %",
                           "ECE per position", "AEP best sub-ensemble", "search s"),
                          left=("fixture", "mode", "exits", "ECE per position", "AEP best sub-ensemble"))
    for fx in out:
        orig_acc, orig_macs = fx["original_accuracy"], fx["original_macs"]
        for r in fx["modes"]:
            mode = r["decision"] + (f"/{r['weights']}" if r["weights"] else "")
            if not r["feasible"]:
                table.add_row(fx["fixture"], mode, "infeasible", *[""] * 6, f"{r['search_s']:.1f}")
                continue
            aep = r.get("aep_best")
            table.add_row(
                fx["fixture"], mode, _short(fx, r["exits"]), f"{100 * r['accuracy']:.2f}",
                f"{100 * (r['accuracy'] - orig_acc):+.2f}", f"{100 * r['mean_macs'] / orig_macs:.1f}",
                f"{100 * r['oracle_macs'] / orig_macs:.1f}", " ".join(f"{e:.3f}" for e in r["ece"]),
                "" if aep is None else f"{_short(fx, aep['exits'])}: {100 * aep['accuracy']:.2f} % @ "
                                       f"{100 * aep['mean_macs'] / orig_macs:.1f} %",
                f"{r['search_s']:.1f}")
    console.print(table)
    for fx in out:
        t = fx["exits_timings"]
        console.print(f"{fx['fixture']}: original {100 * fx['original_accuracy']:.2f} %, exits trained once for all "
                      f"modes: features {t['features_s']:.1f} s + training {t['train_s']:.1f} s"
                      f"{' (cache warm)' if fx['warm'] else ''}")
    return 0


def _short(fx: dict, exits: list[str]) -> str:
    """Candidates by index (#k = k-th candidate in network order): tensor names do not fit a table."""
    return ",".join(f"#{fx['candidates'].index(t)}" for t in exits)


if __name__ == "__main__":
    raise SystemExit(main())
