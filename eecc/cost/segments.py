"""What a stage of any placement costs on a processor, before training: features of every piece of the
model cut at every candidate (eecc/cost/measure.all_cut_stages), summed per stage, times the fitted weights.

  features(stage from cut a to exit b) = Σ_{a<k≤b} (backbone_k + end_b,k) + start_{a+1} + head_b + gate_b
                                         + io(hand-off a → hand-off b, exit b)
                                         (head_b: the blueprint, or any design of its family, built on demand)
  features(last stage from cut a)      = Σ_{a<k≤n} backbone_k (incl. the classifier) + start_{a+1}
                                         + io(hand-off a → logits)
  backbone_k: piece k's nodes as they are inside the whole model (what reads and follows them is the next piece);
  start_k: what piece k costs more where it reads a stage input (in the stage from cut k-1 to the end; 0 for k = 0);
  end_b,k: what piece k ≤ b costs more where the exit at b follows (in the stage from the model input to that exit,
  with that head design). In int8 a float island (LeakyRelu, Sigmoid) quantises the tensor its pools end in, through
  pieces: the next piece's AveragePool output inside a stage, the exit head's pooled map before an exit (each piece
  priced in its all-cuts stage charged the head's pooling and quantisation to every stage through it: act.onnx,
  a Fashion-MNIST CNN of convs, LeakyReLU, AvgPool and SiLU: M4 int8 search 24.3 % over the built stage).
  (+ entry(a → b) in int8 where the piece after cut a starts with max pooling: built on demand, features.entry_features)
  seconds = instructions × CPI / clock_hz   (a fitted processor with a clock), else MACs / macs_per_s (nominal)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from eecc.model import ir
from eecc.cost.edges import entry_features, io_features
from eecc.cost.features import FEATURES, graph_features, named, node_features
from eecc.cost.kernels import GPU
from eecc.cost.model import CPI, CostModel, default_model

NOMINAL = "nominal MAC/s (platform TOML)"
MEASURED = "measured cost model (TVM + QEMU instruction counts)"
ESTIMATED = "estimated (the cost model prices op kinds it never measured by analogy: eecc/cost/coverage.py)"


def overhead_s(proc, features: np.ndarray | None) -> float:
    """Seconds a processor driven from the host (a GPU) adds to a stage beyond its MACs:
        launch_s · kernels + transfer_s_per_byte · 4 · (input + output elements)
    with kernels = the stage's kernels after TVM's operator fusion (elementwise ops after a conv, a matmul or a pool
    join its kernel: nu15 F6, a Conv + Clip or Conv + HardSigmoid + Mul counted 2-3 launches where the Mali plan has
    1) and its edge elements, read from the GPU block of its features (eecc/cost/features.py); 4 bytes per element
    (the stages handed to a GPU are float). 0 without the platform figures or features."""
    if features is None or not (proc.launch_s or proc.transfer_s_per_byte):
        return 0.0
    f = named(features, GPU, "fp32")
    return proc.launch_s * f["kernels"] + proc.transfer_s_per_byte * 4.0 * (f["in_work"] + f["io_out"])


@dataclass
class SegmentTable:
    """Per-piece features of one model cut at every designed head, in network order."""

    tensors: list[str]        # candidate tensors (cut k ends piece k)
    backbone: np.ndarray      # [n+1, F] backbone nodes of piece k inside the whole model (piece n: the rest + classifier)
    head: np.ndarray          # [n, F] exit head + gate at cut k
    handoff: list[int]        # elements per sample of tensor k
    input_elems: int
    classes: int
    plan: object = None       # eecc.exits.run.Plan: builds the other head designs' features on demand
    metric: str = "max_softmax"
    designs: dict = field(default_factory=dict)  # (tensor, design) -> ([F] exit head + gate, [n+1, F] end_b)
    entry_at: list[bool] = field(default_factory=list)  # piece k starts with ops run before the quantisation
    entries: dict = field(default_factory=dict)  # (start, end, design) -> [F] entry_features of that stage
    start: np.ndarray | None = None  # [n+1, F] start_k (module docstring); None: 0
    pieces: list = field(default_factory=list)  # node names of piece k

    @classmethod
    def from_plan(cls, plan, *, metric: str = "max_softmax") -> "SegmentTable":
        from eecc.cost.measure import all_cut_stages

        cuts, stages = all_cut_stages(plan, metric=metric)
        first = plan.graph.inputs[0].name
        pieces = [{n.name for n in s.nodes if ir.get_ann(n, "role") not in ("exit", "gate")} for s in stages]
        backbone = np.stack([_node_sum(plan.graph, p, first) for p in pieces])
        start = np.zeros_like(backbone)  # piece 0 reads the model input inside the whole model too
        for k in range(1, len(stages)):
            start[k] = _node_sum(_stage(plan, k - 1, metric, rest=True), pieces[k], first) - backbone[k]
        head = np.stack([graph_features(s, roles={"exit", "gate"}, with_io=False, model_input=first)
                         for s in stages[:-1]] + [np.zeros(len(FEATURES))])[:-1]  # [0, F] with no candidate
        elems = [int(np.prod(h.in_shape)) for h in plan.design.heads]
        inp = int(np.prod(ir.per_sample_shape(plan.graph.inputs[0])))
        entry_at = [bool(np.any(entry_features(s, model_input=first))) for s in stages]
        return cls(cuts, backbone, head, elems, inp, int(plan.num_classes), plan, metric, entry_at=entry_at,
                   start=start, pieces=pieces)

    def features(self, start: str | None, end: str | None, head: str | None = None) -> np.ndarray:
        """[F] of the stage from cut `start` (None: model input) to the exit at `end` (None: the final), with
        the exit head of design `head` (eecc/exits/family.py's HeadSpec.design; None: the blueprint)."""
        a = -1 if start is None else self.tensors.index(start)
        b = len(self.tensors) if end is None else self.tensors.index(end)
        f = self.backbone[a + 1:b + 1].sum(axis=0) + self.entry(start, end, head)
        f = f + (0 if self.start is None else self.start[a + 1])
        ins = {"inputs": [], "dense": self.input_elems} if start is None else {"inputs": [self.handoff[a]]}
        if end is None:
            return f + io_features(ins["inputs"], [self.classes], dense=ins.get("dense", 0))
        exit_f, ends = self.exit_features(b, head)
        return (f + exit_f + ends[a + 1:b + 1].sum(axis=0)
                + io_features(ins["inputs"], [self.handoff[b], self.classes, 1, 1], dense=ins.get("dense", 0)))

    def entry(self, start: str | None, end: str | None, design: str | None) -> np.ndarray:
        """[F] entry_features of the stage from `start` to `end` (zero unless the piece after `start` begins with
        ops that run before the quantisation; then the stage is built once with random head weights)."""
        a = -1 if start is None else self.tensors.index(start)
        if not self.entry_at or not self.entry_at[a + 1] or self.plan is None:
            return np.zeros(len(FEATURES))
        key = (start, end, design)
        if key not in self.entries:
            from eecc.cost.measure import dummy_heads
            from eecc.driver.pipeline import make_stages
            from eecc.exits.family import family
            from eecc.passes.insert_exits import insert_exits

            specs = {h.tensor: h for h in self.plan.design.heads}
            if end is not None and design is not None:
                specs[end] = next((s for s in family(specs[end]) if s.design == design), specs[end])
            cuts = [t for t in (start, end) if t is not None]
            graph = insert_exits(self.plan.graph, heads=dummy_heads([specs[t] for t in cuts]))
            stage = make_stages(graph, cuts=cuts, processors=[f"p{k}" for k in range(len(cuts) + 1)],
                                thresholds=[0.5] * len(cuts), metric=self.metric)[0 if start is None else 1]
            self.entries[key] = entry_features(stage, model_input=self.plan.graph.inputs[0].name)
        return self.entries[key]

    def head_features(self, b: int, design: str | None) -> np.ndarray:
        """[F] exit head + gate at cut b in `design` (built once with random weights, then cached)."""
        return self.exit_features(b, design)[0]

    def exit_features(self, b: int, design: str | None) -> tuple[np.ndarray, np.ndarray]:
        """([F] exit head + gate at cut b in `design`, [n+1, F] end_b: what that exit changes in pieces 0..b, i.e.
        the stage from the model input to it less their backbone); built once with random head weights, then
        cached. A design not of this candidate's family is priced as the blueprint (None: the blueprint)."""
        blueprint = None if self.plan is None else self.plan.design.heads[b]
        if blueprint is None:
            return self.head[b], np.zeros_like(self.backbone)
        from eecc.exits.family import family

        spec = next((s for s in family(blueprint) if s.design == design), blueprint)
        key = (self.tensors[b], spec.design)
        if key not in self.designs:
            first = self.plan.graph.inputs[0].name
            stage = _stage(self.plan, b, self.metric, spec=spec)
            head = self.head[b] if spec is blueprint else graph_features(stage, roles={"exit", "gate"},
                                                                        with_io=False, model_input=first)
            end = np.zeros_like(self.backbone)
            for k in range(b + 1):
                end[k] = _node_sum(stage, self.pieces[k], first) - self.backbone[k] if self.pieces else 0
            self.designs[key] = head, end
        return self.designs[key]


def _node_sum(graph, names: set[str], model_input: str) -> np.ndarray:
    """[F] Σ node_features of the nodes of `graph` named in `names`."""
    f = np.zeros(len(FEATURES))
    for node in graph.nodes:
        if node.name in names:
            f += node_features(node, model_input)
    return f


def _stage(plan, k: int, metric: str, *, spec=None, rest: bool = False):
    """The stage from the model input to the exit at the plan's cut k (head `spec`, default its blueprint), or with
    `rest` the one from cut k to the end of the model: the stages segment's passes without the graph check after
    each (the all-cuts split is checked; these copies are only priced: 2 per candidate, ~60 % of their time)."""
    from eecc.cost.measure import dummy_heads
    from eecc.driver.pipeline import stages
    from eecc.passes.insert_exits import insert_exits

    head = dummy_heads([spec or plan.design.heads[k]])
    unchecked = replace(stages(cuts=[head[0].spec.tensor], processors=["a", "b"], thresholds=[0.5], metric=metric),
                        check=False)
    return unchecked.run([insert_exits(plan.graph, heads=head)])[1 if rest else 0]


@dataclass
class DeviceCost:
    """Seconds of any stage on any processor of a platform, from the cost model where it covers the
    processor, else from the platform's nominal MAC/s; `fmt` is the numeric format of the stages."""

    platform: object
    table: SegmentTable | None
    fmt: str = "fp32"
    model: CostModel | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.model = self.model if self.model is not None else default_model()
        for p in self.platform.processors:
            self.sources[p.name] = MEASURED if self.measured(p) else NOMINAL

    def measured(self, proc) -> bool:
        return (self.model is not None and proc.clock_hz is not None and proc.kind in CPI
                and self.model.covers(proc.kind, self.fmt))

    def predict(self, proc_name: str, features: np.ndarray | None, macs: float) -> dict:
        """{"source", "instructions", "cycles", "seconds"} of a stage with these features on a processor."""
        proc = self.platform.processor(proc_name)
        if features is None or not self.measured(proc):
            extra = overhead_s(proc, features)
            return {"source": NOMINAL, "instructions": None, "cycles": None,
                    "seconds": float(macs) / proc.macs_per_s + extra, **({"overhead_s": extra} if extra else {})}
        n = float(self.model.instructions(features, proc.kind, self.fmt))
        cycles = n * CPI[proc.kind]
        return {"source": MEASURED, "instructions": n, "cycles": cycles, "seconds": cycles / proc.clock_hz}

    def seconds(self, proc_name: str, start: str | None, end: str | None, macs: float,
                head: str | None = None) -> float:
        """Seconds of the stage from cut `start` to the exit at `end` (None: the final) on a processor, with
        the exit head of design `head` (None: the blueprint)."""
        features = None if self.table is None else self.table.features(start, end, head)
        return self.predict(proc_name, features, macs)["seconds"]

    def to_json(self) -> dict:
        return {"format": self.fmt, "processors": dict(self.sources),
                **({"model": self.model.to_json()} if self.model is not None else {})}
