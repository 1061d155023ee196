"""NACHOS confidence training: the chosen exits learn logits and a confidence c_i jointly, on cached features.

Each exit is an eecc head (`HeadModule`) plus a confidence branch c_i = sigmoid(w_i · [GAP(x̂_i), max softmax(f_i)]
+ b_i) on its standardised, globally pooled features x̂_i and its own top probability (a linear map of
pooled features alone cannot tell "one class stands out" from which class it is). With c_final = 1 the
cumulative confidences

  c̄_i = c_i · Π_{k<i} (1 − c_k)   (i < E),   c̄_E = Π_{k<E} (1 − c_k)   (the frozen final classifier)

sum to 1 per sample and weight the cascade's soft prediction f̄ = Σ_i c̄_i softmax(f_i). The loss is

  L = ω1·L_acc + ω2·L_cost + ω3·L_peak
  L_acc  = Σ_{i<E} CE(f_i, y) + NLL(f̄, y)          (l(f_b, y) + l(f̄_{b−1}, y) of the issue, per exit)
  L_cost = max(0, γ̃ − F̄_M) / (F_M − F̄_M),  γ̃ = mean_n Σ_i c̄_i·cost_i   (cost_i: MACs of leaving at i)
  L_peak = mean_{i,n} (c_i − acc_i[y_n])²        (acc_i: exit i's per-class accuracy on the support set)

Schedule (NACHOS): epochs 1..μ1 train L_acc only; μ1+1..μ1+μ2 add L_cost; later epochs add L_peak.
Defaults (`NachosConfig`): ω = (1, 1, 1), μ1 = μ2 = 3, 12 epochs, F̄_M = 60 % of F_M unless a MAC
budget is given, support set = the first 20 training samples of every class (held out of the
training rows), Adam lr 1e-2 (weight decay 1e-4) with cosine decay, batch 256, seed 0. The exit rule
c_i ≥ ε is searched afterwards like any threshold (metric "learned", ε on the 13-quantile grid).
The frozen backbone's final logits enter only through f̄; training is deterministic for a given seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from eecc.errors import EeccError
from eecc.exits.heads import HeadSpec
from eecc.train.fit import channel_stats
from eecc.train.modules import HeadModule


@dataclass(frozen=True)
class NachosConfig:
    epochs: int = 12
    mu1: int = 3                 # warm-up epochs on L_acc alone
    mu2: int = 3                 # then L_cost joins; L_peak joins after mu1 + mu2
    w_acc: float = 1.0           # ω1
    w_cost: float = 1.0          # ω2
    w_peak: float = 1.0          # ω3
    budget: float = 0.6          # F̄_M as a fraction of F_M when no absolute MAC budget is given
    lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 256
    support_per_class: int = 20
    seed: int = 0


class NachosExits(nn.Module):
    """E heads with a confidence branch each; forward on standardised-inside inputs [N, positions, C]."""

    def __init__(self, specs: Sequence[HeadSpec], stats: Sequence[tuple[np.ndarray, np.ndarray]]):
        super().__init__()
        self.specs = list(specs)
        self.heads = nn.ModuleList(HeadModule(s, m, sd) for s, (m, sd) in zip(specs, stats))
        self.conf = nn.ModuleList(nn.Linear(s.channels + 1, 1) for s in specs)
        for lin in self.conf:  # start undecided (c = 0.5) so no exit is favoured before it learns
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, xs: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        logits, conf = [], []
        for head, lin, x in zip(self.heads, self.conf, xs):
            z = (x - head.mean) / head.std
            f = head.forward_standardised(z)
            top = torch.softmax(f, dim=1).amax(dim=1, keepdim=True)
            logits.append(f)
            conf.append(torch.sigmoid(lin(torch.cat([z.mean(dim=1), top], dim=1))).squeeze(1))
        return logits, torch.stack(conf)


@dataclass
class NachosResult:
    module: NachosExits
    config: NachosConfig
    budget_macs: float
    history: list[dict] = field(default_factory=list)  # per epoch: loss terms and their weights


def cumulative_confidence(conf: torch.Tensor) -> torch.Tensor:
    """[E, N] exit confidences → [E+1, N] c̄ (last row: the final classifier, c_final = 1); rows sum to 1."""
    passed = torch.cumprod(torch.cat([torch.ones_like(conf[:1]), 1 - conf]), dim=0)  # Π_{k<i}(1 − c_k)
    return torch.cat([conf * passed[:-1], passed[-1:]])


def nachos_terms(logits: Sequence[torch.Tensor], conf: torch.Tensor, final_logits: torch.Tensor, y: torch.Tensor,
                 costs: torch.Tensor, original_macs: float, budget_macs: float,
                 peak_target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The three loss terms for one batch; `peak_target` [E, N] = acc_i[y_n] (None: L_peak = 0)."""
    cbar = cumulative_confidence(conf)
    acc = sum(nn.functional.cross_entropy(z, y) for z in logits)
    probs = torch.stack([torch.softmax(z, dim=1) for z in [*logits, final_logits]])  # [E+1, N, C]
    mixed = (cbar.unsqueeze(2) * probs).sum(0)
    acc = acc + nn.functional.nll_loss(torch.log(mixed.clamp_min(1e-12)), y)
    expected = (cbar * costs.unsqueeze(1)).sum(0).mean()  # γ̃
    cost = torch.clamp(expected - budget_macs, min=0) / max(original_macs - budget_macs, 1.0)
    peak = (nn.functional.mse_loss(conf, peak_target) if peak_target is not None
            else torch.zeros((), dtype=conf.dtype))
    return {"acc": acc, "cost": cost, "peak": peak, "expected_macs": expected.detach()}


