"""Accuracy/MAC trade-off: head family vs blueprint heads, weak and strong ResNet, against the oracle.

  python bench/tradeoff.py [--models resnet_weak resnet] [--data fashion-mnist] [--target psoc6]
  python bench/tradeoff.py --synthetic            (labelled synthetic logits, no training)

Per model and head set (family: several designs per candidate, the best offered to the search;
blueprint: the global-pool head only) the search runs on the platform's placements at a 0.5 pt
validation drop limit, without and with --guarantee 0.95. Reported on the test split: the drop, the
mean-MAC reduction, the oracle's reduction for the same placement and exits, the chosen heads' MACs
as a share of the model's. For the family, "all pairs" searches every (location, head) pair instead
of the best head per location. Targets (issue): at <= 0.5 pt test drop, reduction >= 40 % (weak
ResNet) and >= 55 % (strong ResNet), each >= 80 % of the oracle's; heads <= 2 % of the model's MACs.
Prints a table and writes JSON (--out, default bench/results/tradeoff.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from itertools import product
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 0.005


def _row(model, heads, mode, res, logits) -> dict:
    orig_acc, orig_macs = res.original["accuracy"], res.original["macs"]
    p = res.best
    if p is None:
        return {"model": model, "heads": heads, "mode": mode, "chosen": None, "infeasible": res.infeasible}
    idx = [logits.tensors.index(t) for t in p.exits]
    red, ored = 1 - p.test.mean_macs / orig_macs, 1 - p.oracle.mean_macs / orig_macs
    return {"model": model, "heads": heads, "mode": mode, "exits": list(p.exits),
            "thresholds": list(p.thresholds), "drop_pt": 100 * (orig_acc - p.test.accuracy),
            "drop_interval_pt": [100 * d for d in p.extra["intervals"]["accuracy_drop"]],
            "mac_reduction": red, "oracle_reduction": ored, "share_of_oracle": red / ored if ored > 0 else None,
            "head_macs_share": float(logits.head_macs[idx].sum() / orig_macs),
            "exit_rates": [float(r) for r in p.test.exit_rates], "original_accuracy": orig_acc}


def _pairs(placements, tried):
    """Every placement once per choice of trained head at each of its exits (tensors "<tensor>|<design>")."""
    by_tensor = {}
    for name in tried.tensors:
        by_tensor.setdefault(name.split("|")[0], []).append(name)
    return [replace(p, exits=combo) for p in placements
            for combo in product(*[by_tensor.get(t, []) for t in p.exits])]


def one_model(name, args) -> list[dict]:
    from eecc.examples import datasets
    from eecc.exits.run import plan_exits, run_exits
    from eecc.search.placement import ModelCost, enumerate_placements
    from eecc.search.search import SearchOptions, search
    from eecc.targets.platform import load_platform

    plan = plan_exits(str(ROOT / f"tests/fixtures/models/{name}.onnx"))
    placements = enumerate_placements(load_platform(args.target), plan.costs, ModelCost.from_blocks(plan.blocks))
    data = datasets.load(args.data)
    modes = {"default": SearchOptions(max_accuracy_drop=LIMIT),
             "guarantee": SearchOptions(max_accuracy_drop=LIMIT, guarantee=0.95)}
    rows = []
    for heads in args.heads:
        run = run_exits(plan, data, cache_dir=args.cache_dir, progress=True, head_set=heads)
        for mode, opts in modes.items():
            rows.append(_row(name, heads, mode, search(run.logits, placements=placements, options=opts,
                                                       strict=False), run.logits))
            if heads == "family":
                tried = run.tried_logits()
                res = search(tried, placements=_pairs(placements, tried), options=opts, strict=False)
                rows.append(_row(name, "family, all pairs", mode, res, tried))
        rows[-1 if heads != "family" else -2]["chosen_designs"] = {r.spec.tensor: r.spec.design for r in run.results}
    return rows


def synthetic_rows(args) -> list[dict]:
    from eecc.search.search import SearchOptions, search
    from eecc.search.synthetic import synthetic_logits

    lg = synthetic_logits(k=6, n_val=5000, n_test=5000, seed=args.seed)
    rows = []
    for mode, g in (("default", None), ("guarantee", 0.95)):
        res = search(lg, options=SearchOptions(max_accuracy_drop=LIMIT, max_exits=3, guarantee=g), strict=False)
        rows.append(_row("synthetic", "-", mode, res, lg))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet_weak", "resnet"])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--target", default="psoc6")
    ap.add_argument("--heads", nargs="+", choices=("family", "blueprint"), default=["family", "blueprint"])
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--cache-dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench/results/tradeoff.json"))
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    t0 = time.perf_counter()
    rows = synthetic_rows(args) if args.synthetic else [r for m in args.models for r in one_model(m, args)]
    table = Table(title=f"search at <= {100 * LIMIT} pt validation drop on {args.target} (figures on the test split)")
    for col in ("model", "heads", "mode", "exits", "Δacc pt [95 %]", "MAC −%", "oracle −%", "of oracle",
                "heads % MACs"):
        table.add_column(col, justify="left" if col in ("model", "heads", "mode", "exits") else "right")
    for r in rows:
        if r.get("exits") is None:
            table.add_row(r["model"], r["heads"], r["mode"], "none: " + str(r.get("infeasible")), "", "", "", "", "")
            continue
        iv = r["drop_interval_pt"]
        table.add_row(r["model"], r["heads"], r["mode"], ", ".join(r["exits"]),
                      f"{r['drop_pt']:.2f} [{iv[0]:.2f}, {iv[1]:.2f}]", f"{100 * r['mac_reduction']:.1f}",
                      f"{100 * r['oracle_reduction']:.1f}",
                      "-" if r["share_of_oracle"] is None else f"{100 * r['share_of_oracle']:.0f} %",
                      f"{100 * r['head_macs_share']:.2f}")
    Console(width=200).print(table)
    doc = {"command": "python bench/tradeoff.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "limit_pt": 100 * LIMIT, "rows": rows, "wall_s": time.perf_counter() - t0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1, default=float))
    print(f"wrote {args.out} ({doc['wall_s']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
