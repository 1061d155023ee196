"""Run a written bundle's cascade on the test split: the figures a user gets, and agreement with the search."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from eecc.bundle.manifest import Manifest
from eecc.runtime.bundle import bundle_from
from eecc.runtime.cascade import Cascade
from eecc.search.intervals import policy_intervals


def verify_bundle(path: Path, manifest: Manifest, test, original_accuracy: float, original_macs: int,
                  simulated_exits, *, original_correct=None) -> dict:
    """The stage files in `path` run as `manifest` describes them (manifest.json is not written yet).

    `test` = (x, y); `simulated_exits` [N]: where the search's policy evaluation sent each test sample.
    With `original_correct` [N] (is the original model right on each sample), the figures carry 95 %
    bootstrap intervals (`intervals`; eecc/search/intervals.py), the drop paired per sample.
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
        **({} if original_correct is None else
           {"intervals": policy_intervals(res.predictions == y, res.macs, np.asarray(original_correct))}),
    }
