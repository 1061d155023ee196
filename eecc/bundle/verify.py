"""Run a written bundle's cascade on the test split: the figures a user gets, and agreement with the search."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from eecc.bundle.manifest import Manifest
from eecc.exits.chance import skewed
from eecc.runtime.bundle import bundle_from
from eecc.runtime.cascade import Cascade
from eecc.search.intervals import policy_intervals


def verify_bundle(path: Path, manifest: Manifest, test, original_accuracy: float, original_macs: int,
                  simulated_exits, *, original_pred=None) -> dict:
    """The stage files in `path` run as `manifest` describes them (manifest.json is not written yet).

    `test` = (x, y); `simulated_exits` [N]: where the search's policy evaluation sent each test sample.
    With `original_pred` [N] (the original model's class for each sample), the figures carry 95 % bootstrap
    intervals (`intervals`; eecc/search/intervals.py), the drop paired per sample, and the per-class recalls of
    both (`per_class`, see `per_class`). `test_digest` (see `data_digest`) lets `eecc run` tell the compile's test
    split from other data.
    """
    x, y = test
    t0 = time.perf_counter()
    res = Cascade(bundle_from(path, manifest.to_json())).run(x)
    wall = time.perf_counter() - t0
    stages = [{"exit_latency_s": s.exit_latency_s, "exit_energy_j": s.exit_energy_j} for s in manifest.stages]
    rates = np.bincount(res.exit_stage, minlength=len(stages)) / max(len(y), 1)
    return {
        "split": "test", "samples": int(len(y)),
        "accuracy": float((res.predictions == y).mean()),
        "original_accuracy": float(original_accuracy),
        "mean_macs": float(res.macs.mean()), "original_macs": int(original_macs),
        "exit_rates": [float(r) for r in rates],
        "mean_latency_s": float(sum(r * s["exit_latency_s"] for r, s in zip(rates, stages))),
        "mean_energy_j": float(sum(r * s["exit_energy_j"] for r, s in zip(rates, stages))),
        # The search scores heads on cached features (onnxruntime, batched); the cascade runs the real graph.
        "agreement_with_search": float((res.exit_stage == simulated_exits).mean()),
        "host_wall_s": wall,
        "test_digest": data_digest(x, y),
        **({} if original_pred is None else
           {"intervals": policy_intervals(res.predictions == y, res.macs, np.asarray(original_pred) == y),
            "per_class": per_class(res.predictions, np.asarray(original_pred), y)}),
    }


def per_class(pred: np.ndarray, original_pred: np.ndarray, y: np.ndarray) -> dict:
    """Recall of each class present in y [N] (the share of its samples predicted as it) for the cascade's `pred`
    and the original's `original_pred` [N], and their means, the balanced accuracy (Brodersen et al. 2010); `skewed`
    as eecc.exits.chance.skewed says of y. On a skewed split accuracy can hold while the rare class's recall
    falls (nu14 F5: a 9.7 %-positive detector, 98.00 % vs 98.00 %, recall of the positives 0.814 vs 0.866): the
    search's limit stays on accuracy, the summary and report show these beside it."""
    original = class_recall(original_pred, y)
    return {**class_recall(pred, y), "original_recall": original["recall"],
            "original_balanced_accuracy": original["balanced_accuracy"]}


def class_recall(pred: np.ndarray, y: np.ndarray) -> dict:
    """`per_class`'s figures of one predictor: `skewed`, `classes` and their `samples` in y [N], `recall` of each
    class by `pred` [N] and `balanced_accuracy` (their mean; 0.0 on no samples)."""
    classes, counts = np.unique(y, return_counts=True)
    recall = [float((pred[y == c] == c).mean()) for c in classes]
    return {"skewed": bool(skewed(y)), "classes": classes.tolist(), "samples": counts.tolist(), "recall": recall,
            "balanced_accuracy": float(np.mean(recall)) if recall else 0.0}


def data_digest(x: np.ndarray, y: np.ndarray, scale: float | None = None) -> str:
    """Hex blake2b (16 bytes) of samples x [N, ...] as float32 as the model reads them (uint8 codes times `scale`,
    as eecc.data.splits.Split.rows scales them), with their shape, and of labels y [N] as int64: equal for the
    compile's test split and the same data given to `eecc run` again, so run knows when the manifest's original
    per-class figures apply to its data."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(("float32", tuple(x.shape), "int64", len(y))).encode())
    for start in range(0, len(x), 4096):  # blocks: a float32 copy of a large uint8 split never whole in memory
        block = np.asarray(x[start:start + 4096], dtype=np.float32)
        h.update(np.ascontiguousarray(block if scale is None else block * np.float32(scale)).data)
    h.update(np.ascontiguousarray(y, dtype=np.int64).data)
    return h.hexdigest()
