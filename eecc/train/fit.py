"""Train exit heads on cached features: Adam with cosine decay, early stopping on validation loss.

The heads of each pooled map train together as one task, tasks on their own threads with one torch
thread each (heads are small: OpenMP-parallel ops on them mostly wait at barriers, and collapse when
other processes share the cores). A head's result depends only on its spec, its data and the config
(and, with halving, its location's first-epoch accuracies) — never on which heads train beside it.
Each batch's rows are gathered from the (memory-mapped) features when needed, so the training set
is never loaded whole; the page cache holds what fits.
"""

from __future__ import annotations

import copy
import math
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from eecc.exits.chance import beats_chance
from eecc.exits.heads import HeadSpec, TrainConfig
from eecc.train.adam import Adam as _Adam
from eecc.train.modules import HeadModule, batch_layout, loss_and_grads, one_hot, predict, stored_layout

STATS_ROWS = 8192


@dataclass
class FitResult:
    module: HeadModule
    first_epoch_accuracy: float
    val_accuracy: float
    val_loss: float
    epochs: float                         # epochs the kept weights trained; a fraction when stopped at the rung
    dropped: bool
    val_logits: np.ndarray | None = None  # of the kept (best) weights
    rung_accuracy: float | None = None    # validation accuracy that halving's rung judged (None: dropped there)
    test_logits: np.ndarray | None = None  # of the kept weights on the test split, when the task predicts them


