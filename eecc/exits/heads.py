"""Exit-head design rules. Kinds of head (`HeadSpec.kind`), each after a fixed max- or average-pool:

  gap   [1×1 conv + ReLU] → GAP → Flatten → Gemm           (the blueprint: the model's own classifier form)
  flat  [1×1 conv + ReLU] → Flatten → Gemm                  (keeps the pooled map's spatial layout)
  mlp   Flatten → Gemm(hidden) → ReLU → Gemm                (a small two-layer MLP on the pooled map)

MACs follow the README convention (Conv and Gemm only, per sample), P = prod(pooled spatial):
  gap   width·C·P [conv] + classes·(width or C)
  flat  width·C·P [conv] + classes·(width or C)·P
  mlp   hidden·C·P + classes·hidden
On an MLP's hidden vector (F,) there is nothing to pool (P = 1): the blueprint is `flat` without conv,
a Gemm on the vector like the model's own classifier, and `mlp` the two-layer head on it.
The family tried per candidate is in eecc/exits/family.py; the rules below shape the blueprint.
Rules, after NACHOS Algorithm 1: a head costs at most `budget`·total MACs, and
exit_macs(i) = backbone_macs(i) + head_macs(i) never exceeds exit_macs(i+1) nor the full model's
MACs; a head that breaks a rule is made cheaper by pooling more, then by dropping its conv, and a
candidate whose bare Gemm still breaks it is rejected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from eecc.errors import EeccError

DEFAULT_BUDGET = 0.02
MAX_WIDTH = 128
POOLED_SIZE = {1: 8, 2: 4}  # target spatial extent per dim after the fixed pooling, by rank


@dataclass(frozen=True)
class HeadSpec:
    """The design of one candidate's head; everything the feature pass and the trainer need."""

    tensor: str
    in_shape: tuple[int, ...]          # per sample: (C, H, W), (C, L), or (F,) (an MLP's hidden vector)
    pool: tuple[int, ...]              # MaxPool kernel = stride per spatial dim (ceil mode); 1 = none
    width: int | None                  # channels of the 1×1 conv; None = no conv
    num_classes: int
    backbone_macs: int                 # cumulative backbone MACs up to and including `tensor`
    kind: str = "gap"                  # gap | flat | mlp (module docstring)
    pool_op: str = "max"               # max | avg: the fixed pooling (kernel = stride = `pool`, ceil mode)
    hidden: int | None = None          # mlp: hidden width

    @property
    def channels(self) -> int:
        return self.in_shape[0]

    @property
    def pooled_shape(self) -> tuple[int, ...]:
        return (self.channels, *(math.ceil(d / p) for d, p in zip(self.in_shape[1:], self.pool)))

    @property
    def has_pool(self) -> bool:
        return any(p > 1 for p in self.pool)

    @property
    def positions(self) -> int:
        return int(np.prod(self.pooled_shape[1:], dtype=np.int64))

    @property
    def head_macs(self) -> int:
        p = self.positions
        if self.kind == "mlp":
            return int(self.hidden * self.channels * p + self.num_classes * self.hidden)
        conv = self.width * self.channels * p if self.width else 0
        return int(conv + self.num_classes * (self.width or self.channels) * (p if self.kind == "flat" else 1))

    @property
    def exit_macs(self) -> int:
        return self.backbone_macs + self.head_macs

    @property
    def params(self) -> int:
        p = self.positions
        if self.kind == "mlp":
            return self.hidden * (self.channels * p + 1) + self.num_classes * (self.hidden + 1)
        conv = self.width * (self.channels + 1) if self.width else 0
        return conv + self.num_classes * ((self.width or self.channels) * (p if self.kind == "flat" else 1) + 1)

    def weight_bytes(self, numeric: str = "fp32") -> int:
        """Stored weights: 4 B per parameter in fp32; in int8 (--quantize int8) the matrices 1 B per value and
        the biases (one per class and per conv channel or hidden unit) int32, 4 B."""
        if numeric == "fp32":
            return 4 * self.params
        return self.params + 3 * (self.num_classes + (self.hidden if self.kind == "mlp" else self.width or 0))

    @property
    def pool_kind(self) -> str:
        """The fixed pooling actually applied: no pooling is the same map whatever `pool_op` says."""
        return self.pool_op if self.has_pool else "none"

    @property
    def feature_key(self) -> str:
        """Identifies the cached (pooled) feature: same tensor and pooling → same cache file."""
        op = "avg" if self.pool_kind == "avg" else ""
        return f"{self.tensor}|{op}pool{'x'.join(map(str, self.pool if self.has_pool else [1] * len(self.pool)))}"

    @property
    def design(self) -> str:
        """Short label, e.g. 'gap max4x4 conv64', 'flat avg2x2', 'mlp avg2x2 h32'; on a vector 'flat vector'."""
        if not self.pool:  # an MLP's hidden vector: nothing pooled
            return f"{self.kind} vector{f' h{self.hidden}' if self.kind == 'mlp' else ''}"
        size = "x".join(map(str, self.pooled_shape[1:]))
        extra = f" conv{self.width}" if self.width else (f" h{self.hidden}" if self.kind == "mlp" else "")
        return f"{self.kind} {self.pool_kind if self.has_pool else 'none'}{size}{extra}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "pool_op": self.pool_kind, "pool": list(self.pool),
                "pooled_shape": list(self.pooled_shape), "width": self.width, "hidden": self.hidden,
                "head_macs": self.head_macs, "params": self.params, "design": self.design}

    def cheaper(self) -> "HeadSpec | None":
        """The next step of the shrinking rule, or None when only the bare Gemm is left."""
        spatial = self.in_shape[1:]
        if self.width and any(math.ceil(d / p) > 1 for d, p in zip(spatial, self.pool)):
            return replace(self, pool=tuple(min(d, 2 * p) for d, p in zip(spatial, self.pool)))
        if self.width:
            return replace(self, width=None)
        return None


