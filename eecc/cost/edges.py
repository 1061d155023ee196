"""A stage's edges in the cost model's features (eecc/cost/features.py): its inputs and outputs (io_features), and in int8
the ops at a stage's start that run before its quantisation (entry_features)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from eecc.cost.features import (BEFORE_QUANTIZE, FEATURES, FLOAT_IN_INT8, GROUPS, POOL, _INDEX, B, _dequant, _elems,
                                _float_edges, block)
from eecc.cost.kernels import table_dequantised


def entry_features(graph: gs.Graph, *, model_input: str | None = None) -> np.ndarray:
    """[len(FEATURES)] int8 correction of io_features for max pooling / reshapes that read a stage input
    (BEFORE_QUANTIZE): they run in float before the entry quantisation, which then converts their output;
    a float hand-off output among them is not dequantised. Zero when the stage starts with anything else."""
    f, outputs, deqs = np.zeros(B), {t.name for t in graph.outputs}, []  # deqs: elements not dequantised
    todo = [(t, t.name == model_input) for t in graph.inputs]
    while todo:
        x, dense = todo.pop()
        users = list(x.outputs)
        if len(users) != 1 or users[0].op not in BEFORE_QUANTIZE or not users[0].outputs:
            continue
        node, y = users[0], users[0].outputs[0]
        if node.op == "MaxPool":
            window = int(np.prod(node.attrs.get("kernel_shape", [1])))
            f[_INDEX["float_max"]] += _elems(y) * window
            f[_INDEX["pool"]] -= _elems(y) * window  # node_features priced it as an integer pool
        elif node.op in FLOAT_IN_INT8:  # already in float: no conversion edges of its own
            deq, quant = _float_edges(node)
            deqs.append(deq)
            f[_INDEX["in_dense"]] -= quant
        after = list(y.outputs)
        quantised = bool(after) and not (len(after) == 1 and after[0].op in BEFORE_QUANTIZE)
        dense_y = dense or node.op in POOL  # the max or mean of a window of ReLU outputs is seldom zero
        f[_INDEX["in_dense" if dense else "in_work"]] -= _elems(x)
        f[_INDEX["in_dense" if dense_y else "in_work"]] += _elems(y) if after else 0
        if y.name in outputs and not quantised:  # a float hand-off: not dequantised either
            deqs.append(_elems(y))
        todo.append((y, dense_y))
    out = np.zeros(len(FEATURES))
    for cpu, fmt in GROUPS:
        if fmt == "int8":
            cols = out[block(cpu, fmt)]  # a view
            cols += f
            for n in deqs:
                cols[_INDEX[_dequant(n, cpu)]] -= n
    return out


def io_features(inputs: list[int], outputs: list[int], *, dense: int = 0) -> np.ndarray:
    """[len(FEATURES)] of a stage's edges: hand-off input elements, `dense` model-input elements (int8 only: in
    fp32 nothing is converted, so they stay in_work), output elements per output tensor, the constant."""
    f = np.zeros(B)
    f[_INDEX["in_work"]] = float(sum(inputs))
    f[_INDEX["io_out"]] = float(sum(outputs))
    f[_INDEX["const"]] = 1.0
    out = np.tile(f, len(GROUPS))
    for cpu, fmt in GROUPS:
        cols = out[block(cpu, fmt)]  # a view
        cols[_INDEX["in_dense" if fmt == "int8" else "in_work"]] += dense
        table = sum(n for n in outputs if table_dequantised(n, cpu)) if fmt == "int8" else 0
        cols[_INDEX["io_out"]] -= table
        cols[_INDEX["dequant_table"]] += table
    return out
