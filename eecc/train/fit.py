"""Train one exit head on cached features: Adam, large batches, early stopping on validation loss."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from eecc.heads import HeadSpec
from eecc.train.modules import HeadModule, predict


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 2
    seed: int = 0
    drop_margin: float = 0.02           # first-epoch accuracy must beat chance by this (or 3σ)
    ram_bytes: int = 1 << 30            # larger training features stream from the memmap per batch
    min_steps: int = 30                 # small data sets get smaller batches so one epoch means something
    threads: int | None = None          # None: 1 for tiny heads (more only adds contention), else torch's


@dataclass
class FitResult:
    module: HeadModule
    first_epoch_accuracy: float
    val_accuracy: float
    val_loss: float
    epochs: int
    dropped: bool


def channel_stats(features: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over samples and positions, streamed so a memmap never loads whole."""
    c = features.shape[1]
    total, sq, count = np.zeros(c), np.zeros(c), 0
    axes = (0, *range(2, features.ndim))
    for start in range(0, len(features), chunk):
        x = np.asarray(features[start:start + chunk], dtype=np.float64)
        total += x.sum(axis=axes)
        sq += (x * x).sum(axis=axes)
        count += x.size // c
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(sq / max(count, 1) - mean * mean, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def chance_level(y: np.ndarray, num_classes: int) -> float:
    """Accuracy of always answering the most frequent validation class."""
    return float(np.bincount(y, minlength=num_classes).max() / max(len(y), 1))


def drop_threshold(y_val: np.ndarray, num_classes: int, margin: float) -> float:
    chance = chance_level(y_val, num_classes)
    return chance + max(margin, 3 * math.sqrt(chance * (1 - chance) / max(len(y_val), 1)))


def fit_head(spec: HeadSpec, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             config: TrainConfig = TrainConfig()) -> FitResult:
    threads = torch.get_num_threads()
    tiny = spec.head_macs * config.batch_size < 20_000_000
    torch.set_num_threads(config.threads or (1 if tiny else threads))
    try:
        return _fit(spec, x_train, y_train, x_val, y_val, config)
    finally:
        torch.set_num_threads(threads)


def _fit(spec, x_train, y_train, x_val, y_val, config: TrainConfig) -> FitResult:
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    module = HeadModule(spec, *channel_stats(x_train))
    opt = torch.optim.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    in_ram = x_train.nbytes <= config.ram_bytes
    xt = torch.from_numpy(np.array(x_train)) if in_ram else None  # a writable copy in RAM
    yt = torch.from_numpy(np.asarray(y_train, np.int64))
    yv = np.asarray(y_val, np.int64)
    limit = drop_threshold(yv, spec.num_classes, config.drop_margin)
    batch = max(8, min(config.batch_size, math.ceil(len(yt) / config.min_steps)))
    best_loss, best_state, best_acc, first_acc, stale, epoch = math.inf, None, 0.0, 0.0, 0, 0
    for epoch in range(1, config.epochs + 1):
        module.train()
        for idx in torch.randperm(len(yt), generator=gen).split(batch):
            if in_ram:
                xb = xt[idx].float()
            else:
                idx = idx.sort().values  # sorted rows read a memmap sequentially
                xb = torch.from_numpy(np.asarray(x_train[idx.numpy()], dtype=np.float32))
            opt.zero_grad(set_to_none=True)
            loss_fn(module(xb), yt[idx]).backward()
            opt.step()
        logits = predict(module, x_val)
        val_loss = float(loss_fn(torch.from_numpy(logits), torch.from_numpy(yv)))
        val_acc = float((logits.argmax(1) == yv).mean())
        if epoch == 1:
            first_acc = val_acc
            if val_acc < limit:  # the NA flow's early termination of weak exits
                return FitResult(module, first_acc, val_acc, val_loss, epoch, dropped=True)
        if val_loss < best_loss - 1e-4:
            best_loss, best_acc, best_state, stale = val_loss, val_acc, copy.deepcopy(module.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    module.load_state_dict(best_state)
    return FitResult(module, first_acc, best_acc, best_loss, epoch, dropped=False)
