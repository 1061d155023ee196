"""insert_exits(g, heads) -> g + per head: t → [MaxPool|AveragePool] → head of its kind → extra output.

Kinds (eecc/exits/heads.py): gap = [Conv1×1 → Relu] → GAP → Flatten → Gemm;
flat = [Conv1×1 → Relu] → Flatten → Gemm; mlp = Flatten → Gemm → Relu → Gemm.

Also `expose_features(g, heads)`: g + per head the fixed part only, t → MaxPool|AveragePool (or Identity) as
an extra fp32 output, for the feature pass that fills the cache. Neither touches the original nodes or output.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx_graphsurgeon as gs

from eecc.errors import EeccError
from eecc.exits.heads import ExitHead, HeadSpec
from eecc.model.ir import per_sample_shape, set_ann


def logits_name(tensor: str, i: int) -> str:
    return f"{tensor}.exit{i}.logits"


def feature_name(tensor: str, i: int) -> str:
    return f"{tensor}.exit{i}.feature"


def confidence_name(tensor: str, i: int) -> str:
    return f"{tensor}.exit{i}.confidence"


def insert_exits(graph: gs.Graph, *, heads: Sequence[ExitHead],
                 confidences: Sequence[tuple[np.ndarray, float]] | None = None,
                 shared_tensors: bool = False) -> gs.Graph:
    """Requires static shapes at each head's tensor; exit i is heads[i]. Does not mutate its input.

    Adds one extra graph output per head, `f"{tensor}.exit{i}.logits"` [N, classes], after the original
    outputs; head nodes carry annotations `exit` = i, `role` = "exit" and `macs` (README convention).
    With `confidences` (NACHOS, one (w [C+1], b) per head, standardisation folded in) each head also
    emits `f"{tensor}.exit{i}.confidence"` [N] = Sigmoid(w · [GAP(pooled), max softmax(logits)] + b).
    A deployed model has one exit per tensor; `shared_tensors` lets several heads read one tensor (every
    name still carries its own i): the int8 search runs all candidate heads of a location in one graph.
    """
    graph = graph.copy()
    tensors = _check(graph, [h.spec for h in heads], "insert_exits", shared=shared_tensors)
    if confidences is not None and len(confidences) != len(heads):
        raise EeccError(f"insert_exits: {len(confidences)} confidence branches for {len(heads)} heads; "
                        "give one (weights, bias) per head")
    for i, head in enumerate(heads):
        spec, w = head.spec, head.weights
        w.check(spec)
        b = _Builder(graph, spec, i)
        pooled = x = b.pool(tensors[spec.tensor])
        if spec.width:
            x = b.node("Conv", [x, b.const("conv.weight", w.conv_w), b.const("conv.bias", w.conv_b)],
                       (spec.width, *spec.pooled_shape[1:]), "conv", kernel_shape=[1] * (len(spec.in_shape) - 1),
                       macs=spec.width * int(np.prod(spec.pooled_shape, dtype=np.int64)))
            x = b.node("Relu", [x], (spec.width, *spec.pooled_shape[1:]), "relu")
        width = spec.width or spec.channels
        if spec.kind == "gap":
            x = b.node("GlobalAveragePool", [x], (width, *[1] * (len(spec.in_shape) - 1)), "gap")
        else:
            width *= spec.positions
        x = b.node("Flatten", [x], (width,), "flatten", axis=1)
        if spec.kind == "mlp":
            x = b.node("Gemm", [x, b.const("hidden.weight", w.hid_w), b.const("hidden.bias", w.hid_b)],
                       (spec.hidden,), "hidden", transB=1, macs=spec.hidden * width)
            x = b.node("Relu", [x], (spec.hidden,), "hidden_relu")
            width = spec.hidden
        x = b.node("Gemm", [x, b.const("fc.weight", w.fc_w), b.const("fc.bias", w.fc_b)],
                   (spec.num_classes,), "logits", transB=1, macs=spec.num_classes * width,
                   out_name=logits_name(spec.tensor, i))
        graph.outputs.append(x)
        if confidences is not None:
            graph.outputs.append(_confidence(b, pooled, x, *confidences[i]))
    return graph


# --- NACHOS confidence branch (eecc/train/nachos.py NachosExits) ---
def _confidence(b: "_Builder", pooled: gs.Variable, logits: gs.Variable, w: np.ndarray, bias: float) -> gs.Variable:
    spec, c, rank = b.spec, b.spec.channels, len(b.spec.in_shape) - 1
    w = np.asarray(w, dtype=np.float32).reshape(1, -1)
    if w.shape[1] != c + 1:
        raise EeccError(f"insert_exits: confidence weights for '{spec.tensor}' have {w.shape[1]} inputs, want "
                        f"{c + 1} (channels + max softmax); retrain the NACHOS exits for this head design")
    if rank:
        gap = b.node("GlobalAveragePool", [pooled], (c, *[1] * rank), "conf_gap")
        feat = b.node("Flatten", [gap], (c,), "conf_flatten", axis=1)
    else:  # an MLP's hidden vector: one position, whose mean is the vector itself
        feat = pooled
    probs = b.node("Softmax", [logits], (spec.num_classes,), "conf_probs", axis=1)
    if (b.graph.opset or 13) >= 18:  # ReduceMax takes its axes as an input from opset 18
        top = b.node("ReduceMax", [probs, b.const("conf_axes", np.array([1], np.int64), np.int64)], (1,),
                     "conf_top", keepdims=1)
    else:
        top = b.node("ReduceMax", [probs], (1,), "conf_top", axes=[1], keepdims=1)
    joined = b.node("Concat", [feat, top], (c + 1,), "conf_in", axis=1)
    z = b.node("Gemm", [joined, b.const("conf.weight", w), b.const("conf.bias", np.array([bias], np.float32))],
               (1,), "conf_logit", transB=1, macs=c + 1)
    s = b.node("Sigmoid", [z], (1,), "conf_sigmoid")
    return b.node("Reshape", [s, b.const("conf_shape", np.array([-1], np.int64), np.int64)], (), "confidence",
                  out_name=confidence_name(spec.tensor, b.i))
# --- end NACHOS ---


def expose_features(graph: gs.Graph, *, heads: Sequence[HeadSpec]) -> gs.Graph:
    """Adds output `f"{tensor}.exit{i}.feature"` (fp32, pooled as heads[i] says) per head. Pure.

    Several heads may share a tensor (the pooled maps of a head family); give each pooled map once.
    The pool writes the output itself (an unpooled map goes through Identity, to carry the name): the
    feature pass keeps fp32 maps, and a Cast per map was 6 % of its onnxruntime time (profiled).
    """
    graph = graph.copy()
    tensors = _check(graph, heads, "expose_features")
    for i, spec in enumerate(heads):
        b = _Builder(graph, spec, i)
        name = feature_name(spec.tensor, i)
        x = tensors[spec.tensor]
        graph.outputs.append(b.pool(x, out_name=name) if spec.has_pool else
                             b.node("Identity", [x], spec.pooled_shape, "feature", out_name=name))
    return graph


class _Builder:
    """Deterministically named nodes/tensors for head i: `{tensor}.exit{i}.{what}`."""

    def __init__(self, graph: gs.Graph, spec: HeadSpec, i: int):
        self.graph, self.spec, self.prefix = graph, spec, f"{spec.tensor}.exit{i}"
        self.i = i

    def const(self, what: str, value: np.ndarray, dtype=np.float32) -> gs.Constant:
        return gs.Constant(f"{self.prefix}.{what}", np.ascontiguousarray(value, dtype=dtype))

    def node(self, op: str, inputs: list, shape: tuple, what: str, *, macs: int = 0, dtype=np.float32,
             out_name: str | None = None, **attrs) -> gs.Variable:
        batch = self.graph.inputs[0].shape[0] if self.graph.inputs[0].shape else "N"
        out = gs.Variable(out_name or f"{self.prefix}.{what}", dtype=dtype, shape=[batch, *shape])
        node = gs.Node(op, name=f"{self.prefix}.{what}.{op}", attrs=dict(attrs), inputs=inputs, outputs=[out])
        set_ann(node, "exit", self.i)
        set_ann(node, "role", "exit")
        set_ann(node, "macs", int(macs))
        set_ann(node, "head", self.spec.design)  # the head's design, e.g. "flat avg4x4" (eecc/exits/heads.py)
        self.graph.nodes.append(node)
        return out

    def pool(self, x: gs.Variable, out_name: str | None = None) -> gs.Variable:
        if not self.spec.has_pool:
            return x
        # AveragePool in ceil mode averages a clipped window over its real elements only (count_include_pad=0)
        op = "AveragePool" if self.spec.pool_op == "avg" else "MaxPool"
        return self.node(op, [x], self.spec.pooled_shape, "pool", kernel_shape=list(self.spec.pool),
                         strides=list(self.spec.pool), ceil_mode=1, out_name=out_name)


def _check(graph: gs.Graph, specs: Sequence[HeadSpec], who: str, shared: bool = True) -> dict[str, gs.Variable]:
    tensors = graph.tensors()
    names = [s.tensor for s in specs]
    # Several pooled maps of one tensor may be cached (head family); a deployed model has one exit per tensor.
    if not shared and len(set(names)) != len(names):
        raise EeccError(f"{who}: more than one head on the same tensor in {names}; give one head per tensor "
                        "(shared_tensors=True is for evaluating candidate heads, not for a deployed model)")
    for spec in specs:
        var = tensors.get(spec.tensor)
        if var is None or isinstance(var, gs.Constant):
            raise EeccError(f"{who}: tensor '{spec.tensor}' is not an activation of the model; "
                            "pick a candidate from `eecc exits` / fuse_blocks")
        shape = per_sample_shape(var)
        if shape != spec.in_shape:
            raise EeccError(f"{who}: tensor '{spec.tensor}' has per-sample shape {shape} but its head was "
                            f"designed for {spec.in_shape}; redesign the heads for this model")
    return tensors
