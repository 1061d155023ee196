"""NACHOS confidence training vs the default (frozen heads, max-softmax gates) on the same exits; table + JSON.

    python bench/nachos.py [--fixtures cnn,dscnn,resnet] [--limit 5000] [--max-exits 2]

Per fixture: the default flow trains every candidate head on the frozen model (run_exits, cached) and the
search picks exits and max-softmax thresholds (1-point accuracy limit on validation). On exactly those exits
NACHOS (eecc/train/nachos.py, defaults) trains heads with a learned confidence from the same cached
features, and the same search chooses ε per exit on the learned confidence (metric "learned"). Reported on
the test split: accuracy, mean MACs, exit rates, ECE per exit (15 bins) of the confidence each gate
thresholds (max-softmax for the default, the learned c_i for NACHOS), training wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from eecc.data import cache as fcache
from eecc.examples import datasets
from eecc.data.splits import make_splits
from eecc.exits.run import run_exits
from eecc.search.calibration import ece, ece_from_confidence
from eecc.search.policy import position_costs
from eecc.search.search import SearchOptions, search
from eecc.search.types import ExitLogits
from eecc.train.nachos import NachosConfig, predict_nachos, train_nachos
from common import fixture_args, table as results_table, write_results

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests/fixtures/models"


def bench_fixture(name: str, *, limit: int | None, max_exits: int, cache_dir: str) -> dict:
    meta = json.loads((MODELS / f"{name}.json").read_text())
    data = datasets.load(meta["dataset"], limit_train=limit)
    t0 = time.perf_counter()
    ex = run_exits(MODELS / f"{name}.onnx", data, cache_dir=cache_dir)
    # a warm cache trains nothing: report the training time the cached run recorded
    default_train_s = ex.timings["train_s"] if not ex.warm else time.perf_counter() - t0
    opts = SearchOptions(max_accuracy_drop=0.01, max_exits=max_exits)
    first = search(ex.logits, options=opts, strict=False)
    if first.best is None:
        return {"fixture": name, "infeasible": first.infeasible}
    idx = list(first.best.indices)
    specs = [next(r.spec for r in ex.results if r.spec.tensor == ex.logits.tensors[k]) for k in idx]
    sub = _subset(ex.logits, idx)
    default = search(sub, options=opts, strict=False).best  # same exits, same search as NACHOS below
    plan = ex.plan
    splits = make_splits(**data, input_shape=plan.input_shape, num_classes=plan.num_classes)
    fc = fcache.FeatureCache(cache_dir, plan.graph, specs)
    feats = {n: fc.fill(s) for n, s in splits.items()}  # warm: run_exits filled them
    t1 = time.perf_counter()
    costs = position_costs(sub, range(len(idx)))
    trained = train_nachos(specs, [feats["train"].features(s) for s in specs], splits.train.y,
                           feats["train"].final_logits(), costs, sub.final_macs, config=NachosConfig())
    nachos_train_s = time.perf_counter() - t1
    out = {}
    for split in ("val", "test"):
        out[split] = predict_nachos(trained.module, [feats[split].features(s) for s in specs])
    learned = ExitLogits(tensors=sub.tensors, exit_macs=sub.exit_macs, final_macs=sub.final_macs,
                         val_logits=out["val"][0], test_logits=out["test"][0],
                         final_val_logits=sub.final_val_logits, final_test_logits=sub.final_test_logits,
                         y_val=sub.y_val, y_test=sub.y_test, head_macs=sub.head_macs)
    nachos = search(learned, options=SearchOptions(max_accuracy_drop=0.01, max_exits=max_exits, metric="learned"),
                    confidences={"val": out["val"][1], "test": out["test"][1]}, strict=False).best
    y = sub.y_test
    rows = [_row("default (max-softmax)", default, [ece(sub.test_logits[k], y) for k in range(len(idx))],
                 default_train_s)]
    if nachos is not None:
        z, c = out["test"]
        rows.append(_row("nachos (learned c)", nachos,
                         [ece_from_confidence(c[k], z[k].argmax(1) == y) for k in range(len(idx))], nachos_train_s,
                         softmax_ece=[ece(z[k], y) for k in range(len(idx))]))
    else:
        rows.append({"mode": "nachos (learned c)", "feasible": False, "train_s": nachos_train_s})
    return {"fixture": name, "dataset": meta["dataset"], "limit": limit, "exits": sub.tensors,
            "original_accuracy": first.original["accuracy"], "original_macs": int(sub.final_macs),
            "budget_macs": trained.budget_macs, "history": trained.history, "modes": rows}


def _subset(logits: ExitLogits, idx: list[int]) -> ExitLogits:
    return ExitLogits(tensors=[logits.tensors[k] for k in idx], exit_macs=logits.exit_macs[idx],
                      final_macs=logits.final_macs, val_logits=logits.val_logits[idx],
                      test_logits=logits.test_logits[idx], final_val_logits=logits.final_val_logits,
                      final_test_logits=logits.final_test_logits, y_val=logits.y_val, y_test=logits.y_test,
                      head_macs=logits.head_macs[idx])


def _row(mode: str, best, ece_gate: list[float], train_s: float, **extra) -> dict:
    if best is None:
        return {"mode": mode, "feasible": False, "train_s": train_s}
    return {"mode": mode, "feasible": True, "exits_used": list(best.exits),
            "thresholds": [float(t) for t in best.thresholds], "accuracy": best.test.accuracy,
            "mean_macs": best.test.mean_macs, "exit_rates": [float(r) for r in best.test.exit_rates],
            "ece_gate": ece_gate, "train_s": train_s, **extra}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    fixture_args(ap, fixtures="cnn,dscnn,resnet", limit=5000, name="nachos")
    args = ap.parse_args(argv)
    res = [bench_fixture(n, limit=args.limit, max_exits=args.max_exits, cache_dir=args.cache_dir)
           for n in args.fixtures.split(",") if n]
    write_results(args.out, {"limit": args.limit, "max_exits": args.max_exits, "results": res}, default=float)
    table = results_table("NACHOS confidence training vs default, same exits (test split; max drop 1 pt on val)",
                          ("fixture", "mode", "test acc", "Δ acc pt", "mean MACs %", "exit rates",
                           "gate ECE per exit", "train s"),
                          left=("fixture", "mode", "exit rates", "gate ECE per exit"))
    for fx in res:
        if "modes" not in fx:
            table.add_row(fx["fixture"], "infeasible", *[""] * 6)
            continue
        for r in fx["modes"]:
            if not r["feasible"]:
                table.add_row(fx["fixture"], r["mode"], "infeasible", *[""] * 4, f"{r['train_s']:.1f}")
                continue
            table.add_row(fx["fixture"], r["mode"], f"{100 * r['accuracy']:.2f}",
                          f"{100 * (r['accuracy'] - fx['original_accuracy']):+.2f}",
                          f"{100 * r['mean_macs'] / fx['original_macs']:.1f}",
                          " ".join(f"{x:.2f}" for x in r["exit_rates"]),
                          " ".join(f"{x:.3f}" for x in r["ece_gate"]), f"{r['train_s']:.1f}")
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
