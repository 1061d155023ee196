"""Cascade(bundle).run(x): one onnxruntime session per stage, routing every sample on its own exit flag.

A batch enters stage 0; the samples whose `exit` flag is set leave with that stage's logits, the
rest regroup (in their original order) and go on with the hand-off tensor. So a batch gives the same
result as its samples one by one, and each sample pays only for the stages it ran.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnxruntime as ort

from eecc.runtime.bundle import Bundle, StageSpec, load_bundle
from eecc.runtime.sessions import session_options


@dataclass
class CascadeResult:
    logits: np.ndarray       # [N, C] float32, from the stage where each sample left
    exit_stage: np.ndarray   # [N] int64
    macs: np.ndarray         # [N] int64: MACs of the stages each sample ran, exit heads included

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=-1)


class Cascade:
    def __init__(self, bundle: Bundle | str | os.PathLike, *, providers: Sequence[str] | None = None,
                 threads: int | None = None, optimize: bool = True):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        providers = list(providers or ["CPUExecutionProvider"])
        # optimize False: tests compare with fusions off; an int8 stage never gets onnxruntime's int8 fusions
        self.sessions = [ort.InferenceSession(str(s.path), session_options(threads, optimize=optimize, model=s.path),
                                              providers=providers) for s in self.bundle.stages]
        self._chunk = [_fixed_batch(sess) for sess in self.sessions]
        self.exit_macs = np.array([s.exit_macs for s in self.bundle.stages], dtype=np.int64)
        self.dtype = np.dtype(self.bundle.input_dtype)
        first = next(i for i in self.sessions[0].get_inputs() if i.name == self.stages[0].input)
        self._sample = [d if isinstance(d, int) and d > 0 else None for d in first.shape[1:]]  # None: symbolic

    @property
    def stages(self) -> tuple[StageSpec, ...]:
        return self.bundle.stages

    def run(self, x: np.ndarray) -> CascadeResult:
        x = np.asarray(x)
        if x.dtype == np.uint8 and self.dtype != np.uint8:  # uint8 data: the scale the bundle was compiled with
            if self.bundle.input_scale is None:
                raise ValueError("uint8 input but the bundle records no input scale (compiled without --scale); "
                                 "pass float inputs scaled as at compile time")
            x = x * np.float32(self.bundle.input_scale)
        x = x.astype(self.dtype, copy=False)
        self._check_shape(x)
        n = x.shape[0]
        exit_stage = np.full(n, -1, dtype=np.int64)
        logits: np.ndarray | None = None
        alive, feed = np.arange(n), {self.stages[0].input: x}
        for k, stage in enumerate(self.stages):
            if alive.size == 0:
                break
            last = stage.exit is None
            # The next stage's inputs come from this stage's outputs by name (hand-off, ensemble members).
            carry = [] if last else list(self.stages[k + 1].inputs or (stage.handoff,))
            outs = self._run(k, feed, [stage.logits, *([] if last else [stage.exit]), *carry])
            if logits is None:
                logits = np.empty((n, outs[0].shape[1]), dtype=outs[0].dtype)
            leave = np.ones(alive.size, dtype=bool) if last else outs[1].astype(bool).reshape(-1)
            logits[alive[leave]] = outs[0][leave]
            exit_stage[alive[leave]] = k
            if not last:
                stay = ~leave
                alive = alive[stay]
                feed = {name: (v if stay.all() else v[stay]) for name, v in zip(carry, outs[2:])}
        if logits is None:
            logits = np.empty((0, 0), dtype=np.float32)
        return CascadeResult(logits, exit_stage, self.exit_macs[exit_stage] if n else np.empty(0, np.int64))

    def _check_shape(self, x: np.ndarray) -> None:
        """ValueError (one line) when `x` is not a batch [N, *sample] of the bundle's samples: one unbatched sample
        ended in onnxruntime's INVALID_ARGUMENT traceback (nu12)."""
        sample = self._sample
        if x.ndim == len(sample) + 1 and all(d is None or d == s for d, s in zip(sample, x.shape[1:])):
            return
        want = ", ".join("?" if d is None else str(d) for d in sample)
        one = x.ndim == len(sample) and all(d is None or d == s for d, s in zip(sample, x.shape))
        raise ValueError(f"Cascade.run: x has shape {list(x.shape)} but the bundle takes a batch [N, {want}]; "
                         + ("for one sample pass x[None] (a batch of one)" if one else
                            f"give x of shape [N, {want}]"))

    def run_stage(self, k: int, x: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """All outputs of stage k on `x` (no routing), for inspection and benchmarks; a dict feeds every input."""
        names = [o.name for o in self.sessions[k].get_outputs()]
        return dict(zip(names, self._run(k, x, names)))

    def _run(self, k: int, feed: np.ndarray | dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        sess, stage, chunk = self.sessions[k], self.stages[k], self._chunk[k]
        if not isinstance(feed, dict):
            feed = {stage.input: feed}
        rows = next(iter(feed.values())).shape[0]
        if chunk is None or rows == chunk:
            return sess.run(names, feed)
        if rows % chunk:  # a model exported with a fixed batch size runs in slices of it
            raise ValueError(f"stage {k} takes batches of exactly {chunk}; pass a multiple of {chunk} samples")
        parts = [sess.run(names, {name: v[i:i + chunk] for name, v in feed.items()}) for i in range(0, rows, chunk)]
        return [np.concatenate(p) for p in zip(*parts)]


def _fixed_batch(sess: ort.InferenceSession) -> int | None:
    dim = sess.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None
