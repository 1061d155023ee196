"""The search's memory figures in the format the bundle is built in: fp32 as analysed, int8 as --quantize int8
builds it.

  fp32: weights 4 B per parameter, activations 4 B per element (the analysis graph is float32)
  int8: Conv/Gemm/MatMul weights 1 B, biases and other float constants 4 B (int32; split_by_target's
        int8_weight_bytes), activations 1 B per element; hand-offs stay float32 (stage edges are float), so a
        stage that ends in one holds that float32 buffer beside its int8 activations

The same sizes as the pre-build check after the search (passes/split_by_target.py, stage_cost), so a
placement the search keeps is not refused there for the format alone.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from eecc.model import ir
from eecc.passes.split_by_target import int8_weight_bytes
from eecc.search.placement import ModelCost
from eecc.search.types import CandidateCost

NUMERICS = ("fp32", "int8")


def memory_costs(plan, numeric: str) -> tuple[list[CandidateCost], ModelCost]:
    """(candidate costs, model cost) of an eecc.exits.run.Plan sized as `numeric`; fp32: the plan's own."""
    if numeric not in NUMERICS:
        raise ValueError(f"memory_costs: numeric must be one of {NUMERICS}, not {numeric!r}")
    blocks = plan.blocks
    shape = ir.per_sample_shape(plan.graph.inputs[0])
    input_bytes = 4 * int(np.prod(shape)) if shape is not None else 0  # float32, in either format
    if numeric == "fp32":
        return list(plan.costs), replace(ModelCost.from_blocks(blocks), input_bytes=input_bytes)
    nodes = {n.name: n for n in plan.graph.nodes}
    weights = [int8_weight_bytes(nodes[x] for x in b.nodes if x in nodes) for b in blocks.blocks]
    index = {b.output: i for i, b in enumerate(blocks.blocks)}
    heads = {h.tensor: h for h in plan.design.heads}
    costs = []
    for c in plan.costs:
        upto = index[c.tensor] + 1
        costs.append(replace(c, weight_bytes_before=sum(weights[:upto]),
                             peak_activation_bytes_before=max(b.activation_bytes for b in blocks.blocks[:upto]) // 4
                             + c.handoff_bytes,
                             head_weight_bytes=heads[c.tensor].weight_bytes(numeric)))
    model = ModelCost(int(blocks.total_macs), int8_weight_bytes(plan.graph.nodes),
                      max(b.activation_bytes for b in blocks.blocks) // 4, input_bytes)
    return costs, model
