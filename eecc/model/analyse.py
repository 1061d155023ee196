"""Model analysis: load an ONNX model, annotate its costs and find its blocks and candidate exits."""

from __future__ import annotations

import os
from typing import Sequence

import onnx
import onnx_graphsurgeon as gs

from eecc.model import ir
from eecc.passes.annotate_cost import annotate_cost
from eecc.passes.fuse_blocks import BlockGraph, fuse_blocks, read_blocks


def analyse(model: str | os.PathLike | onnx.ModelProto | gs.Graph, *,
            input_shape: Sequence[int] | None = None) -> tuple[gs.Graph, BlockGraph]:
    """Load (if needed), annotate costs and find blocks, candidate exits and the head blueprint."""
    if isinstance(model, gs.Graph):
        graph = model
    elif isinstance(model, onnx.ModelProto):
        graph = ir.from_model(model, input_shape=input_shape)
    else:
        graph = ir.load(model, input_shape=input_shape)
    graph = fuse_blocks(annotate_cost(graph))
    return graph, read_blocks(graph)
