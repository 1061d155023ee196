"""Data handed from the exits/training stage to the search (shared contract)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eecc.files import replacing

_ARRAYS = ("exit_macs", "val_logits", "test_logits", "final_val_logits", "final_test_logits",
           "y_val", "y_test")
_OPTIONAL = ("head_macs", "train_logits", "final_train_logits", "y_train")
PAIR = "|"  # "<tensor>|<head design>": one row of logits per (location, head) pair


def pair_name(tensor: str, design: str) -> str:
    """The row name of the head of `design` at `tensor` in logits that hold several heads per location."""
    return f"{tensor}{PAIR}{design}"


@dataclass
class ExitLogits:
    """Cached logits of every trained candidate head plus the original classifier.

    `head_macs` (added beyond the first contract) is needed because a sample that passes an exit
    still pays for evaluating its head: leaving at exit j of a placement costs
    backbone_macs(j) + sum of head_macs of every exit of the placement up to j; backbone_macs(k) is
    exit_macs[k] - head_macs[k]. Optional only so that older producers still construct it.
    """

    tensors: list[str]
    exit_macs: np.ndarray
    final_macs: int
    val_logits: np.ndarray
    test_logits: np.ndarray
    final_val_logits: np.ndarray
    final_test_logits: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray
    head_macs: np.ndarray | None = field(default=None)
    # Logits on the training split, for calibration when no validation split exists (optional).
    train_logits: np.ndarray | None = field(default=None)
    final_train_logits: np.ndarray | None = field(default=None)
    y_train: np.ndarray | None = field(default=None)

    def __post_init__(self):
        self.tensors = [str(t) for t in self.tensors]
        self.exit_macs = np.asarray(self.exit_macs, dtype=np.int64)
        self.final_macs = int(self.final_macs)
        for name in ("val_logits", "test_logits", "final_val_logits", "final_test_logits"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32))
        self.y_val = np.asarray(self.y_val, dtype=np.int64)
        self.y_test = np.asarray(self.y_test, dtype=np.int64)
        if self.head_macs is not None:
            self.head_macs = np.asarray(self.head_macs, dtype=np.int64)
        for name in ("train_logits", "final_train_logits"):
            if getattr(self, name) is not None:
                setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32))
        if self.y_train is not None:
            self.y_train = np.asarray(self.y_train, dtype=np.int64)
        k = len(self.tensors)
        checks = [
            (self.exit_macs.shape == (k,), f"exit_macs has shape {self.exit_macs.shape}, want ({k},)"),
            (self.val_logits.ndim == 3 and self.val_logits.shape[0] == k,
             f"val_logits has shape {self.val_logits.shape}, want ({k}, N_val, C)"),
            (self.test_logits.ndim == 3 and self.test_logits.shape[0] == k,
             f"test_logits has shape {self.test_logits.shape}, want ({k}, N_test, C)"),
            (self.final_val_logits.shape[0] == self.y_val.shape[0],
             "final_val_logits and y_val disagree on N_val"),
            (self.final_test_logits.shape[0] == self.y_test.shape[0],
             "final_test_logits and y_test disagree on N_test"),
            (self.head_macs is None or self.head_macs.shape == (k,),
             f"head_macs must have shape ({k},)"),
        ]
        if k:
            checks += [
                (self.val_logits.shape[1:] == self.final_val_logits.shape,
                 "val_logits and final_val_logits disagree on (N_val, C)"),
                (self.test_logits.shape[1:] == self.final_test_logits.shape,
                 "test_logits and final_test_logits disagree on (N_test, C)"),
            ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"ExitLogits: {message}")

    @property
    def num_classes(self) -> int:
        return int(self.final_val_logits.shape[1])

    @property
    def backbone_macs(self) -> np.ndarray:
        """[K] backbone MACs up to each candidate (exit_macs minus the candidate's own head)."""
        if self.head_macs is None:
            raise ValueError("ExitLogits.head_macs is missing: the producer must record each "
                             "candidate head's MACs so the search can charge passed heads")
        return self.exit_macs - self.head_macs

    def take(self, rows, tensors=None) -> "ExitLogits":
        """The candidate rows `rows` (in that order), renamed to `tensors` when given; final logits unchanged."""
        rows = list(rows)
        per_row = {n: getattr(self, n)[rows] for n in ("exit_macs", "val_logits", "test_logits", "head_macs",
                                                       "train_logits") if getattr(self, n) is not None}
        rest = {n: getattr(self, n) for n in ("final_val_logits", "final_test_logits", "y_val", "y_test",
                                              "final_train_logits", "y_train")}
        names = [self.tensors[k] for k in rows] if tensors is None else list(tensors)
        return ExitLogits(tensors=names, final_macs=self.final_macs, **per_row, **rest)

    def save(self, path) -> Path:
        path = Path(path)
        arrays = {name: getattr(self, name) for name in _ARRAYS + _OPTIONAL
                  if getattr(self, name) is not None}
        with replacing(path) as tmp:
            np.savez(tmp, tensors=np.array(self.tensors, dtype=str), final_macs=np.int64(self.final_macs), **arrays)
        return path

    @classmethod
    def load(cls, path) -> "ExitLogits":
        with np.load(Path(path), allow_pickle=False) as z:
            kwargs = {name: z[name] for name in _ARRAYS + _OPTIONAL if name in z.files}
            return cls(tensors=[str(t) for t in z["tensors"]], final_macs=int(z["final_macs"]),
                       **kwargs)


@dataclass(frozen=True)
class CandidateCost:
    """Cost of a candidate exit known before training (block graph + head design)."""

    tensor: str
    backbone_macs: int
    head_macs: int
    handoff_bytes: int
    weight_bytes_before: int
    peak_activation_bytes_before: int
    # Added beyond the first contract; None = bounded by 4 bytes per head MAC (Gemm/1x1 conv heads
    # have at most one weight per MAC).
    head_weight_bytes: int | None = None
