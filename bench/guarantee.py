"""Does the accuracy limit hold on unseen data? Random re-splits of validation/test, default vs --guarantee.

  python bench/guarantee.py [--models resnet resnet_weak] [--resplits 100] [--max-acc-drop 0.5] [--guarantee 0.95]

Per fixture the exits are trained once (cached); then validation and test (the official Fashion-MNIST
test set, 5000 + 5000) are pooled and re-split at random --resplits times. Each re-split runs the
search on the psoc6 placements twice, over (location, head design) pairs as eecc search does
(eecc.search.run.search_model: the Pareto heads by default, every trained head with --guarantee):
the default (limit checked on validation) and --guarantee P. The Pareto flags come from the original
validation split (the heads' training used it too), not from each re-split.
Reported: the share of re-splits whose TEST drop exceeds the limit (target for guarantee mode: at
most 1 − P), and the mean-MAC reduction each mode keeps (what the guarantee costs).
Prints a table and writes bench/results/guarantee.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def resplit(logits, perm):
    """The same logits with validation and test pooled and dealt out again by `perm` (same sizes)."""
    n_val = len(logits.y_val)
    heads = np.concatenate([logits.val_logits, logits.test_logits], axis=1)
    final = np.concatenate([logits.final_val_logits, logits.final_test_logits])
    y = np.concatenate([logits.y_val, logits.y_test])
    v, t = perm[:n_val], perm[n_val:]
    return replace(logits, val_logits=heads[:, v], test_logits=heads[:, t], final_val_logits=final[v],
                   final_test_logits=final[t], y_val=y[v], y_test=y[t])


def one_fixture(name: str, args) -> dict:
    from eecc.examples import datasets
    from eecc.exits.family import searched_heads
    from eecc.exits.run import plan_exits, run_exits
    from eecc.search.placement import ModelCost, enumerate_placements, with_heads
    from eecc.search.search import SearchOptions, search
    from eecc.targets.platform import load_platform

    plan, platform = plan_exits(str(ROOT / f"tests/fixtures/models/{name}.onnx")), load_platform(args.target)
    model = ModelCost.from_blocks(plan.blocks)
    placements = enumerate_placements(platform, plan.costs, model)
    run = run_exits(plan, datasets.load("fashion-mnist"), cache_dir=args.cache_dir, progress=True)
    limit = args.max_acc_drop / 100
    # intervals off: 200 searches per fixture, and only the chosen thresholds' test drop is counted here
    modes = {"default": SearchOptions(max_accuracy_drop=limit, intervals=False, objective=args.objective),
             "guarantee": SearchOptions(max_accuracy_drop=limit, guarantee=args.guarantee, intervals=False,
                                        objective=args.objective)}
    pairs = {m: (run.pairs(o.guarantee is None),
                 with_heads(platform, placements, plan.costs, searched_heads(run.tried, o.guarantee is None), model))
             for m, o in modes.items()}
    rows = {m: {"over": 0, "drops": [], "reductions": [], "none": 0} for m in modes}
    rng = np.random.default_rng(args.seed)
    for _ in range(args.resplits):
        perm = rng.permutation(len(run.logits.y_val) + len(run.logits.y_test))  # the same re-split for both modes
        for mode, opts in modes.items():
            logits, ps = pairs[mode]
            res = search(resplit(logits, perm), placements=ps, options=opts, strict=False)
            if res.best is None:
                rows[mode]["none"] += 1
                continue
            drop = res.original["accuracy"] - res.best.test.accuracy
            rows[mode]["over"] += drop > limit + 1e-12
            rows[mode]["drops"].append(drop)
            rows[mode]["reductions"].append(1 - res.best.test.mean_macs / res.original["macs"])
    out = {"model": name, "heads": {m: lg.tensors for m, (lg, _) in pairs.items()},
           "placements": {m: len(ps) for m, (_, ps) in pairs.items()}}
    for mode, r in rows.items():
        n = len(r["drops"])
        out[mode] = {"resplits": args.resplits, "no_choice": r["none"], "over_limit": r["over"],
                     "over_rate": r["over"] / max(n, 1), "mean_drop_pt": 100 * float(np.mean(r["drops"] or [0])),
                     "p95_drop_pt": 100 * float(np.quantile(r["drops"] or [0], 0.95)),
                     "mean_mac_reduction": float(np.mean(r["reductions"] or [0]))}
    out["guarantee_cost_pt_of_macs"] = 100 * (out["default"]["mean_mac_reduction"]
                                              - out["guarantee"]["mean_mac_reduction"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet", "resnet_weak"])
    ap.add_argument("--target", default="psoc6")
    ap.add_argument("--resplits", type=int, default=100)
    ap.add_argument("--max-acc-drop", type=float, default=0.5, help="points")
    ap.add_argument("--guarantee", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--objective", choices=("energy", "latency", "macs"), default="macs",
                    help="what the search minimises (default macs, as bench/tradeoff.py)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/guarantee.json"))
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    t0 = time.perf_counter()
    results = [one_fixture(m, args) for m in args.models]
    table = Table(title=f"{args.resplits} random val/test re-splits, limit {args.max_acc_drop} pt, "
                        f"--guarantee {args.guarantee} (target: over-limit rate <= {1 - args.guarantee:.2f})")
    for col in ("model", "mode", "test drop > limit", "mean drop pt", "p95 drop pt", "mean MAC −%", "no choice"):
        table.add_column(col, justify="left" if col in ("model", "mode") else "right")
    for r in results:
        for mode in ("default", "guarantee"):
            m = r[mode]
            table.add_row(r["model"], mode, f"{m['over_limit']}/{m['resplits'] - m['no_choice']} "
                          f"({100 * m['over_rate']:.0f} %)", f"{m['mean_drop_pt']:.2f}", f"{m['p95_drop_pt']:.2f}",
                          f"{100 * m['mean_mac_reduction']:.1f}", str(m["no_choice"]))
    Console(width=140).print(table)
    doc = {"command": "python bench/guarantee.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "max_acc_drop_pt": args.max_acc_drop, "guarantee": args.guarantee, "target": args.target,
           "results": results, "wall_s": time.perf_counter() - t0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out} ({doc['wall_s']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
