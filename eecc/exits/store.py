"""What a finished exits run keeps on disk: trained weights, logits for the search, and a report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eecc.data.cache import write_json
from eecc.exits.heads import HeadSpec, HeadWeights
from eecc.files import replacing
from eecc.search.types import ExitLogits

_WEIGHT_FIELDS = ("fc_w", "fc_b", "conv_w", "conv_b", "hid_w", "hid_b")


@dataclass
class CandidateResult:
    spec: HeadSpec
    weights: HeadWeights | None     # None when dropped
    val_accuracy: float
    test_accuracy: float | None
    first_epoch_accuracy: float
    epochs: int
    dropped: bool
    pareto: bool = False            # on its candidate's (val accuracy, head MACs) front
    chosen: bool = False            # the head its candidate offers the search


def stack_logits(plan, kept, val_logits, test_logits, final_val, final_test, y_val, y_test,
                 train=None) -> ExitLogits:
    """`train`: optional (per-head train logits, final train logits [N_train, C], y_train [N_train])."""
    c = plan.num_classes
    heads, final_train, y_train = train if train is not None else (None, None, None)
    logits = ExitLogits(
        tensors=[s.tensor for s in kept], exit_macs=np.array([s.exit_macs for s in kept], np.int64),
        final_macs=int(plan.blocks.total_macs),
        val_logits=np.stack(val_logits) if kept else np.zeros((0, len(y_val), c), np.float32),
        test_logits=np.stack(test_logits) if kept else np.zeros((0, len(y_test), c), np.float32),
        final_val_logits=final_val, final_test_logits=final_test, y_val=y_val, y_test=y_test,
        head_macs=np.array([s.head_macs for s in kept], np.int64),
        train_logits=None if heads is None else (np.stack(heads) if kept else np.zeros((0, len(y_train), c), np.float32)),
        final_train_logits=final_train, y_train=y_train)
    return logits


def save_trained(store: Path, results, logits: ExitLogits, final_acc, every: ExitLogits) -> None:
    """Weights, the search's logits, every tried head's logits (tried.npz) and report.json, in that order."""
    store.mkdir(parents=True, exist_ok=True)
    every.save(store / "tried.npz")
    arrays = {f"{k}.{f}": getattr(r.weights, f) for k, r in enumerate(results) if r.weights is not None
              for f in _WEIGHT_FIELDS if getattr(r.weights, f) is not None}
    with replacing(store / "heads.npz") as tmp:
        np.savez(tmp, **arrays)
    logits.save(store / "logits.npz")
    report = {"final_test_accuracy": final_acc, "candidates": [
        {"tensor": r.spec.tensor, "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy,
         "first_epoch_accuracy": r.first_epoch_accuracy, "epochs": r.epochs, "dropped": r.dropped}
        for r in results]}
    write_json(store / "report.json", report)  # written last: its presence marks a complete store


def load_trained(store: Path, heads: list[HeadSpec]):
    report = json.loads((store / "report.json").read_text())
    with np.load(store / "heads.npz") as z:
        arrays = {k: z[k] for k in z.files}
    results = []
    for k, (spec, row) in enumerate(zip(heads, report["candidates"])):
        weights = None if row["dropped"] else HeadWeights(
            **{f: arrays.get(f"{k}.{f}") for f in _WEIGHT_FIELDS})
        results.append(CandidateResult(spec, weights, row["val_accuracy"], row["test_accuracy"],
                                       row["first_epoch_accuracy"], row["epochs"], row["dropped"]))
    return results, ExitLogits.load(store / "logits.npz"), report["final_test_accuracy"]