# How eecc.train.fit computes each map's standardisation (channel_stats): it shapes the trained weights, so it
# enters the trained heads' cache keys (eecc/exits/run.py) and heads trained with other statistics are retrained.
STATS_RULE = "float64 sums of x and x^2 over every len/8192-th row"


@dataclass(frozen=True)
class TrainConfig:
    """How eecc.train.fit trains exit heads; defined here, without torch, so that a cached run needs none."""

    epochs: int = 5
    batch_size: int = 1024
    lr: float = 2e-2
    weight_decay: float = 1e-4
    patience: int = 2
    seed: int = 0
    drop_margin: float = 0.02           # first-epoch accuracy must beat chance by this (or 3σ)
    min_steps: int = 30                 # small data sets get smaller batches so one epoch means something
    threads: int | None = None          # heads trained at once; None: the machine's cores
    # Successive halving over a location's head designs (Jamieson & Talwalkar 2016, one rung): at the rung
    # only the heads on the front of (validation accuracy there, head MACs) train on (eecc/exits/family.py
    # `promising`); the others keep their weights from the rung.
    halving: bool = True
    # Where the rung is: after this fraction of the first epoch's batches (the cheap first rung of successive
    # halving / Hyperband, Li et al. 2018: a fixed subsample, here the epoch's first batches), but after at
    # least `rung_rows` rows (Hyperband's minimum resource: on fewer, ranking heads is noise; digits' 1000
    # rows at a quarter stopped the best head), else at the epoch's end. 1.0 = after one epoch. A head that
    # goes on finishes its epoch on the same batches: it trains as it would without a rung.
    rung: float = 0.25
    rung_rows: int = 8192


