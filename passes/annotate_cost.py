"""annotate_cost(g) -> g' with per-node `macs`, `other_ops`, `params`, `weight_bytes`, `activation_bytes`.

MAC convention (README, "Counting"): multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul only,
per sample (batch dimension excluded):
  Conv           Cout·Hout·Wout·(Cin/groups)·Kh·Kw  = prod(out[1:]) · prod(W[1:])
  ConvTranspose  Cin·Hin·Win·(Cout/groups)·Kh·Kw    = prod(in[1:]) · prod(W[1:])
  Gemm / MatMul  prod(out[1:]) · K; M·K·N with every leading dim: where the batch is folded into the rows
                 (attention's out-projection, Gemm [N·tokens, dim]), the rows per sample (ir._batch_dim)
  RNN/GRU/LSTM   seq_length · (prod(W) + prod(R))     = seq_length · directions · gates · H · (I + H)
                 (ONNX operator spec: per time step and direction, every gate multiplies the input by its
                 W_g [H, I] and the hidden state by its R_g [H, H]; W [directions, gates·H, I] and
                 R [directions, gates·H, H] hold them all; gates: RNN 1, GRU 3 (z, r, h), LSTM 4 (i, o, f, c);
                 LSTM peepholes and the gates' nonlinearities are other ops)
Everything else (bias adds, BatchNormalization, activations, pooling, reductions) is counted as
"other ops": one per output element, times the window size for pooling and reductions, plus one per
output element for the bias of Conv/Gemm. The two are never mixed. An omitted optional output (name '',
e.g. a GRU's unused sequence output Y) is skipped.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from eecc.errors import EeccError
from eecc.model.ir import get_ann, sample_shape, set_ann

MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
RECURRENT_OPS = {"RNN", "GRU", "LSTM"}
WINDOW_OPS = {"MaxPool", "AveragePool", "LpPool"}
GLOBAL_OPS = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceSum"}
SHAPE_ONLY_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Transpose",
                  "Shape", "Gather", "Concat", "Constant", "Slice", "Cast", "ConstantOfShape", "Expand"}


def annotate_cost(graph: gs.Graph) -> gs.Graph:
    """Requires static per-sample shapes (ir.load provides them). Does not mutate its input."""
    graph = graph.copy()
    for node in graph.nodes:
        # Integer-only nodes compute shapes and indices (Shape -> Gather -> Div of a channel shuffle):
        # no MACs, no other ops, and their scalar outputs have no per-sample shape to ask for.
        shape_math = bool(node.outputs) and all(_is_integer(o) for o in node.outputs)
        macs, other = (0, 0) if shape_math else (_macs(node), _other_ops(node))
        # Integer constants are shapes and axes, not weights.
        weights = [w for w in _constant_inputs(node) if np.issubdtype(w.dtype, np.floating)]
        set_ann(node, "macs", int(macs))
        set_ann(node, "other_ops", int(other))
        set_ann(node, "params", int(sum(w.size for w in weights)))
        set_ann(node, "weight_bytes", int(sum(w.nbytes for w in weights)))
        set_ann(node, "activation_bytes", int(sum(_bytes(o) for o in _outputs(node))))
    return graph


def totals(graph: gs.Graph) -> dict[str, int]:
    keys = ("macs", "other_ops", "params", "weight_bytes")
    return {k: int(sum(get_ann(n, k, 0) for n in graph.nodes)) for k in keys}


def _constant_inputs(node: gs.Node) -> list[np.ndarray]:
    values = []
    for inp in node.inputs:
        if isinstance(inp, gs.Constant):
            values.append(np.asarray(inp.values))
        elif len(inp.inputs) == 1 and inp.inputs[0].op == "Constant":
            value = inp.inputs[0].attrs.get("value")
            if isinstance(value, gs.Constant):
                values.append(np.asarray(value.values))
    return values


def _shape(node: gs.Node, tensor: gs.Tensor, what: str) -> tuple[int, ...]:
    if isinstance(tensor, gs.Constant):
        return tuple(tensor.shape)
    if tensor.shape is not None and len(tensor.shape) == 0:
        return ()  # a scalar (e.g. attention's 1/sqrt(d) computed from a shape): no batch dim
    shape = sample_shape(tensor)
    if shape is None:
        raise EeccError(f"annotate_cost: node '{node.name}' ({node.op}) has {what} '{tensor.name}' with unknown "
                        f"shape {tensor.shape}; export with a static input shape or pass --input-shape")
    return shape


def _weight_shape(node: gs.Node, index: int) -> tuple[int, ...]:
    tensor = node.inputs[index]
    if isinstance(tensor, gs.Constant):
        return tuple(tensor.shape)
    if tensor.shape is None or not all(isinstance(d, int) for d in tensor.shape):
        raise EeccError(f"annotate_cost: weight '{tensor.name}' of '{node.name}' has unknown shape; "
                        "export weights as initializers")
    return tuple(tensor.shape)


def _outputs(node: gs.Node) -> list[gs.Tensor]:
    """The node's outputs that exist (an omitted optional output is a tensor named '')."""
    return [o for o in node.outputs if o.name]


def recurrent_macs(node: gs.Node) -> int:
    """MACs per sample of an RNN / GRU / LSTM node (module docstring); X is [seq, batch, I] (layout 0) or
    [batch, seq, I] (layout 1). Raises EeccError when the sequence length is not static."""
    x = node.inputs[0]
    seq = (x.shape or [None, None])[1 if int(node.attrs.get("layout", 0)) else 0]
    if not isinstance(seq, (int, np.integer)):
        raise EeccError(f"annotate_cost: node '{node.name}' ({node.op}) has input '{x.name}' with a dynamic "
                        f"sequence length (shape {x.shape}); export with a static input shape or pass --input-shape")
    return int(seq) * (math.prod(_weight_shape(node, 1)) + math.prod(_weight_shape(node, 2)))


def _macs(node: gs.Node) -> int:
    if node.op in RECURRENT_OPS:
        return recurrent_macs(node)
    if node.op not in MAC_OPS:
        return 0
    out = _shape(node, node.outputs[0], "output")
    if node.op == "Conv":
        return math.prod(out) * math.prod(_weight_shape(node, 1)[1:])
    if node.op == "ConvTranspose":
        return math.prod(_shape(node, node.inputs[0], "input")) * math.prod(_weight_shape(node, 1)[1:])
    a = node.inputs[0]
    a_shape = tuple(a.shape) if isinstance(a, gs.Constant) else _shape(node, a, "input")
    k = a_shape[0] if node.op == "Gemm" and node.attrs.get("transA", 0) else a_shape[-1]
    return math.prod(out) * int(k)


def _other_ops(node: gs.Node) -> int:
    if node.op in SHAPE_ONLY_OPS or not _outputs(node):
        return 0
    out_elems = math.prod(_shape(node, _outputs(node)[0], "output"))
    if node.op in MAC_OPS:
        return out_elems if len(node.inputs) > 2 else 0
    if node.op in WINDOW_OPS:
        return out_elems * math.prod(node.attrs.get("kernel_shape", [1]))
    if node.op in GLOBAL_OPS:
        return math.prod(_shape(node, node.inputs[0], "input"))
    return out_elems


def _bytes(tensor: gs.Tensor) -> int:
    shape = sample_shape(tensor) if isinstance(tensor, gs.Variable) else None
    if shape is None or tensor.dtype is None:
        return 0
    return math.prod(shape) * np.dtype(tensor.dtype).itemsize


def _is_integer(tensor: gs.Tensor) -> bool:
    return tensor.dtype is not None and np.issubdtype(np.dtype(tensor.dtype), np.integer)
