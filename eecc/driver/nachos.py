"""--trainer nachos: the chosen exits learn a confidence (eecc/train/nachos.py) and ε is searched on it."""

from __future__ import annotations

import time
from dataclasses import asdict, replace

import numpy as np

from eecc.data import cache as fcache
from eecc.driver import pipeline
from eecc.search.policy import position_costs
from eecc.search.search import search
from eecc.search.types import ExitLogits


def nachos_exits(run, splits, chosen, options):
    """Train NACHOS exits on the chosen placement's cached features and search ε on their confidences.

    Returns (graph with the NACHOS heads and confidence outputs, the re-searched placement, manifest record).
    """
    from eecc.train.nachos import NachosConfig, export_nachos, predict_nachos, train_nachos

    t0 = time.perf_counter()
    config, o, logits = NachosConfig(), options.search_options, run.exits.logits
    specs_by = {h.spec.tensor: h.spec for h in run.exits.heads()}
    specs = [specs_by[t] for t in chosen.exits]
    idx = [logits.tensors.index(t) for t in chosen.exits]
    root = fcache.cache_root(options.cache_dir)
    fc = fcache.FeatureCache(root, run.plan.graph, specs)
    feats = {name: fc.fill(split) for name, split in splits.items()}  # warm: run_exits filled them
    sub = _subset(logits, list(chosen.exits), idx)
    trained = train_nachos(specs, [feats["train"].features(s) for s in specs], splits.train.y,
                           feats["train"].final_logits(), position_costs(sub, range(len(idx))), sub.final_macs,
                           budget_macs=o.max_mean_macs if o.max_mean_macs and o.max_mean_macs < sub.final_macs
                           else None, config=config)
    out = {n: predict_nachos(trained.module, [feats[n].features(s) for s in specs])
           for n in {"val", "test", o.calibrate_on}}
    learned = replace(sub, val_logits=out["val"][0], test_logits=out["test"][0],
                      **({"train_logits": out["train"][0], "final_train_logits": feats["train"].final_logits(),
                          "y_train": np.asarray(splits.train.y)} if "train" in out else {}))
    placement = [replace(p, heads=()) for p in run.placements if p.exits == tuple(chosen.exits)  # rows: tensors
                 and p.processors == tuple(chosen.processors) and p.heads == tuple(chosen.heads)]
    result = search(learned, placements=placement, options=replace(o, metric="learned"),
                    confidences={n: c for n, (_, c) in out.items()})
    heads, branches = export_nachos(trained.module)
    (graph,) = pipeline.exits(heads, branches).run([run.plan.graph])
    record = {"config": asdict(config), "budget_macs": trained.budget_macs, "history": trained.history,
              "search": result.to_json()["chosen"], "train_s": time.perf_counter() - t0}
    return graph, result.best, record


def _subset(logits: ExitLogits, tensors: list[str], idx: list[int]) -> ExitLogits:
    """The chosen exits' rows of the search's logits (no training-split logits: NACHOS adds its own)."""
    return ExitLogits(tensors=tensors, exit_macs=logits.exit_macs[idx], final_macs=logits.final_macs,
                      val_logits=logits.val_logits[idx], test_logits=logits.test_logits[idx],
                      final_val_logits=logits.final_val_logits, final_test_logits=logits.final_test_logits,
                      y_val=logits.y_val, y_test=logits.y_test, head_macs=logits.head_macs[idx])
