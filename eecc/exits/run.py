"""run_exits: design the candidate heads, fill the feature cache, train every head, hand logits to the search."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx_graphsurgeon as gs

from eecc.data import cache as fcache
from eecc.data import footprint
from eecc.data.aside import can_fork, fill_aside
from eecc.model import ir
from eecc.data.splits import Splits, normalise, sample_shape
from eecc.errors import EeccError, SymbolicInputShape
from eecc.progress import progress as show_progress
from eecc.driver.executor import Executor, Forked, InProcess
from eecc.exits.family import expand, mark
from eecc.exits.heads import (DEFAULT_BUDGET, Design, ExitHead, HeadSpec, TrainConfig,
                              candidate_costs, design_from_blocks)
from eecc.exits.keys import config_key, head_key, run_keys
from eecc.exits.store import CandidateResult, load_trained, save_trained, stack_logits
from eecc.exits.train_task import TrainJob, fit_group, import_aside
from eecc.driver.pipeline import analyse
from eecc.passes.normalize_output import output_kind
from eecc.search.types import CandidateCost, ExitLogits, pair_name

__all__ = ["CandidateResult", "ExitsRun", "Plan", "plan_exits", "run_exits", "time_reference_pass"]


@dataclass
class Plan:
    """Everything known before training: the analysed graph, the head design and its costs."""

    graph: gs.Graph
    blocks: object  # fuse_blocks.BlockGraph
    design: Design
    costs: list[CandidateCost]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(ir.per_sample_shape(self.graph.inputs[0]))

    @property
    def num_classes(self) -> int:
        return int(self.blocks.head.num_classes)

    def splits(self, data, scale: float | None = None, seed: int = 0) -> Splits:
        """`data` (an .npz path, a dict of x_/y_ arrays or Splits) validated against this model."""
        return normalise(data, input_shape=self.input_shape, num_classes=self.num_classes, scale=scale, seed=seed)


@dataclass
class ExitsRun:
    plan: Plan
    results: list[CandidateResult]
    logits: ExitLogits
    timings: dict[str, float | None]
    peak_rss_mb: float
    warm: bool = False
    final_test_accuracy: float | None = None
    artifacts: Path | None = None
    extra: dict = field(default_factory=dict)
    tried: list[CandidateResult] = field(default_factory=list)  # every head trained (eecc/exits/family.py)

    def tried_logits(self) -> ExitLogits:
        """Logits of every trained (not dropped) head tried, tensors named "<tensor>|<design>"."""
        return ExitLogits.load(self.artifacts / "tried.npz")

    def pairs(self, pareto_only: bool = True) -> ExitLogits:
        """What the search chooses among: logits of every Pareto-optimal (or every) trained head of each
        location (eecc/exits/family.py), network order, rows named "<tensor>|<design>" (`pair_name`)."""
        every = self.tried_logits()
        row = {t: k for k, t in enumerate(every.tensors)}
        return every.take([row[pair_name(r.spec.tensor, r.spec.design)] for r in self.tried
                           if (r.pareto or not pareto_only) and not r.dropped])

    def offering(self, designs: dict[str, str]) -> "ExitsRun":
        """A copy whose `results`, `heads()` and `logits` hold, at each tensor of `designs`, the trained head of
        that design (the search's choice); other locations keep theirs. Raises KeyError for an untrained pair."""
        tried = {(r.spec.tensor, r.spec.design): r for r in self.tried}
        results = [replace(tried[(r.spec.tensor, designs[r.spec.tensor])], chosen=True)
                   if r.spec.tensor in designs else r for r in self.results]
        every = self.tried_logits()
        row = {t: k for k, t in enumerate(every.tensors)}
        alive = [r for r in results if not r.dropped]
        logits = every.take([row[pair_name(r.spec.tensor, r.spec.design)] for r in alive],
                            tensors=[r.spec.tensor for r in alive])
        return replace(self, results=results, logits=logits)

    def heads(self) -> list[ExitHead]:
        """Trained (non-dropped) heads in network order, ready for insert_exits."""
        return [ExitHead(r.spec, r.weights) for r in self.results if not r.dropped]

    def ece(self) -> dict[str, float]:
        """Test-split ECE (15 bins) of every kept head and of the original classifier ("final")."""
        from eecc.search.calibration import ece_by_tensor
        return ece_by_tensor(self.logits)

    def to_json(self) -> dict:
        ece = self.ece()
        return {
            "backbone_macs": int(self.plan.blocks.total_macs),
            "candidates": [{
                "tensor": r.spec.tensor, "head_macs": r.spec.head_macs, "exit_cost_macs": r.spec.exit_macs,
                "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy, "dropped": r.dropped,
                "ece": ece.get(r.spec.tensor), "design": r.spec.to_json(),
            } for r in self.results],
            "tried": [{"tensor": r.spec.tensor, **r.spec.to_json(), "exit_cost_macs": r.spec.exit_macs,
                       "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy, "dropped": r.dropped,
                       "epochs": r.epochs, "pareto": r.pareto, "chosen": r.chosen} for r in self.tried],
            "final_ece": ece.get("final"),
            "final_test_accuracy": self.final_test_accuracy,
            "output_kind": output_kind(self.plan.graph),
            "timings": self.timings,
            "peak_rss_mb": self.peak_rss_mb,
        }


def plan_exits(model, *, input_shape: Sequence[int] | None = None, budget: float = DEFAULT_BUDGET,
               data=None) -> Plan:
    """Candidate heads and their `CandidateCost`s, from the model alone (no data, no training). `data` (an .npz
    path or arrays), when given, only shapes the advice for a model with symbolic input dims."""
    try:
        graph, blocks = analyse(model, input_shape=input_shape)
    except SymbolicInputShape as exc:
        raise exc.with_data(sample_shape(data)) from None
    design = design_from_blocks(blocks, budget=budget)
    return Plan(graph, blocks, design, candidate_costs(blocks, design.heads))


def run_exits(model, data, *, input_shape: Sequence[int] | None = None, candidates: Sequence[str] | None = None,
              budget: float = DEFAULT_BUDGET, scale: float | None = None, cache_dir: str | Path | None = None,
              config=None, reference_pass: bool = False, progress: bool = False,
              threads: int | None = None, executor: Executor | None = None, head_set: str = "family",
              train_logits: bool = False) -> ExitsRun:
    """Train the candidate heads (all, or only `candidates`) and return their logits for the search.

    `data`: an .npz path, a dict of x_/y_ arrays, or `Splits`. Results are cached under `cache_dir`
    (default `$EECC_CACHE_DIR` or ./.eecc-cache): a second identical call trains nothing. Feature
    shards and heads run as tasks on `executor` (default: this process); every head is also stored
    under its own key (model, data, spec, config), so a run cut short redoes only unfinished heads.
    `head_set`: "family" trains every admitted head design per candidate and offers the search the best
    (eecc/exits/family.py); "blueprint" only the blueprint head.
    `train_logits`: also give every kept head's logits on the training split (`ExitLogits.train_logits`, for
    --calibrate-on train): one more heads pass over the training rows, so only on demand. They are kept with
    the run: a cached run without them computes them (heads reloaded, not retrained) on the first call asking.
    """
    config = config or TrainConfig()
    executor = executor or InProcess()
    plan = model if isinstance(model, Plan) else plan_exits(model, input_shape=input_shape, budget=budget)
    splits = plan.splits(data, scale, config.seed)
    if head_set not in ("family", "blueprint"):
        raise EeccError(f"run_exits: head_set='{head_set}'; choose family or blueprint")
    heads = _select(plan, candidates)
    if head_set == "family":
        heads = expand(plan.design, heads)
    timings: dict[str, float | None] = {"features_s": 0.0, "train_s": 0.0, "reference_pass_s": None,  # wall
                                        "features_cpu_s": 0.0, "train_cpu_s": 0.0, "reference_pass_cpu_s": None}
    root = fcache.cache_root(cache_dir)
    chunk_rows = _chunk_rows(plan)
    with show_progress(progress) as bar:
        clock = _Clock()
        model_key = fcache.model_digest(plan.graph)
        prints, labels, run_key = run_keys(model_key, splits, heads, config)
        store = root / model_key[:20] / f"trained-{run_key[:20]}"
        done = load_trained(store, heads) if (store / "report.json").exists() else None
        if done is not None and train_logits and done[1].train_logits is None:
            done = None  # the heads come back from their own cache below; only the train logits are computed
        if done is not None:
            results, logits, final_acc = done
            clock.lap(timings, "features")
        else:
            feats = _features(plan, splits, heads, root, model_key, prints, chunk_rows, threads, executor, bar)
            clock.lap(timings, "features")
            job = TrainJob(heads, feats["train"], feats["val"], splits.train.y, splits.val.y, config,
                            root / model_key[:20] / "heads",
                            [fcache.digest(model_key, prints["train"], prints["val"], labels, head_key(h, heads, config),
                                           config_key(replace(config, threads=None))) for h in heads],
                            test=feats.get("test"))
            results, logits, final_acc, every = _train_all(plan, heads, splits, feats, job, executor, bar,
                                                           train_logits)
            clock.lap(timings, "train")
            save_trained(store, results, logits, final_acc, every)
        if reference_pass:
            timings["reference_pass_s"], timings["reference_pass_cpu_s"] = footprint.reference_pass(
                plan.graph, splits, chunk_rows, threads, bar)
    offered = [results[k] for k in mark(results)]
    return ExitsRun(plan, offered, logits, timings, footprint.peak_rss_mb(), warm=done is not None,
                    final_test_accuracy=final_acc, artifacts=store, tried=results)


def _features(plan, splits, heads, root, model_key, prints, chunk_rows, threads, executor, bar) -> dict:
    """Every split's cached features (eecc.data.cache.SplitFeatures by split name), computed where missing.

    On this machine (one worker) the pass runs in a forked process while this one imports torch for the
    training (eecc/data/aside.py); whatever that process did not finish is computed here after it.
    """
    maps = list({h.feature_key: h for h in reversed(heads)}.values())[::-1]  # each pooled map once
    fc = fcache.FeatureCache(root, plan.graph, maps, model_key=model_key, chunk_rows=chunk_rows, threads=threads,
                             run_rows=_chunk_rows(plan, fcache.RUN_BYTES))
    tasks = {name: bar(f"features {name}") for name in prints}
    if executor.workers == 1 and can_fork():
        fill_aside(fc, dict(splits.items()), prints, tasks)
    else:
        import_aside("eecc.train.fit")  # torch's import (~1 s of a core) overlaps the feature pass
    return {name: fc.fill(split, fingerprint=prints[name], on_chunk=tasks[name], executor=executor)
            for name, split in splits.items()}


def time_reference_pass(plan: Plan, data, *, scale: float | None = None, seed: int = 0,
                        threads: int | None = None) -> tuple[float, float]:
    """Wall and CPU seconds of one plain onnxruntime pass over train + val, chunked as the feature pass is (the
    yardstick; CPU: eecc.data.footprint.cpu_seconds)."""
    splits = plan.splits(data, scale, seed)
    with show_progress(False) as bar:
        return footprint.reference_pass(plan.graph, splits, _chunk_rows(plan), threads, bar)


class _Clock:
    """Wall and CPU seconds (eecc.data.footprint.cpu_seconds: the forked head trainers too) of consecutive steps."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), footprint.cpu_seconds()

    def lap(self, timings: dict, step: str) -> None:
        """Record `<step>_s` and `<step>_cpu_s` since the last lap (or the start), and start the next step."""
        wall, cpu = time.perf_counter(), footprint.cpu_seconds()
        timings[f"{step}_s"], timings[f"{step}_cpu_s"] = wall - self.wall, cpu - self.cpu
        self.wall, self.cpu = wall, cpu


def _chunk_rows(plan: Plan, budget: int = fcache.CHUNK_BYTES) -> int:
    """Rows whose activations (every block's, and the input) take about `budget` bytes."""
    per_sample = sum(b.activation_bytes for b in plan.blocks.blocks) + 4 * int(np.prod(plan.input_shape))
    return fcache.chunk_rows_for(per_sample, budget)


def _select(plan: Plan, candidates: Sequence[str] | None) -> list[HeadSpec]:
    heads = plan.design.heads
    if candidates is None:
        return list(heads)
    known = {h.tensor for h in heads}
    unknown = [c for c in candidates if c not in known]
    if unknown:
        why = "; ".join(f"{t}: {plan.design.rejected[t]}" for t in unknown if t in plan.design.rejected)
        raise EeccError(f"run_exits: {unknown} are not candidate exits of this model"
                        + (f" ({why})" if why else "") + f"; choose from {sorted(known)}")
    wanted = set(candidates)
    return [h for h in heads if h.tensor in wanted]


def _fit_all(heads, job: TrainJob, executor: Executor) -> list:
    """Every head's FitResult, in `heads` order."""
    # One task per location (its head designs halve together: TrainConfig.halving), most expensive first,
    # on the executor's workers, or (local executor) on one forked process per core: threads of one
    # process serialise on the GIL (`Forked`). One task that threads over all heads inside fit_heads when
    # there is one core or one location. A head's weights depend on its own location's heads only.
    by_tensor: dict[str, list[int]] = {}
    for k, h in enumerate(heads):
        by_tensor.setdefault(h.tensor, []).append(k)
    cores = min(len(by_tensor), job.config.threads or os.cpu_count() or 1)
    if isinstance(executor, InProcess) and cores > 1:
        executor = Forked(cores)
    if executor.workers > 1:
        # Deeper locations first among equal head MACs: their heads train more epochs before early stopping
        # (ResNet fixture, CPU-s per task, 3 runs: /9 1.71 vs /8 1.29, /7 1.95 vs /5 1.35, /4 0.94 vs /2 0.71),
        # and a long task started last leaves a core idle: 2 workers then end 0.07 instead of 0.38 CPU-s apart.
        groups = sorted(by_tensor.values(), key=lambda ks: (-sum(heads[k].head_macs for k in ks), -ks[0]))
        job = replace(job, config=replace(job.config, threads=1))
    else:
        groups = [list(range(len(heads)))]
    fits = [None] * len(heads)
    for group, out in zip(groups, executor.map(fit_group, groups, shared=job)):
        for k, fit in zip(group, out):
            fits[k] = fit
    return fits


def _train_all(plan, heads, splits, feats, job: TrainJob, executor: Executor, bar, want_train: bool):
    from eecc.train.fit import predict_many
    from eecc.train.modules import export

    y_val = splits.val.y
    has_test = splits.test is not None
    y_test = splits.test.y if has_test else np.zeros(0, np.int64)
    final_val = feats["val"].final_logits()
    final_test = feats["test"].final_logits() if has_test else np.zeros((0, plan.num_classes), np.float32)
    task = bar("training heads")
    task(0, len(heads))
    fits = _fit_all(heads, job, executor)
    task(len(heads), len(heads))
    alive = [k for k in range(len(heads)) if not fits[k].dropped]
    if has_test:  # predicted by the training tasks (train_task.fit_group)
        test_logits = {k: fits[k].test_logits for k in alive}
    else:
        test_logits = {k: np.zeros((0, plan.num_classes), np.float32) for k in alive}
    train = None  # train-split logits only when asked: --calibrate-on train searches thresholds on them
    if want_train:
        train = (dict(zip(alive, predict_many([fits[k].module for k in alive],
                                              [feats["train"].features(heads[k]) for k in alive]))),
                 feats["train"].final_logits(), splits.train.y)
    results, val_logits = [], {}
    for k, (spec, fit) in enumerate(zip(heads, fits)):
        test_acc, weights = None, None
        if not fit.dropped:
            weights = export(fit.module)
            val_logits[k] = fit.val_logits
            if has_test:
                test_acc = float((test_logits[k].argmax(1) == y_test).mean())
        results.append(CandidateResult(spec, weights, fit.val_accuracy, test_acc, fit.first_epoch_accuracy,
                                       fit.epochs, fit.dropped))

    def stack(ks):
        return stack_logits(plan, [results[k].spec for k in ks], [val_logits[k] for k in ks],
                            [test_logits[k] for k in ks], final_val, final_test, y_val, y_test,
                            train=None if train is None else ([train[0][k] for k in ks], *train[1:]))

    every = stack(alive)
    every.tensors = [pair_name(results[k].spec.tensor, results[k].spec.design) for k in alive]
    logits = stack([k for k in mark(results) if not results[k].dropped])  # one head per location for the search
    final_acc = float((final_test.argmax(1) == y_test).mean()) if has_test else None
    return results, logits, final_acc, every

