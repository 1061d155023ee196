"""The search's memory figures in the format the bundle is built in (fp32 as analysed, int8 as --quantize int8
builds it), computed by the same functions (eecc/model/stage_cost.py) on the same nodes as the check after the
split (passes/split_by_target.py), so a limit a placement breaks is refused before training, never after.

`StageMemory.stage(start, end, head)`: weights and peak live activations of the stage that runs the backbone
from cut `start` (None: the model input) to cut `end` (None: the original output) plus the exit head of design
`head` at `end`, as split_by_target's stage graph holds them:
  backbone  the nodes between the cuts (ancestors of `end` that do not reach back past `start`), in the analysed
            graph's order: fuse_blocks sorts it by depth (gs toposort), and a stage graph, sorted again, ranks
            the same nodes by depth from its hand-off, which shifts every one of them by the same amount
  head      the nodes insert_exits builds for that design (zero weights: sizes only), run after the backbone
            with the hand-off live (it is a stage output); one walk over both sizes the stage's arena
`plan_costs` gives the MACs and hand-off sizes (CandidateCost, ModelCost); memory has this one source.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import onnx_graphsurgeon as gs

from eecc.model import ir
from eecc.model.stage_cost import NUMERICS, live_peak, weight_bytes
from eecc.search.placement import ModelCost
from eecc.search.types import CandidateCost


class StageMemory:
    """Per-stage (weight bytes, peak activation bytes) of any placement of an eecc.exits.run.Plan (module doc)."""

    def __init__(self, plan, numeric: str):
        from eecc.exits.family import expand

        if numeric not in NUMERICS:
            raise ValueError(f"StageMemory: numeric must be one of {NUMERICS}, not {numeric!r}")
        self.graph, self.numeric = plan.graph, numeric
        self.order = {id(n): i for i, n in enumerate(plan.graph.nodes)}
        self.tensors = plan.graph.tensors()
        self.blueprint = {s.tensor: s for s in plan.design.heads}
        self.specs = {(s.tensor, s.design): s for s in expand(plan.design, plan.design.heads)}

    def figures(self, cuts, heads=None) -> tuple[list[int], list[int]]:
        """(weight bytes, peak bytes) per stage of the placement that cuts at `cuts` (network order) with head
        design `heads[k]` at cut k (None or empty: the blueprint heads)."""
        bounds = [None, *cuts, None]
        out = [self.stage(a, b, heads[k] if heads and b is not None else None)
               for k, (a, b) in enumerate(zip(bounds, bounds[1:]))]
        return [w for w, _ in out], [p for _, p in out]

    @functools.lru_cache(maxsize=None)
    def stage(self, start: str | None, end: str | None, head: str | None = None) -> tuple[int, int]:
        nodes, inputs, outputs = self._backbone(start, end)
        weights = weight_bytes(nodes, self.numeric)
        if end is not None:
            head_nodes, logits = self._head(end, head)
            nodes, outputs = [*nodes, *head_nodes], [*outputs, logits]
            weights += weight_bytes(head_nodes, self.numeric)
        return weights, live_peak(nodes, inputs, outputs, self.numeric == "int8")

    @functools.lru_cache(maxsize=None)
    def _backbone(self, start: str | None, end: str | None) -> tuple[list, list, list]:
        """(nodes, inputs, outputs) of the backbone between the cuts."""
        inputs = [self.tensors[start]] if start is not None else list(self.graph.inputs)
        outputs = [self.tensors[end]] if end is not None else list(self.graph.outputs)
        seen, todo = {}, [t for t in outputs]
        while todo:  # what split_by_target's cleanup keeps: ancestors of the outputs, cut at the entry
            t = todo.pop()
            if t.name == start or not isinstance(t, gs.Variable):
                continue
            for node in t.inputs:
                if id(node) not in seen:
                    seen[id(node)] = node
                    todo.extend(node.inputs)
        return sorted(seen.values(), key=lambda n: self.order[id(n)]), inputs, outputs

    @functools.lru_cache(maxsize=None)
    def _head(self, tensor: str, design: str | None) -> tuple[list, gs.Tensor]:
        """(nodes, logits) of the exit head of `design` at `tensor`, as insert_exits builds it (zero weights: sizes
        only); they run after the backbone, which reads `tensor` by name."""
        from eecc.exits.heads import ExitHead, HeadWeights
        from eecc.passes.insert_exits import insert_exits

        spec = self.blueprint[tensor] if design is None else self.specs[(tensor, design)]
        cut = self.tensors[tensor]
        x = gs.Variable(cut.name, dtype=cut.dtype or np.float32, shape=list(cut.shape))
        g = insert_exits(gs.Graph(inputs=[x], outputs=[x], opset=self.graph.opset),
                         heads=[ExitHead(spec, HeadWeights.zeros(spec))])
        return list(g.nodes), next(t for t in g.outputs if t.name != cut.name)


def plan_costs(plan) -> tuple[list[CandidateCost], ModelCost]:
    """(candidate costs, model cost) of an eecc.exits.run.Plan: the MACs and the float32 hand-off, input and result
    sizes the placements are priced with, in either format (int8 stage edges stay float32). Memory is StageMemory's
    alone: the byte figures here are the plan's fp32 block-level bounds, which placement.place reads only when it is
    given no StageMemory (synthetic tests)."""
    shape = ir.per_sample_shape(plan.graph.inputs[0])
    input_bytes = 4 * int(np.prod(shape)) if shape is not None else 0  # float32, in either format
    ends = {"input_bytes": input_bytes, "result_bytes": 4 * plan.num_classes}  # the logits go back as float32
    return list(plan.costs), replace(ModelCost.from_blocks(plan.blocks), **ends)