def support_rows(y: np.ndarray, per_class: int) -> np.ndarray:
    """A class-balanced slice: the first `per_class` rows of every class, in row order."""
    y = np.asarray(y)
    return np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)]))


def train_nachos(specs: Sequence[HeadSpec], x_train: Sequence[np.ndarray], y_train: np.ndarray,
                 final_train_logits: np.ndarray, costs: Sequence[float], original_macs: float, *,
                 budget_macs: float | None = None, config: NachosConfig = NachosConfig()) -> NachosResult:
    """Train the exits `specs` (network order) on their cached features `x_train` (rows aligned).

    `costs` [E+1]: MACs of a sample leaving at each exit and at the final classifier (policy.position_costs).
    """
    e, n = len(specs), len(y_train)
    if e == 0 or len(x_train) != e or len(costs) != e + 1:
        raise EeccError(f"train_nachos: {e} exits, {len(x_train)} feature arrays and {len(costs)} costs; "
                        "give one feature array per exit and one cost per exit plus the final classifier")
    if any(len(x) != n for x in x_train) or len(final_train_logits) != n:
        raise EeccError("train_nachos: features, final logits and labels must have the same rows "
                        "(the cache stores every candidate for the same samples)")
    budget = float(budget_macs if budget_macs is not None else config.budget * original_macs)
    if not 0 < budget < original_macs:
        raise EeccError(f"train_nachos: MAC budget {budget:.4g} must lie strictly between 0 and the "
                        f"original {original_macs:.4g} MACs; lower --max-macs or the budget fraction")
    torch.manual_seed(config.seed)
    xs = [_layout(x, s) for x, s in zip(x_train, specs)]
    y = torch.from_numpy(np.asarray(y_train, np.int64))
    final = torch.from_numpy(np.array(final_train_logits, np.float32))
    support = support_rows(y_train, config.support_per_class)
    rows = np.setdiff1d(np.arange(n), support) if len(support) < n // 2 else np.arange(n)
    stats = [channel_stats(np.asarray(x[rows]).transpose(0, 2, 1)) for x in xs]
    module = NachosExits(specs, stats)
    params = list(module.parameters())
    steps = config.epochs * math.ceil(len(rows) / config.batch_size)
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
    cost_t = torch.tensor(np.asarray(costs, np.float64), dtype=torch.float32)
    gen = torch.Generator().manual_seed(config.seed)
    result = NachosResult(module, config, budget)
    for epoch in range(1, config.epochs + 1):
        w_cost = config.w_cost if epoch > config.mu1 else 0.0
        use_peak = epoch > config.mu1 + config.mu2
        table = _support_accuracy(module, xs, y, support) if use_peak else None
        sums = {"acc": 0.0, "cost": 0.0, "peak": 0.0, "expected_macs": 0.0}
        perm = rows[torch.randperm(len(rows), generator=gen).numpy()]
        batches = 0
        module.train()
        for i in range(0, len(perm), config.batch_size):
            b = torch.from_numpy(np.sort(perm[i:i + config.batch_size]))
            logits, conf = module([x[b] for x in xs])
            target = table[:, y[b]] if table is not None else None
            t = nachos_terms(logits, conf, final[b], y[b], cost_t, original_macs, budget, target)
            loss = config.w_acc * t["acc"] + w_cost * t["cost"] + (config.w_peak if use_peak else 0.0) * t["peak"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for k in sums:
                sums[k] += float(t[k].detach())
            batches += 1
        result.history.append({"epoch": epoch, **{k: v / batches for k, v in sums.items()},
                               "w_cost": w_cost, "w_peak": config.w_peak if use_peak else 0.0})
    module.eval()
    return result


@torch.no_grad()
def predict_nachos(module: NachosExits, x: Sequence[np.ndarray], batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(logits [E, N, C] float32, confidence [E, N] float64) of every exit on cached features."""
    module.eval()
    n = len(x[0])
    logits = np.empty((len(x), n, module.specs[0].num_classes), np.float32)
    conf = np.empty((len(x), n), np.float64)
    for start in range(0, n, batch):
        xs = [_layout(a[start:start + batch], s) for a, s in zip(x, module.specs)]
        z, c = module(xs)
        logits[:, start:start + len(xs[0])] = torch.stack(z).numpy()
        conf[:, start:start + len(xs[0])] = c.double().numpy()
    return logits, conf


@torch.no_grad()
def _support_accuracy(module: NachosExits, xs, y: torch.Tensor, support: np.ndarray) -> torch.Tensor:
    """[E, classes]: each exit's accuracy per class on the support set (classes absent there: 0)."""
    module.eval()
    b = torch.from_numpy(support)
    logits, _ = module([x[b] for x in xs])
    classes = module.specs[0].num_classes
    count = torch.bincount(y[b], minlength=classes).clamp_min(1).float()
    table = torch.stack([torch.bincount(y[b], weights=(z.argmax(1) == y[b]).float(), minlength=classes) / count
                         for z in logits])
    module.train()
    return table


def _layout(x, spec: HeadSpec) -> torch.Tensor:
    """Cached [N, C, *pooled] (any float dtype, e.g. a float32 memmap) → fp32 [N, positions, C]."""
    a = np.asarray(x, dtype=np.float32).reshape(len(x), spec.channels, -1)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1)))


# --- NACHOS export (the ONNX heads of `passes/insert_exits.py` with `confidences=`) ---
@torch.no_grad()
def export_nachos(module: NachosExits) -> tuple[list, list[tuple[np.ndarray, float]]]:
    """(ExitHead per exit, (w [C+1], b) per confidence branch), standardisation folded in:
    w·[(GAP x − μ)/σ, top] + b = [w_f/σ, w_top]·[GAP x, top] + (b − w_f·μ/σ)."""
    from eecc.exits.heads import ExitHead
    from eecc.train.modules import export

    heads, branches = [], []
    for spec, head, lin in zip(module.specs, module.heads, module.conf):
        heads.append(ExitHead(spec, export(head)))
        w = lin.weight.double().flatten()
        mean, std = head.mean.double().flatten(), head.std.double().flatten()
        c = spec.channels
        folded = torch.cat([w[:c] / std, w[c:]])
        bias = float(lin.bias.double()[0] - (w[:c] / std) @ mean)
        branches.append((folded.float().numpy(), bias))
    return heads, branches
# --- end NACHOS export ---
