"""Synthetic but realistic exit logits (deeper exits more accurate, errors correlated) for tests
and benchmarks that must run before real trained exits exist."""

from __future__ import annotations

import numpy as np

from eecc.search.types import ExitLogits


def synthetic_logits(*, k: int = 4, num_classes: int = 10, n_val: int = 2000, n_test: int = 2000,
                     final_macs: int = 10_000_000, head_share: float = 0.01, strength: float = 6.0,
                     seed: int = 0) -> ExitLogits:
    rng = np.random.default_rng(seed)
    depth = np.concatenate([(np.arange(k) + 1) / (k + 1), [1.0]])

    def split(n):
        y = rng.integers(0, num_classes, n)
        ease = rng.uniform(0.1, 1.6, n)                 # per-sample difficulty shared by all exits
        shared = rng.normal(size=(n, num_classes))      # errors correlate across depth
        out = []
        for f in depth:
            noise = 0.6 * shared + 0.8 * rng.normal(size=(n, num_classes))
            z = noise * 1.0
            z[np.arange(n), y] += strength * f * ease
            out.append(z.astype(np.float32))
        return np.stack(out[:-1]), out[-1], y

    val, fval, yv = split(n_val)
    test, ftest, yt = split(n_test)
    backbone = (depth[:-1] * final_macs).astype(np.int64)
    heads = np.full(k, int(head_share * final_macs), dtype=np.int64)
    return ExitLogits(tensors=[f"block{i}.out" for i in range(k)], exit_macs=backbone + heads,
                      final_macs=final_macs, val_logits=val, test_logits=test,
                      final_val_logits=fval, final_test_logits=ftest, y_val=yv, y_test=yt,
                      head_macs=heads)
