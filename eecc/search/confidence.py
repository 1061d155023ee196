"""Confidence metrics over logits; higher means more confident, and a sample exits when conf >= t.

All three are functions of the softmax probabilities p (so thresholds live in [0, 1]):
  max_softmax = max_c p_c
  margin      = p_(1) - p_(2)          (top-1 minus top-2 probability)
  entropy     = 1 - H(p) / log C       (H in nats; 1 = one-hot, 0 = uniform)
The runtime's gates (runtime/, ONNX ops) must compute the same formulas.
"""

from __future__ import annotations

import numpy as np

from eecc.errors import EeccError

METRICS = ("max_softmax", "margin", "entropy")
DEFAULT_METRIC = "max_softmax"
# NACHOS: the exits' own learned confidence; not a function of the logits, so
# `confidence` refuses it and the search reads it from `search(..., confidences=...)`.
LEARNED = "learned"


def threshold_text(t: float) -> str:
    """A threshold with 3 decimals, or, where those read 0 or 1 and it is not, 3 significant digits (0.000298) or the
    decimals that show its distance from 1 (0.99996): a NACHOS threshold of 0.000298 read "≥ 0.000", an always-exit
    gate that 5 of 2000 samples did not take (nu14 F12)."""
    t = float(t)
    text = f"{t:.3f}"
    if text.lstrip("-") == "0.000" and t != 0:
        return f"{t:.3g}"
    if text == "1.000" and t != 1:  # as many decimals as show 1 - t to 2 significant digits
        return f"{t:.{1 - int(np.floor(np.log10(abs(1 - t))))}f}".rstrip("0")
    return text


def exit_rule(metric: str, threshold: float) -> str:
    """The gate in words, e.g. "exit if max_softmax ≥ 0.580". The entropy metric is the confidence 1 - H/log C, so
    its rule names the normalised entropy it bounds: "exit if normalised entropy H/log C ≤ 0.456 (1 - H/log C ≥
    0.544)", not "entropy ≥ 0.544", which reads backwards (nu8)."""
    if metric == "entropy":
        return (f"exit if normalised entropy H/log C ≤ {threshold_text(1 - threshold)} "
                f"(1 - H/log C ≥ {threshold_text(threshold)})")
    return f"exit if {'learned confidence' if metric == LEARNED else metric} ≥ {threshold_text(threshold)}"


def metric_meaning(metric: str) -> str:
    """What the gates compare with their thresholds, in one phrase (report and inspect)."""
    return {"max_softmax": "max_softmax: the largest softmax probability",
            "margin": "margin: top-1 minus top-2 softmax probability",
            "entropy": "entropy: 1 - H/log C, one minus the normalised entropy of the softmax (1 = one-hot, "
                       "0 = uniform; a sample exits when its entropy is low)",
            LEARNED: "learned: each exit's own learned confidence (NACHOS)"}.get(metric, str(metric))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def confidence(logits: np.ndarray, metric: str = DEFAULT_METRIC) -> np.ndarray:
    """Confidence over the last axis of `logits` (any leading shape), float64."""
    if metric not in METRICS:
        raise EeccError(f"unknown confidence metric '{metric}'; choose one of {', '.join(METRICS)}")
    p = softmax(logits)
    if metric == "max_softmax":
        return p.max(axis=-1)
    if metric == "margin":
        if p.shape[-1] < 2:
            return np.ones(p.shape[:-1])
        top2 = np.partition(p, p.shape[-1] - 2, axis=-1)[..., -2:]
        return top2[..., 1] - top2[..., 0]
    c = p.shape[-1]
    if c < 2:
        return np.ones(p.shape[:-1])
    # 0·log 0 = 0: the clip keeps one-hot probabilities finite without changing the sum.
    h = -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=-1)
    return 1.0 - h / np.log(c)
