"""The passes of a compile, in order, in one place; every pass is followed by a check of what it made.

    analysis  ir.load ─▶ normalize (load-time passes, eecc/model/normalize.py) ─▶ normalize_output
              ─▶ annotate_cost ─▶ fuse_blocks                         (the candidate exits; before training)
    exits     insert_exits                                              (the chosen heads; after the search)
    stages    assign_targets ─▶ split_by_target ─▶ [insert_ensemble | attach_confidence] ─▶ insert_gates

Training, search, fine-tuning and NACHOS sit between the segments (eecc/driver/compile.py), so each
segment is its own Pipeline. After every pass each graph it returned must pass onnx.checker, have
typed and shaped inputs and outputs, and carry the annotations the pass promises on every node; a
failure is a compiler bug and raises GraphCheckError naming the pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import onnx
import onnx_graphsurgeon as gs

from eecc.errors import EeccError
from eecc.exits.heads import ExitHead
from eecc.model import ir
from eecc.passes.annotate_cost import annotate_cost
from eecc.passes.assign_targets import assign_targets
from eecc.passes.fuse_blocks import fuse_blocks
from eecc.passes.insert_ensemble import insert_ensemble
from eecc.passes.insert_exits import insert_exits
from eecc.passes.insert_gates import attach_confidence, insert_gates
from eecc.passes.normalize_output import normalize_output
from eecc.passes.split_by_target import split_by_target
from eecc.targets.platform import Platform

Graphs = list[gs.Graph]


class GraphCheckError(RuntimeError):
    """A pass returned a graph that fails the check after it: a bug in eecc, not in the user's input."""


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Graphs], Graphs]
    annotations: tuple[str, ...] = ()  # eecc annotations every node carries after this pass


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]
    check: bool = True

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def run(self, graphs: Graphs) -> Graphs:
        for step in self.steps:
            graphs = step.run(graphs)
            if self.check:
                for graph in graphs:
                    check_graph(graph, step)
        return graphs


def check_graph(graph: gs.Graph, step: Step) -> None:
    """onnx.checker, typed and shaped graph inputs/outputs, and the step's annotations on every node."""
    for t in (*graph.inputs, *graph.outputs):
        if t.dtype is None or t.shape is None:
            raise GraphCheckError(f"after {step.name}: graph '{graph.name}' tensor '{t.name}' has no dtype or shape")
    try:
        onnx.checker.check_model(ir.to_model(graph))
    except Exception as exc:  # export (onnx-graphsurgeon) or onnx.checker.ValidationError
        raise GraphCheckError(f"after {step.name}: graph '{graph.name}' fails onnx.checker: "
                              f"{str(exc).splitlines()[0]}") from None
    for key in step.annotations:
        bare = [n.name for n in graph.nodes if ir.get_ann(n, key) is None]
        if bare:
            raise GraphCheckError(f"after {step.name}: {len(bare)} node(s) of graph '{graph.name}' lack the "
                                  f"'{key}' annotation (first: '{bare[0]}')")


def _each(fn: Callable[[gs.Graph], gs.Graph]) -> Callable[[Graphs], Graphs]:
    return lambda graphs: [fn(g) for g in graphs]


# ---- the three segments, in compile order ------------------------------------------------------------

def analysis() -> Pipeline:
    """normalize_output ─▶ annotate_cost ─▶ fuse_blocks on a loaded graph (see `analyse`)."""
    return Pipeline((Step("normalize_output", _each(normalize_output)),
                     Step("annotate_cost", _each(annotate_cost), ("macs",)),
                     Step("fuse_blocks", _each(fuse_blocks), ("macs",))))


def exits(heads: Sequence[ExitHead], confidences: Sequence | None = None, shared_tensors: bool = False) -> Pipeline:
    """insert_exits: the chosen heads (and NACHOS' confidence branches) become extra graph outputs;
    `shared_tensors`: several candidate heads on one tensor (the int8 search's evaluation graph)."""
    return Pipeline((Step("insert_exits", _each(lambda g: insert_exits(g, heads=heads, confidences=confidences,
                                                                       shared_tensors=shared_tensors)),
                          ("macs",)),))


def stages(*, cuts: Sequence[str], processors: Sequence[str], thresholds: Sequence[float],
           metric: str = "max_softmax", platform: Platform | None = None, decision: str = "single",
           ensemble_weights: str = "desc", exit_graph: gs.Graph | None = None, numeric: str = "fp32") -> Pipeline:
    """assign_targets ─▶ split_by_target ─▶ [insert_ensemble | attach_confidence] ─▶ insert_gates.

    Gates go on every stage but the last. decision "ensemble": stage k decides on the AEP ensemble of
    exits 0..k; metric "learned" (NACHOS): `exit_graph` (the graph with the confidence branches) gives
    each stage its exit's learned confidence back before its gate compares it with the threshold. `numeric`:
    the format the stages will be built in ("int8" with --quantize int8), which the split's memory check sizes.
    """
    if len(thresholds) != len(cuts):
        raise EeccError(f"{len(cuts)} exits need {len(cuts)} thresholds, got {len(thresholds)}")
    if decision not in ("single", "ensemble"):
        raise EeccError(f"unknown decision '{decision}'; choose single or ensemble")
    # assign_targets leaves NACHOS' confidence branches unassigned (the split drops them; attach_confidence
    # brings each back into its stage), so "every node has a stage" is checked from the split on.
    steps = [Step("assign_targets", _each(lambda g: assign_targets(g, cuts=cuts, processors=processors,
                                                                      platform=platform)), ("macs",)),
             Step("split_by_target", lambda gs_: split_by_target(gs_[0], platform=platform, numeric=numeric),
                  ("stage", "target"))]
    if decision == "ensemble":
        steps.append(Step("insert_ensemble", lambda st: [insert_ensemble(s, index=k, mode=ensemble_weights)
                                                         for k, s in enumerate(st)], ("stage",)))
    if metric == "learned":
        steps.append(Step("attach_confidence", lambda st: [attach_confidence(s, exit_graph) for s in st[:-1]]
                          + [st[-1]], ("stage",)))
    steps.append(Step("insert_gates", lambda st: [insert_gates(s, threshold=float(t), metric=metric)
                                                  for s, t in zip(st, thresholds)] + [st[-1]], ("stage",)))
    return Pipeline(tuple(steps))


def analyse(model: str | os.PathLike | onnx.ModelProto | gs.Graph, *, input_shape: Sequence[int] | None = None):
    """(annotated graph, BlockGraph): load (if needed), then the analysis segment, then read its blocks."""
    from eecc.passes.fuse_blocks import read_blocks

    from eecc.model import normalize

    graph = model if isinstance(model, gs.Graph) else normalize.load(model, input_shape=input_shape)
    (graph,) = analysis().run([graph])
    return graph, read_blocks(graph)


def make_stages(graph: gs.Graph, **placement) -> Graphs:
    """The gated stage graphs of an exit graph: the stages segment (keyword arguments as `stages`)."""
    return stages(**placement).run([graph])
