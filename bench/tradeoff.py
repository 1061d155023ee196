"""Accuracy/MAC trade-off of the search vs the oracle and the baselines; graph-method gap.

  python bench/tradeoff.py --model tests/fixtures/models/resnet.onnx --data D.npz --target psoc6
  python bench/tradeoff.py --synthetic            (before trained exits exist: labelled synthetic)
Prints a table and writes JSON (--out, default bench/tradeoff.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _logits(args):
    if args.synthetic:
        from eecc.search.synthetic import synthetic_logits
        return synthetic_logits(k=6, n_val=5000, n_test=5000, seed=args.seed), None, "synthetic"
    from eecc.exits.run import plan_exits, run_exits
    from eecc.search.placement import ModelCost, enumerate_placements
    from eecc.targets.platform import load_platform

    plan = plan_exits(args.model)
    placements = enumerate_placements(load_platform(args.target), plan.costs,
                                      ModelCost.from_blocks(plan.blocks))
    run = run_exits(plan, args.data, cache_dir=args.cache_dir, progress=True)
    return run.logits, placements, Path(args.model).stem


def _gap(logits, val, exits, w):
    from eecc.search.policy import Objective, evaluate_policy, position_costs
    from eecc.search.thresholds import exact_search, graph_search, threshold_grid

    costs = position_costs(logits, exits)
    obj = Objective(logits.final_macs, val.final_accuracy, w[0], w[1])
    grids = [threshold_grid(val.conf[k]) for k in exits]

    def cost(th):
        r = evaluate_policy(val, exits, th, costs)
        return float(obj.cost(r.accuracy, r.mean_macs))
    best = cost(exact_search(val, exits, grids, costs, obj)[0])
    plain = cost(graph_search(val, exits, grids, costs, obj, order=1, rounds=1)[0])
    ours = cost(graph_search(val, exits, grids, costs, obj)[0])
    return (plain - best) / abs(best), (ours - best) / abs(best)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--data")
    ap.add_argument("--target", default="psoc6")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--max-exits", type=int, default=3, help="exit subsets searched without a platform")
    ap.add_argument("--cache-dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/tradeoff.json")
    args = ap.parse_args()
    if not args.synthetic and not (args.model and args.data):
        ap.error("give --model and --data, or --synthetic")

    from rich.console import Console
    from rich.table import Table

    from eecc.search.policy import make_split
    from eecc.search.search import SearchOptions, search

    logits, placements, name = _logits(args)
    # without a platform (synthetic), every subset of up to --max-exits candidates is a placement
    res = search(logits, placements=placements,
                 options=SearchOptions(max_accuracy_drop=0.005, max_exits=args.max_exits), strict=False)
    orig_acc, orig_macs = res.original["accuracy"], res.original["macs"]
    val = make_split(logits, "val")
    rows = []
    for i, p in enumerate(res.placements):
        red = 1 - p.test.mean_macs / orig_macs
        ored = 1 - p.oracle.mean_macs / orig_macs
        rows.append({"exits": list(p.exits), "chosen": i == res.chosen, "feasible": p.feasible,
                     "drop_pt": 100 * (orig_acc - p.test.accuracy), "mac_reduction": red,
                     "oracle_reduction": ored, "share_of_oracle": red / ored if ored > 0 else None,
                     "search_s": p.seconds})
    gaps = [_gap(logits, val, p.indices, w) for p in res.placements if len(p.indices) >= 2
            for w in ((0.9, 0.1), (0.95, 0.05))]
    out = {"model": name, "original": res.original, "placements": rows,
           "baselines": res.baselines, "chosen": res.to_json()["chosen"],
           "graph_gap": {"plain_mean": float(np.mean([g[0] for g in gaps])) if gaps else None,
                         "plain_max": float(max((g[0] for g in gaps), default=0.0)),
                         "order2_mean": float(np.mean([g[1] for g in gaps])) if gaps else None,
                         "order2_max": float(max((g[1] for g in gaps), default=0.0)),
                         "cases": len(gaps)},
           "threshold_search_s_max": res.timings["threshold_search_s_max"], "infeasible": res.infeasible}
    table = Table(title=f"{name}: search at <= 0.5 pt validation accuracy drop (test split)")
    for col in ("", "exits", "Δacc pt", "MAC −%", "oracle −%", "of oracle", "search s"):
        table.add_column(col)
    for r in rows:
        table.add_row("*" if r["chosen"] else "", ",".join(r["exits"]), f"{r['drop_pt']:.2f}",
                      f"{100 * r['mac_reduction']:.1f}", f"{100 * r['oracle_reduction']:.1f}",
                      "-" if r["share_of_oracle"] is None else f"{100 * r['share_of_oracle']:.0f} %",
                      f"{r['search_s']:.3f}")
    console = Console(width=140)
    console.print(table)
    for k, b in res.baselines.items():
        console.print(f"baseline {k}: Δacc {100 * (orig_acc - b['accuracy']):.2f} pt, "
                      f"MAC −{100 * (1 - b['mean_macs'] / orig_macs):.1f} %")
    g = out["graph_gap"]
    if gaps:
        console.print(f"graph vs exact cost gap over {g['cases']} cases: NA plain mean "
                      f"{100 * g['plain_mean']:.3f} % (max {100 * g['plain_max']:.3f} %), order-2 mean "
                      f"{100 * g['order2_mean']:.3f} % (max {100 * g['order2_max']:.3f} %)")
    console.print(f"threshold search max {out['threshold_search_s_max']:.3f} s per placement")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    t = time.perf_counter()
    code = main()
    print(f"bench/tradeoff.py: {time.perf_counter() - t:.1f} s")
    raise SystemExit(code)
