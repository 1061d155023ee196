"""Joint fine-tuning vs the frozen default on the same placement, data and platform; prints a table, writes JSON.

    python bench/finetune.py [--fixtures resnet,cnn] [--epochs 1] [--limit N] [--target psoc6]

Per fixture: the default flow (exits trained on the frozen model, search) picks a placement; then the
backbone and its exits are fine-tuned together (`refit_placement`, the `compile --finetune-epochs` step)
and the thresholds searched again. Reported on the test split: the frozen cascade, the fine-tuned cascade
at its own re-searched thresholds, and the fine-tuned cascade at its most accurate validation thresholds
within the frozen cascade's validation mean MACs ("equal MACs"), plus per-exit accuracies and
the fine-tuning wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from eecc.examples import datasets
from eecc.search.run import search_model
from eecc.passes.insert_exits import insert_exits
from eecc.search.policy import Objective, evaluate_policy, make_split, position_costs
from eecc.search.search import SearchOptions
from eecc.search.thresholds import search_thresholds
from eecc.targets.platform import load_platform
from eecc.train.finetune import FINE_GRID, refit_placement

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests/fixtures/models"


def bench_fixture(name: str, *, epochs: int, lr: float, limit: int | None, target: str, cache_dir: str) -> dict:
    meta = json.loads((MODELS / f"{name}.json").read_text())
    data = datasets.load(meta["dataset"], limit_train=limit)
    opts = SearchOptions(max_accuracy_drop=0.01)
    t0 = time.perf_counter()
    run = search_model(MODELS / f"{name}.onnx", data, load_platform(target), options=opts, cache_dir=cache_dir)
    frozen_s = time.perf_counter() - t0
    chosen, logits = run.result.best, run.exits.logits
    heads = {h.spec.tensor: h for h in run.exits.heads()}
    graph = insert_exits(run.plan.graph, heads=[heads[t] for t in chosen.exits])
    t1 = time.perf_counter()
    _, refit, new, info = refit_placement(graph, run.splits, logits, chosen, opts, epochs=epochs, lr=lr,
                                          original=run.result.original)
    refit_s = time.perf_counter() - t1
    # Equal MACs: the fine-tuned exits' most accurate thresholds (on val) within the frozen cascade's val mean MACs.
    idx, pos = list(chosen.indices), list(range(len(chosen.indices)))
    frozen_val = evaluate_policy(make_split(logits, "val"), idx, chosen.thresholds, position_costs(logits, idx))
    costs = position_costs(new, pos)
    equal = search_thresholds(make_split(new, "val"), pos, costs,
                              Objective(logits.final_macs, run.result.original["val_accuracy"], w_eff=0.0, w_acc=1.0,
                                        max_mean_macs=frozen_val.mean_macs), fine=True, grid_size=FINE_GRID)
    equal_test = evaluate_policy(make_split(new, "test"), pos, equal.thresholds, costs)

    def point(r, th):
        return {"accuracy": r.accuracy, "mean_macs": r.mean_macs, "thresholds": [float(t) for t in th],
                "exit_rates": [float(x) for x in r.exit_rates]}

    return {"fixture": name, "dataset": meta["dataset"], "epochs": epochs, "exits": list(chosen.exits),
            "original": run.result.original, "frozen": point(chosen.test, chosen.thresholds),
            "finetuned": point(refit.test, refit.thresholds), "finetuned_equal_macs": point(equal_test, equal.thresholds),
            "frozen_val_mean_macs": frozen_val.mean_macs, "frozen_flow_s": frozen_s, "finetune_step_s": refit_s,
            "finetune": info}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default="resnet,cnn")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--limit", type=int, default=None, help="keep the first N training samples")
    ap.add_argument("--target", default="psoc6")
    ap.add_argument("--cache-dir", default=os.environ.get("EECC_CACHE_DIR") or str(Path(tempfile.gettempdir())
                                                                                    / "eecc-bench-cache"))
    ap.add_argument("--out", default=str(ROOT / "bench/results/finetune.json"))
    args = ap.parse_args(argv)
    out = [bench_fixture(n, epochs=args.epochs, lr=args.lr, limit=args.limit, target=args.target, cache_dir=args.cache_dir)
           for n in args.fixtures.split(",") if n]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"limit": args.limit, "target": args.target, "results": out}, indent=1,
                                         default=float))
    table = Table(title=f"joint fine-tuning ({args.epochs} epoch(s)) vs frozen exits, same placement (test split)")
    for col in ("fixture", "cascade", "test acc %", "mean MACs %", "exit rates", "val acc per exit+final"):
        table.add_column(col)
    for fx in out:
        macs, f = fx["original"]["macs"], fx["finetune"]
        rows = [("original", {"accuracy": fx["original"]["accuracy"], "mean_macs": macs, "exit_rates": []}, ""),
                ("frozen", fx["frozen"], " ".join(f"{100 * a:.1f}" for a in f["val_accuracy_before"])),
                ("fine-tuned", fx["finetuned"], " ".join(f"{100 * a:.1f}" for a in f["val_accuracy_after"])),
                ("fine-tuned, equal MACs", fx["finetuned_equal_macs"], "")]
        for label, p, accs in rows:
            table.add_row(fx["fixture"], label, f"{100 * p['accuracy']:.2f}", f"{100 * p['mean_macs'] / macs:.1f}",
                          " ".join(f"{r:.2f}" for r in p["exit_rates"]), accs)
    console = Console(width=150)
    console.print(table)
    for fx in out:
        console.print(f"{fx['fixture']}: {fx['finetune']['train_samples']} training samples, fine-tuning "
                      f"{fx['finetune']['seconds']:.1f} s (step incl. logits + re-search {fx['finetune_step_s']:.1f} s); "
                      f"frozen flow {fx['frozen_flow_s']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