@dataclass(frozen=True)
class Design:
    heads: list[HeadSpec]              # accepted candidates, network order
    rejected: dict[str, str]           # tensor → why no head fits there
    budget_macs: int
    final_macs: int
    over_budget: dict[str, int] = field(default_factory=dict)  # tensor → MACs of its bare Gemm head > the budget
    budget: float = DEFAULT_BUDGET     # the head budget as a fraction of final_macs

    def budget_advice(self) -> str | None:
        """`pass --head-budget P%` for the smallest budget (0.1 % steps, rounded up) that admits the cheapest bare head
        the budget rejected, with why; None when the budget rejected none (a larger one would change nothing)."""
        if not self.over_budget:
            return None
        tensor, macs = min(self.over_budget.items(), key=lambda kv: kv[1])
        tenths = math.ceil(1000 * macs / self.final_macs - 1e-9)
        while int(tenths / 1000 * self.final_macs) < macs:  # int() as design_heads rounds the budget down
            tenths += 1
        return (f"pass --head-budget {tenths / 10:g}% to admit a head at '{tensor}' (its bare Gemm head costs "
                f"{macs:,} MACs, {100 * macs / self.final_macs:.2f} % of the model's {self.final_macs:,})")


def check_head_budget(budget: float) -> float:
    """`budget` if it is a share of the model's MACs in (0, 1]; else EeccError saying how to write one."""
    if not 0 < budget <= 1:
        raise EeccError(f"head budget {budget:g} must be a share of the model's MACs in (0, 1]: give a fraction "
                        "such as 0.05 or a percentage such as 5%")
    return budget


def parse_head_budget(text: str) -> float:
    """`--head-budget`: a fraction ('0.05') or a percentage ('5%') of the model's MACs, in (0, 1]."""
    try:
        value = float(text[:-1]) / 100 if text.strip().endswith("%") else float(text)
    except ValueError:
        raise EeccError(f"'{text}' is not a number; give a fraction such as 0.05 or a percentage "
                        "such as 5%") from None
    return check_head_budget(value)


def initial_head(tensor: str, shape: Sequence[int], *, num_classes: int, backbone_macs: int,
                 max_width: int = MAX_WIDTH) -> HeadSpec:
    shape = tuple(int(d) for d in shape)
    if len(shape) == 1:  # an MLP's hidden vector: a Gemm on it, as the model's own classifier
        return HeadSpec(tensor, shape, (), None, int(num_classes), int(backbone_macs), kind="flat")
    if len(shape) not in (2, 3):
        raise EeccError(f"design_heads: candidate '{tensor}' has per-sample shape {list(shape)}; exit heads "
                        "need (F,) vectors, (C, L) or (C, H, W) feature maps: exclude it from the candidates")
    target = POOLED_SIZE[len(shape) - 1]
    pool = tuple(max(1, math.ceil(d / target)) for d in shape[1:])
    return HeadSpec(tensor, shape, pool, min(shape[0], max_width), int(num_classes), int(backbone_macs))


def design_heads(candidates: Sequence[tuple[str, Sequence[int], int]], *, num_classes: int,
                 final_macs: int, budget: float = DEFAULT_BUDGET, max_width: int = MAX_WIDTH) -> Design:
    """candidates: (tensor, per-sample shape, cumulative backbone MACs) in network order."""
    check_head_budget(budget)
    budget_macs = int(budget * final_macs)
    rejected: dict[str, str] = {}
    over_budget: dict[str, int] = {}
    specs: list[HeadSpec | None] = []
    for tensor, shape, macs in candidates:
        spec = _shrink_until(initial_head(tensor, shape, num_classes=num_classes, backbone_macs=macs,
                                          max_width=max_width), lambda s: s.head_macs <= budget_macs)
        if spec is None:
            over_budget[tensor] = num_classes * shape[0]
            rejected[tensor] = (f"even a bare Gemm head ({num_classes * shape[0]} MACs) exceeds the budget "
                                f"of {budget_macs} MACs ({budget:.1%} of {final_macs})")
        specs.append(spec)
    limit = final_macs
    for i in reversed(range(len(specs))):
        if specs[i] is None:
            continue
        spec = _shrink_until(specs[i], lambda s: s.exit_macs <= limit)
        if spec is None:
            rejected[specs[i].tensor] = (f"exiting here costs more than exiting later ({limit} MACs) even with a "
                                         "bare Gemm head")
        else:
            limit = spec.exit_macs
        specs[i] = spec
    return Design([s for s in specs if s is not None], rejected, budget_macs, int(final_macs), over_budget, budget)