def channel_stats(features: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over samples and positions of features [N, C, ...] (float32 out), streamed so a
    memmap never loads whole, read in their stored order (`stored_layout`: the cache's maps are channels-last).

    Sums of x and x² in float64 (float32 squares are exact there): E[x²] − E[x]² then loses only
    (mean/std)² · 1e-16 of the variance, no shift needed. numpy's float64 reductions took a fifth of the CPU
    of float32 torch reductions over (samples, positions) with a shift (0.14 vs 0.71 s for the 30 maps of
    bench/exits.py, one thread), and agree with them to 3e-6 (float32 rounding).
    """
    c = features.shape[1]
    stored, last = stored_layout(features)
    total, sq, count = np.zeros(c), np.zeros(c), 0
    for start in range(0, len(stored), chunk):
        x = np.asarray(stored[start:start + chunk], dtype=np.float32)
        if last:  # [rows · positions, C]
            x = x.reshape(-1, c)
            total += x.sum(axis=0, dtype=np.float64)
            sq += np.einsum("pc,pc->c", x, x, dtype=np.float64)
            count += x.shape[0]
            continue
        x = x.reshape(-1, c, math.prod(features.shape[2:]))
        total += x.sum(axis=(0, 2), dtype=np.float64)
        sq += np.einsum("ncp,ncp->c", x, x, dtype=np.float64)
        count += x.shape[0] * x.shape[2]
    n = max(count, 1)
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def _sample_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`channel_stats` of every len/STATS_ROWS-th row: the standardisation only conditions the
    optimisation (export folds it in), a spread sample is enough."""
    return channel_stats(features[::max(1, len(features) // STATS_ROWS)])


def fit_head(spec: HeadSpec, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             config: TrainConfig = TrainConfig()) -> FitResult:
    return fit_heads([spec], [x_train], y_train, [x_val], y_val, config)[0]


def fit_heads(specs: Sequence[HeadSpec], x_train: Sequence[np.ndarray], y_train: np.ndarray,
              x_val: Sequence[np.ndarray], y_val: np.ndarray, config: TrainConfig = TrainConfig(), *,
              on_done: Callable[[int, int], None] | None = None,
              keep: Callable[[list[float | None], int], list[bool]] | None = None) -> list[FitResult]:
    """Train heads[k] on x_train[k] (any float dtype; float32 memmaps, as cached, are read without a copy).

    Heads given the same x_train array (the designs on one pooled map) train as one task, in lockstep:
    each batch is gathered once and every head of the map steps on it. Each head draws the same batches
    it would alone (the permutation depends on the seed and the row count only) and keeps its own
    weights, optimiser and early stopping, so lockstep changes no result; it cuts the batch gathers, the
    largest cost after the arithmetic, by a third (122 map-epochs for 186 head-epochs, bench/exits.py).
    Tasks run most expensive first, in parallel.

    Successive halving (Jamieson & Talwalkar 2016), when `keep` is given: every head trains the first
    `config.rung` of its first epoch's batches, at least `config.rung_rows` rows (a fixed subsample of the
    rows: the cheap first rung of Hyperband, Li et al. 2018); keep(validation accuracy there per head, None for one already finished, 0)
    says which go on, the others stop there with the rung's weights (`FitResult.epochs == config.rung`,
    rounded up to whole batches; dropped when below the NA drop threshold). The heads that go on finish the
    epoch on the same batches, so they train exactly as without a rung, and meet a second rung there:
    keep(first-epoch accuracies, 1); the heads it turns down keep their first-epoch weights (epochs == 1).
    With `rung` 1.0 the only rung is after one epoch (keep(…, 0) on first-epoch accuracies).
    A head's result depends on its spec, its data, the config and (through `keep`) on the heads trained
    beside it, never on threads.
    `on_done(finished, total)` is called as heads finish (from the calling thread).
    """
    threads = torch.get_num_threads()
    # Initial weights come from the global RNG, so they are drawn here, one seed per head, in order.
    trainers = [_Trainer(spec, x, y_train, xv, y_val, config) for spec, x, xv in zip(specs, x_train, x_val)]
    by_map: dict[int, list[int]] = {}
    for k, t in enumerate(trainers):
        by_map.setdefault(id(t.x), []).append(k)
    groups = sorted(by_map.values(), key=lambda ks: -sum(trainers[k].cost for k in ks))
    workers = max(1, min(len(groups), config.threads or os.cpu_count() or 1))
    done: dict[int, FitResult] = {}

    def finished(pairs: list[tuple[int, FitResult | None]]) -> None:
        for k, result in pairs:
            if result is not None:
                done[k] = result
                if on_done:
                    on_done(len(done), len(trainers))

    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="eecc-fit") as pool:
            maps = [[trainers[k] for k in ks] for ks in groups]
            for group, stats in zip(maps, pool.map(_sample_stats, [g[0].x for g in maps])):
                for t in group:
                    t.stats = stats  # the designs on one map share its channel statistics
            _each(pool, [partial(_first, [(k, trainers[k]) for k in ks], keep is not None) for ks in groups], finished)
            if keep is not None:
                _halve(keep, 0, [t.rung_accuracy for t in trainers], trainers, done, finished)
                if any(t.cut is not None for t in trainers):  # the rung was inside the first epoch: end it
                    _each(pool, [partial(_end_first, pairs) for pairs in _left(groups, trainers, done)], finished)
                    _halve(keep, 1, [t.first_accuracy for t in trainers], trainers, done, finished)
            _each(pool, [partial(_rest, pairs) for pairs in _left(groups, trainers, done)], finished)
    finally:
        torch.set_num_threads(threads)
    return [done[k] for k in range(len(trainers))]


def predict_many(modules: Sequence[HeadModule], features: Sequence[np.ndarray],
                 workers: int | None = None) -> list[np.ndarray]:
    """`predict(modules[k], features[k])` for every k, on `workers` threads (default: the cores) of one torch
    thread each. Heads are small: with intra-op threads their ops mostly wait at barriers (the 62 heads of
    bench/exits.py on the 5000 test rows: 0.7 s CPU on one thread, 4.0 s on two, load 4.5). Deterministic:
    each head's logits come from one thread whatever `workers` is.
    """
    threads = torch.get_num_threads()

    def one(k: int) -> np.ndarray:
        torch.set_num_threads(1)
        return predict(modules[k], features[k])

    try:
        with ThreadPoolExecutor(max(1, workers or os.cpu_count() or 1), thread_name_prefix="eecc-predict") as pool:
            return list(pool.map(one, range(len(modules))))
    finally:
        torch.set_num_threads(threads)  # torch's thread count is (partly) process-wide: restored for the caller


def _each(pool: ThreadPoolExecutor, calls: list[Callable], finished) -> None:
    """Run calls[i]() on the pool; finished(its result) as each completes."""
    for future in as_completed([pool.submit(call) for call in calls]):
        finished(future.result())


def _halve(keep, rung: int, accuracy: list, trainers: list["_Trainer"], done: dict, finished) -> None:
    """Halving's rung `rung` (0: `config.rung` into the first epoch, 1: its end): keep(accuracy there per head,
    None for heads already finished; rung) says which go on; the others finish with their weights there."""
    go_on = keep([None if k in done else a for k, a in enumerate(accuracy)], rung)
    stopped = [k for k in range(len(trainers)) if k not in done and not go_on[k]]
    finished([(k, trainers[k].stop_at_rung() if rung == 0 else trainers[k].result()) for k in stopped])


def _left(groups: list[list[int]], trainers: list["_Trainer"], done: dict) -> list[list[tuple[int, "_Trainer"]]]:
    """Per map, the heads still training."""
    pairs = [[(k, trainers[k]) for k in ks if k not in done] for ks in groups]
    return [p for p in pairs if p]


def _first(pairs: list[tuple[int, "_Trainer"]], rung: bool = False) -> list[tuple[int, FitResult | None]]:
    """Set up the heads of one map and train them together up to halving's rung (`rung`: `config.rung` of
    the first epoch, else the whole epoch); a FitResult for each one dropped at the end of its first epoch."""
    torch.set_num_threads(1)
    heads = [t for _, t in pairs]
    for t in heads:
        t.setup(rung)
    _epoch(heads, 0, heads[0].cut)
    if heads[0].cut is not None:  # the rung is inside the epoch: scored there, the epoch ends in `_rest`
        for t in heads:
            t.rung_score = t.score()
            t.rung_accuracy = t.rung_score[1]
        return [(k, None) for k, _ in pairs]
    return [(k, t.after_first(*t.score())) for k, t in pairs]


def _end_first(pairs: list[tuple[int, "_Trainer"]]) -> list[tuple[int, FitResult | None]]:
    """The first epoch's batches after the rung, for the heads of one map; a FitResult for each one dropped."""
    torch.set_num_threads(1)
    heads = [t for _, t in pairs]
    _epoch(heads, heads[0].cut)
    return [(k, t.after_first(*t.score())) for k, t in pairs]


def _rest(pairs: list[tuple[int, "_Trainer"]]) -> list[tuple[int, FitResult]]:
    """The remaining epochs of the heads of one map, together, each with its own early stopping."""
    torch.set_num_threads(1)
    active = [t for _, t in pairs if t.goes_on()]
    while active:
        _epoch(active)
        for t in active:
            t.judge(*t.score())
        active = [t for t in active if t.goes_on()]
    return [(k, t.result()) for k, t in pairs]


def _epoch(heads: list["_Trainer"], start: int = 0, stop: int | None = None) -> None:
    """Batches [start, stop) (default: all) of one epoch of heads that share their training array, batch size
    and epoch count; start 0 begins a new epoch (draws its permutation)."""
    lead = heads[0]
    if start == 0:
        # Every head's generator draws the same permutation (same seed, rows and epoch): the lead's stands for all.
        perm = torch.randperm(len(lead.y), generator=lead.gen).numpy()
        for t in heads[1:]:
            torch.randperm(len(t.y), generator=t.gen)
        for t in heads:
            t.epoch, t.perm = t.epoch + 1, perm
    for t in heads:
        t.module.train()
    perm = lead.perm
    end = len(perm) if stop is None else min(len(perm), stop * lead.batch)
    for i in range(start * lead.batch, end, lead.batch):
        rows = np.sort(perm[i:i + lead.batch])  # a memmap reads forward; a batch is a set anyway
        # Gathered per batch so that the batch, not the data set, sits in cache; fp32 as cached: no copy.
        # np.take: 1.4-2.6x faster than fancy indexing on a memmap (measured on the cached maps).
        raw, y = np.asarray(np.take(lead.stored, rows, axis=0), np.float32), lead.y[torch.from_numpy(rows)]
        views: dict[bool, torch.Tensor] = {}  # the batch in each layout, made once for the heads that read it
        targets: dict[int, torch.Tensor] = {}  # and its labels one-hot
        for t in heads:
            major, classes = t.module.channel_major, t.spec.num_classes
            if major not in views:
                views[major] = t.layout(raw)
            if classes not in targets:
                targets[classes] = one_hot(y, classes)
            loss_and_grads(t.module, views[major], y, loss=False, onehot=targets[classes], position_major=lead.last)
        _Adam.step_all([t.opt for t in heads])


class _Trainer:
    """One head: its module, optimiser and early-stopping state; the epochs run in `_epoch`."""

    def __init__(self, spec: HeadSpec, x, y, x_val, y_val, config: TrainConfig):
        torch.manual_seed(config.seed)
        c = spec.channels
        self.module = HeadModule(spec, np.zeros(c, np.float32), np.ones(c, np.float32))
        self.spec, self.x, self.x_val, self.config = spec, x, x_val, config
        self.stored, self.last = stored_layout(x)  # rows gathered as stored: channels-last from the cache
        self.y = torch.from_numpy(np.asarray(y, np.int64))
        self.y_val = np.asarray(y_val, np.int64)
        self.positions = int(np.prod(spec.pooled_shape[1:], dtype=np.int64))
        self.cost = spec.head_macs * len(self.y)
        self.batch = max(8, min(config.batch_size, math.ceil(len(self.y) / config.min_steps)))
        self.stats: tuple[np.ndarray, np.ndarray] | None = None  # channel mean, std: set by fit_heads

    def setup(self, rung: bool = False) -> None:
        """Standardisation, generator, optimiser; `cut`: the batches before halving's rung when `rung` puts
        it inside the first epoch (`config.rung` < 1), else None."""
        cfg, module = self.config, self.module
        mean, std = self.stats
        with torch.no_grad():
            module.mean.copy_(torch.from_numpy(mean).reshape(module.mean.shape))
            module.std.copy_(torch.from_numpy(std).reshape(module.std.shape))
        self.gen = torch.Generator().manual_seed(cfg.seed)
        per_epoch = math.ceil(len(self.y) / self.batch)
        steps = cfg.epochs * per_epoch
        cut = max(1, math.ceil(cfg.rung * per_epoch), math.ceil(cfg.rung_rows / self.batch))
        self.cut = cut if rung and cut < per_epoch else None
        self.rung_fraction = cut / per_epoch
        self.opt = _Adam(list(module.parameters()), cfg.lr, cfg.weight_decay, steps)
        self.best = (math.inf, 0.0, None, None)  # loss, accuracy, state, val logits
        self.stale, self.epoch, self.rung_accuracy = 0, 0, None

    def after_first(self, loss: float, accuracy: float) -> FitResult | None:
        """Judge the first epoch; a FitResult only when the head is dropped there."""
        self.first_accuracy = accuracy
        if self.cut is None:
            self.rung_accuracy = accuracy
        if not self.beats_chance():
            return FitResult(self.module, accuracy, accuracy, loss, 1, dropped=True,  # as NA
                             rung_accuracy=None if self.cut is None else self.rung_accuracy)
        self.judge(loss, accuracy)
        return None

    def stop_at_rung(self) -> FitResult:
        """The result of a head that halving stops at the rung: its weights there (dropped when below the NA
        drop threshold)."""
        if self.cut is None:
            return self.result()  # the rung was at the end of the first epoch, judged by `after_first`
        loss, accuracy = self.rung_score
        self.first_accuracy = accuracy
        self.judge(loss, accuracy)
        out = self.result()
        out.epochs = self.rung_fraction
        out.dropped = not self.beats_chance()
        return out

    def goes_on(self) -> bool:
        return self.epoch < self.config.epochs and self.stale < self.config.patience

    def result(self) -> FitResult:
        """The best weights so far (by validation loss)."""
        loss, acc, state, logits = self.best
        self.module.load_state_dict(state)
        return FitResult(self.module, self.first_accuracy, acc, loss, self.epoch, dropped=False, val_logits=logits,
                         rung_accuracy=self.rung_accuracy)

    def score(self) -> tuple[float, float]:
        """Validation loss and accuracy of the current weights."""
        self._logits = predict(self.module, self.x_val)
        loss = float(nn.functional.cross_entropy(torch.from_numpy(self._logits), torch.from_numpy(self.y_val)))
        return loss, float((self._logits.argmax(1) == self.y_val).mean())

    def beats_chance(self) -> bool:
        """The NA drop rule on the last scored logits (eecc/exits/chance.py: chance is the split's commonest class,
        or on a skewed split 1/K in balanced accuracy)."""
        return beats_chance(self._logits.argmax(1), self.y_val, self.spec.num_classes, self.config.drop_margin)

    def judge(self, loss: float, acc: float) -> None:
        if loss < self.best[0] - 1e-4:
            self.best, self.stale = (loss, acc, copy.deepcopy(self.module.state_dict()), self._logits), 0
        else:
            self.stale += 1

    def layout(self, raw: np.ndarray) -> torch.Tensor:
        """A gathered fp32 batch of `stored` rows as this head reads it (modules.batch_layout)."""
        return batch_layout(raw, self.last, self.spec, self.module.channel_major)
