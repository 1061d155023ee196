"""Per-op-kind work features of a stage graph: what the fitted cost model multiplies by instructions.

  f(stage) = Σ_nodes f(node) + io(stage) + [1 kernel per compute node] + [1]

Features, all per sample (batch excluded), MACs by the README convention:
  conv_macs   Conv with groups = 1 and a kernel > 1          Cout·spatial_out·Cin·prod(k)
  pw_macs     Conv with groups = 1 and a 1×1 kernel
  dw_macs     Conv with groups > 1 (depthwise / grouped)
  gemm_macs   Gemm, MatMul                                    prod(out[1:]) · K
  mac_out     output elements of those (bias, activation and requantisation epilogue)
  conv_cols   MACs / Cout of groups=1 convs: the im2col work of the tiled kernels (each output pixel's
              Cin·Kh·Kw inputs gathered once, whatever Cout), which dominates when Cout is small
  dw_plane    padded input elements of depthwise convs (each channel plane is copied padded first)
  pool        MaxPool / AveragePool: output elements × window; GlobalAveragePool / Reduce*: input elements
  eltwise     output elements of Add/Sub/Mul/Div/Relu/Clip/... (residual adds, unfused activations)
  head_macs   MACs of an exit head's Conv / Gemm (role "exit": its pooling and int8 lowering differ
  head_pool   its pooling work               from the backbone's, so the fit prices them apart)
  head_out    output elements of its Conv / Gemm / pooling
  gate        input elements of Softmax / LogSoftmax / Exp / ReduceMax / TopK (the exit gate, float even in int8)
  io_in       elements of the stage's inputs (int8: quantised on entry, float arithmetic)
  io_out      elements of its outputs (int8: dequantised on exit)
  in_work     MACs (else output elements) of the nodes that read the stage input: in int8 the input's
              quantisation is folded into their inner loop, once per MAC, not once per element
  kernels     compute nodes (each is roughly one TVM kernel call: a fixed per-call overhead)
  const       1 (the driver's fixed cost per inference)
QuantizeLinear / DequantizeLinear of a QDQ stage are skipped: the int8 lowering folds them into the
integer kernels (requantisation is then per output element, in mac_out) or into the edges (io).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from eecc.model import ir

FEATURES = ("conv_macs", "pw_macs", "dw_macs", "gemm_macs", "mac_out", "conv_cols", "dw_plane", "pool", "eltwise", "head_macs",
            "head_pool", "head_out", "gate", "io_in", "io_out", "in_work", "kernels", "const")
HEAD = {"conv_macs": "head_macs", "pw_macs": "head_macs", "dw_macs": "head_macs", "gemm_macs": "head_macs",
        "mac_out": "head_out", "pool": "head_pool", "eltwise": "head_out", "conv_cols": "head_out",
        "dw_plane": "head_out"}
_INDEX = {f: i for i, f in enumerate(FEATURES)}
QDQ = {"QuantizeLinear", "DequantizeLinear"}
POOL = {"MaxPool", "AveragePool", "LpPool"}
GLOBAL = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceL2"}
GATE = {"Softmax", "LogSoftmax", "Exp", "Log", "ReduceMax", "TopK", "ArgMax"}
ELTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu",
           "Tanh", "Max", "Min", "Neg", "Abs", "BatchNormalization", "Where", "Greater", "GreaterOrEqual",
           "Less", "Not", "And", "Or", "Cast", "Gather", "Sqrt", "Pow"}
FREE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Constant", "Shape", "Concat",
        "Slice", "ConstantOfShape", "Expand", "Transpose", *QDQ}


def _elems(t) -> int:
    shape = getattr(t, "shape", None)
    if not shape:
        return 1
    rest = [d for d in shape[1:]] if len(shape) > 1 else [1]
    if any(not isinstance(d, (int, np.integer)) for d in rest):
        return 0
    return int(np.prod(rest, dtype=np.int64))


def _conv(node: gs.Node, n_out: int) -> np.ndarray:
    f = np.zeros(len(FEATURES))
    w = node.inputs[1]
    per = int(np.prod(w.shape[1:])) if w.shape else 0
    group = int(node.attrs.get("group", 1))
    kind = "dw_macs" if group > 1 else ("pw_macs" if int(np.prod(w.shape[2:])) == 1 else "conv_macs")
    f[_INDEX[kind]] += n_out * per
    f[_INDEX["mac_out"]] += n_out
    if kind == "dw_macs":  # pads = (begin per axis..., end per axis...)
        pads = [int(p) for p in node.attrs.get("pads", [])] or [0] * (2 * (len(w.shape) - 2))
        spatial = [int(d) for d in (node.inputs[0].shape or [])[2:]]
        half = len(pads) // 2
        f[_INDEX["dw_plane"]] += int(w.shape[0]) * int(np.prod([d + pads[i] + pads[i + half]
                                                                for i, d in enumerate(spatial)]))
    else:
        f[_INDEX["conv_cols"]] += n_out * per / max(int(w.shape[0]), 1)
    return f


def node_features(node: gs.Node) -> np.ndarray:
    """[len(FEATURES)] work of one node (kernels and const excluded)."""
    f = np.zeros(len(FEATURES))
    op, out = node.op, (node.outputs[0] if node.outputs else None)
    if op in FREE or out is None:
        return f
    n_out = _elems(out)
    if op == "Conv":
        f += _conv(node, n_out)
    elif op in ("Gemm", "MatMul"):
        a = node.inputs[0]
        k = int(a.shape[-1]) if a.shape else 0
        if op == "Gemm" and int(node.attrs.get("transA", 0)):
            k = int(a.shape[0])
        f[_INDEX["gemm_macs"]] += n_out * k
        f[_INDEX["mac_out"]] += n_out
    elif op in POOL:
        f[_INDEX["pool"]] += n_out * int(np.prod(node.attrs.get("kernel_shape", [1])))
    elif op in GLOBAL:
        f[_INDEX["pool"]] += _elems(node.inputs[0])
    elif op in GATE:
        f[_INDEX["gate"]] += _elems(node.inputs[0])
    else:  # elementwise and anything unknown: one unit of work per output element
        f[_INDEX["eltwise"]] += n_out
    f[_INDEX["kernels"]] += 1
    if ir.get_ann(node, "role") == "exit":  # the same work, priced as exit-head work
        g = np.zeros(len(FEATURES))
        for name, value in zip(FEATURES, f):
            g[_INDEX[HEAD.get(name, name)]] += value
        return g
    return f


def graph_features(graph: gs.Graph | onnx.ModelProto, *, roles: set[str | None] | None = None,
                   with_io: bool = True) -> np.ndarray:
    """Σ node_features over the graph's nodes (those whose `role` annotation is in `roles`, or all),
    plus io and const when `with_io`. A ModelProto is read through ir (shapes inferred)."""
    if isinstance(graph, onnx.ModelProto):
        graph = ir.from_model(graph, classifier=False)
    f = np.zeros(len(FEATURES))
    for node in graph.nodes:
        if roles is None or ir.get_ann(node, "role") in roles:
            f += node_features(node)
    if with_io:
        f += io_features([_elems(t) for t in graph.inputs], [_elems(t) for t in graph.outputs])
    if roles is None:
        f[_INDEX["in_work"]] = input_work(graph)
    return f


def input_work(graph: gs.Graph) -> float:
    """MACs (else output elements) of the nodes that consume a graph input."""
    names, work = {t.name for t in graph.inputs}, 0.0
    for node in graph.nodes:
        if any(getattr(t, "name", None) in names for t in node.inputs):
            f = node_features(node)
            macs = f[[_INDEX[k] for k in ("conv_macs", "pw_macs", "dw_macs", "gemm_macs", "head_macs")]].sum()
            work += macs if macs else (_elems(node.outputs[0]) if node.outputs and node.op not in FREE else 0)
    return work


def io_features(inputs: list[int], outputs: list[int]) -> np.ndarray:
    f = np.zeros(len(FEATURES))
    f[_INDEX["io_in"]] = float(sum(inputs))
    f[_INDEX["io_out"]] = float(sum(outputs))
    f[_INDEX["const"]] = 1.0
    return f