def design_from_blocks(block_graph, *, budget: float = DEFAULT_BUDGET, max_width: int = MAX_WIDTH) -> Design:
    """Heads for every candidate block of a `fuse_blocks.BlockGraph`."""
    cands = [(b.output, tuple(b.shape), int(b.cumulative_macs)) for b in block_graph.candidates()]
    return design_heads(cands, num_classes=int(block_graph.head.num_classes),
                        final_macs=int(block_graph.total_macs), budget=budget, max_width=max_width)


def candidate_costs(block_graph, heads: Sequence[HeadSpec]) -> list:
    """`CandidateCost` per head, from the block graph alone (no training needed)."""
    from eecc.search.types import CandidateCost

    by_output = {b.output: i for i, b in enumerate(block_graph.blocks)}
    costs = []
    for spec in heads:
        upto = block_graph.blocks[: by_output[spec.tensor] + 1]
        costs.append(CandidateCost(
            tensor=spec.tensor, backbone_macs=spec.backbone_macs, head_macs=spec.head_macs,
            handoff_bytes=4 * int(np.prod(spec.in_shape, dtype=np.int64)),
            weight_bytes_before=4 * int(sum(b.params for b in upto)),
            peak_activation_bytes_before=int(max(b.activation_bytes for b in upto)),
            head_weight_bytes=spec.weight_bytes(),
        ))
    return costs


def _shrink_until(spec: HeadSpec | None, ok) -> HeadSpec | None:
    while spec is not None and not ok(spec):
        spec = spec.cheaper()
    return spec


@dataclass
class HeadWeights:
    """Trained parameters of a head's trainable part, as the ONNX initializers want them."""

    fc_w: np.ndarray                   # [classes, F]  (Gemm transB=1); F: module docstring per kind
    fc_b: np.ndarray                   # [classes]
    conv_w: np.ndarray | None = None   # [width, C, 1] or [width, C, 1, 1]
    conv_b: np.ndarray | None = None   # [width]
    hid_w: np.ndarray | None = None    # mlp: [hidden, C·P]; flattened channel-major (c, then position)
    hid_b: np.ndarray | None = None    # mlp: [hidden]

    @staticmethod
    def shapes(spec: HeadSpec) -> dict[str, tuple[int, ...]]:
        """The shape of every weight `spec`'s head has."""
        rank = len(spec.in_shape) - 1
        fc_in = {"gap": spec.width or spec.channels, "flat": (spec.width or spec.channels) * spec.positions,
                 "mlp": spec.hidden}[spec.kind]
        want = {"fc_w": (spec.num_classes, fc_in), "fc_b": (spec.num_classes,)}
        if spec.width:
            want |= {"conv_w": (spec.width, spec.channels, *([1] * rank)), "conv_b": (spec.width,)}
        if spec.kind == "mlp":
            want |= {"hid_w": (spec.hidden, spec.channels * spec.positions), "hid_b": (spec.hidden,)}
        return want

    @classmethod
    def zeros(cls, spec: HeadSpec) -> "HeadWeights":
        """Untrained (zero) weights: a head whose graph is sized before training (eecc/search/memory.py)."""
        return cls(**{k: np.zeros(shape, np.float32) for k, shape in cls.shapes(spec).items()})

    def check(self, spec: HeadSpec) -> None:
        for name, shape in self.shapes(spec).items():
            got = getattr(self, name)
            if got is None or tuple(got.shape) != shape:
                raise EeccError(f"head for '{spec.tensor}': weight {name} has shape "
                                f"{None if got is None else list(got.shape)}, want {list(shape)}; "
                                "the weights were trained for another head design: retrain the heads")


@dataclass
class ExitHead:
    spec: HeadSpec
    weights: HeadWeights
