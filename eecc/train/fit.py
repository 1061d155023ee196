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

from eecc.exits.heads import HeadSpec, TrainConfig, drop_threshold
from eecc.train.modules import HeadModule, loss_and_grads, one_hot, predict

STATS_ROWS = 8192


@dataclass
class FitResult:
    module: HeadModule
    first_epoch_accuracy: float
    val_accuracy: float
    val_loss: float
    epochs: int
    dropped: bool
    val_logits: np.ndarray | None = None  # of the kept (best) weights


def channel_stats(features: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over samples and positions, streamed so a memmap never loads whole."""
    c = features.shape[1]
    total, sq, count, shift = np.zeros(c), np.zeros(c), 0, None
    for start in range(0, len(features), chunk):
        x = _tensor(features[start:start + chunk])
        x = x.reshape(len(x), c, -1).float()
        if shift is None:  # sums around a rough mean: no cancellation in E[x²] − E[x]² when |mean| ≫ std
            shift = x.mean(dim=(0, 2), keepdim=True)
        x = x - shift
        total += x.sum(dim=(0, 2)).double().numpy()
        sq += (x * x).sum(dim=(0, 2)).double().numpy()
        count += x.numel() // c
    n = max(count, 1)
    centred = total / n
    std = np.sqrt(np.maximum(sq / n - centred * centred, 0.0))
    mean = centred + (shift.flatten().double().numpy() if shift is not None else 0.0)
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def _sample_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`channel_stats` of every len/STATS_ROWS-th row: the standardisation only conditions the
    optimisation (export folds it in), a spread sample is enough."""
    torch.set_num_threads(1)
    return channel_stats(features[::max(1, len(features) // STATS_ROWS)])


def fit_head(spec: HeadSpec, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             config: TrainConfig = TrainConfig()) -> FitResult:
    return fit_heads([spec], [x_train], y_train, [x_val], y_val, config)[0]


def fit_heads(specs: Sequence[HeadSpec], x_train: Sequence[np.ndarray], y_train: np.ndarray,
              x_val: Sequence[np.ndarray], y_val: np.ndarray, config: TrainConfig = TrainConfig(), *,
              on_done: Callable[[int, int], None] | None = None,
              keep: Callable[[list[float | None]], list[bool]] | None = None) -> list[FitResult]:
    """Train heads[k] on x_train[k] (any float dtype; float32 memmaps, as cached, are read without a copy).

    Heads given the same x_train array (the designs on one pooled map) train as one task, in lockstep:
    each batch is gathered once and every head of the map steps on it. Each head draws the same batches
    it would alone (the permutation depends on the seed and the row count only) and keeps its own
    weights, optimiser and early stopping, so lockstep changes no result; it cuts the batch gathers, the
    largest cost after the arithmetic, by a third (122 map-epochs for 186 head-epochs, bench/exits.py).
    Tasks run most expensive first, in parallel.

    Successive halving (Jamieson & Talwalkar 2016, one rung), when `keep` is given: every head trains one
    epoch; keep(first-epoch validation accuracy per head, None for a dropped one) says which go on, the
    others stop there with their first-epoch weights (`FitResult.epochs == 1`). A head's result depends on
    its spec, its data, the config and (through `keep`) on the heads trained beside it, never on threads.
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
            _each(pool, [partial(_first, [(k, trainers[k]) for k in ks]) for ks in groups], finished)
            go_on = [k not in done for k in range(len(trainers))]
            if keep is not None:
                go_on = keep([None if k in done else trainers[k].first_accuracy for k in range(len(trainers))])
                finished([(k, trainers[k].result()) for k in range(len(trainers)) if k not in done and not go_on[k]])
            rest = [[(k, trainers[k]) for k in ks if k not in done] for ks in groups]
            _each(pool, [partial(_rest, pairs) for pairs in rest if pairs], finished)
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


def _first(pairs: list[tuple[int, "_Trainer"]]) -> list[tuple[int, FitResult | None]]:
    """Set up the heads of one map and train their first epoch together; a FitResult for each dropped one."""
    torch.set_num_threads(1)
    for _, t in pairs:
        t.setup()
    _epoch([t for _, t in pairs])
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


def _epoch(heads: list["_Trainer"]) -> None:
    """One epoch of heads that share their training array, batch size and epoch count."""
    lead = heads[0]
    for t in heads:
        t.epoch += 1
        t.module.train()
    # Every head's generator draws the same permutation (same seed, rows and epoch): the lead's stands for all.
    perm = torch.randperm(len(lead.y), generator=lead.gen).numpy()
    for t in heads[1:]:
        torch.randperm(len(t.y), generator=t.gen)
    for i in range(0, len(perm), lead.batch):
        rows = np.sort(perm[i:i + lead.batch])  # a memmap reads forward; a batch is a set anyway
        # Gathered per batch so that the batch, not the data set, sits in cache; fp32 as cached: no copy.
        # np.take: 1.4-2.6x faster than fancy indexing on a memmap (measured on the cached maps).
        raw, y = np.asarray(np.take(lead.x, rows, axis=0), np.float32), lead.y[torch.from_numpy(rows)]
        views: dict[bool, torch.Tensor] = {}  # the batch in each layout, made once for the heads that read it
        targets: dict[int, torch.Tensor] = {}  # and its labels one-hot
        for t in heads:
            major, classes = t.module.channel_major, t.spec.num_classes
            if major not in views:
                views[major] = t.layout(raw)
            if classes not in targets:
                targets[classes] = one_hot(y, classes)
            loss_and_grads(t.module, views[major], y, loss=False, onehot=targets[classes])
        _Adam.step_all([t.opt for t in heads])


class _Trainer:
    """One head: its module, optimiser and early-stopping state; the epochs run in `_epoch`."""

    def __init__(self, spec: HeadSpec, x, y, x_val, y_val, config: TrainConfig):
        torch.manual_seed(config.seed)
        c = spec.channels
        self.module = HeadModule(spec, np.zeros(c, np.float32), np.ones(c, np.float32))
        self.spec, self.x, self.x_val, self.config = spec, x, x_val, config
        self.y = torch.from_numpy(np.asarray(y, np.int64))
        self.y_val = np.asarray(y_val, np.int64)
        self.positions = int(np.prod(spec.pooled_shape[1:], dtype=np.int64))
        self.cost = spec.head_macs * len(self.y)
        self.batch = max(8, min(config.batch_size, math.ceil(len(self.y) / config.min_steps)))
        self.stats: tuple[np.ndarray, np.ndarray] | None = None  # channel mean, std: set by fit_heads

    def setup(self) -> None:
        cfg, module = self.config, self.module
        mean, std = self.stats
        with torch.no_grad():
            module.mean.copy_(torch.from_numpy(mean).reshape(module.mean.shape))
            module.std.copy_(torch.from_numpy(std).reshape(module.std.shape))
        self.gen = torch.Generator().manual_seed(cfg.seed)
        steps = cfg.epochs * math.ceil(len(self.y) / self.batch)
        self.opt = _Adam(list(module.parameters()), cfg.lr, cfg.weight_decay, steps)
        self.best = (math.inf, 0.0, None, None)  # loss, accuracy, state, val logits
        self.stale, self.epoch = 0, 0

    def after_first(self, loss: float, accuracy: float) -> FitResult | None:
        """Judge the first epoch; a FitResult only when the head is dropped there."""
        self.first_accuracy = accuracy
        if accuracy < drop_threshold(self.y_val, self.spec.num_classes, self.config.drop_margin):
            return FitResult(self.module, accuracy, accuracy, loss, 1, dropped=True)  # as NA
        self.judge(loss, accuracy)
        return None

    def goes_on(self) -> bool:
        return self.epoch < self.config.epochs and self.stale < self.config.patience

    def result(self) -> FitResult:
        """The best weights so far (by validation loss)."""
        loss, acc, state, logits = self.best
        self.module.load_state_dict(state)
        return FitResult(self.module, self.first_accuracy, acc, loss, self.epoch, dropped=False, val_logits=logits)

    def score(self) -> tuple[float, float]:
        """Validation loss and accuracy of the current weights."""
        self._logits = predict(self.module, self.x_val)
        loss = float(nn.functional.cross_entropy(torch.from_numpy(self._logits), torch.from_numpy(self.y_val)))
        return loss, float((self._logits.argmax(1) == self.y_val).mean())

    def judge(self, loss: float, acc: float) -> None:
        if loss < self.best[0] - 1e-4:
            self.best, self.stale = (loss, acc, copy.deepcopy(self.module.state_dict()), self._logits), 0
        else:
            self.stale += 1

    def layout(self, raw: np.ndarray) -> torch.Tensor:
        """A gathered fp32 batch [rows, C, *pooled] as this head reads it: [rows, C·P] for channel-major
        heads (a view), else [rows, positions, C]."""
        if self.module.channel_major:
            return torch.from_numpy(raw.reshape(len(raw), -1))
        x = torch.from_numpy(raw).reshape(len(raw), self.spec.channels, self.positions)
        return torch.empty(len(raw), self.positions, self.spec.channels).copy_(x.transpose(1, 2))


class _Adam:
    """Adam (L2 weight decay, as torch.optim.Adam) with a cosine learning-rate decay to zero over `steps`.

    Written out because the heads have four small tensors: torch.optim's per-step bookkeeping cost more
    than the update, and its first construction imports torch._dynamo (seconds of CPU). The step is
    torch's fused CPU kernel (`torch.optim.Adam(fused=True)`'s, one call for all of a head's tensors:
    4x cheaper than six elementwise ops on them). The parameters become views of one flat buffer.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float, steps: int,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.wd, self.steps, self.betas, self.eps = params, lr, weight_decay, steps, betas, eps
        with torch.no_grad():
            self.flat = torch.cat([p.detach().reshape(-1) for p in params])
            self.m = torch.zeros_like(self.flat)
            self.v = torch.zeros_like(self.flat)
            self._views = [[], [], []]
            at = 0
            for p in params:
                p.data = self.flat[at:at + p.numel()].view_as(p)
                for views, buf in zip(self._views, (self.flat, self.m, self.v)):
                    views.append(buf[at:at + p.numel()].view_as(p))
                at += p.numel()
        self._t = [torch.zeros((), dtype=torch.float32) for _ in params]  # the kernel's step counters
        self.t = 0

    def step(self) -> None:
        _Adam.step_all([self])

    def _rate(self) -> tuple:
        """What one fused kernel call needs to be the same for every optimiser it steps."""
        lr = self.lr * 0.5 * (1 + math.cos(math.pi * min(self.t, self.steps) / self.steps))
        return lr, self.wd, self.betas, self.eps

    @staticmethod
    @torch.no_grad()
    def step_all(opts: Sequence["_Adam"]) -> None:
        """`step()` of every optimiser in `opts`, those of equal rate in one fused kernel call: the kernel
        updates each tensor on its own (elementwise, with the tensor's own step count), so the result is
        the same bits as one call per optimiser, with a tenth of the dispatches for a map's heads."""
        by_rate: dict[tuple, list[_Adam]] = {}
        for opt in opts:
            by_rate.setdefault(opt._rate(), []).append(opt)
        for (lr, wd, (b1, b2), eps), same in by_rate.items():
            params, grads, m, v, t = [], [], [], [], []
            for opt in same:
                opt.t += 1
                params += opt._views[0]
                grads += [p.grad for p in opt.params]
                m += opt._views[1]
                v += opt._views[2]
                t += opt._t
            torch._foreach_add_(t, 1)
            torch._fused_adam_(params, grads, m, v, [], t, lr=lr, beta1=b1, beta2=b2, weight_decay=wd, eps=eps,
                               amsgrad=False, maximize=False)


def _tensor(a) -> torch.Tensor:
    """torch view of an array; a read-only one (e.g. a memmap opened "r") is copied, torch would warn."""
    a = np.asarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())
