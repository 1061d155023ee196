"""fuse_blocks(g) -> g' with every node annotated `block`, `role` ("backbone" | "head"), block closers marked.

Blocks are the regions between consecutive articulation tensors — the tensors that every path from the
input to the output passes through (dominators of the output, found with networkx). So a residual
block, or any branch that re-merges, collapses into one block:  x -> [Conv..Add(x, ·)] -> Relu.
Post-ops (BatchNormalization, Relu, Clip, HardSwish, …) that form a block on their own fuse into the
block before them:  Block(Conv) + Block(Relu) -> Block(Conv, Relu); so does an activation written out in
elementwise ops of the block's output alone (GELU as Div, Erf, Add, Mul, Mul; x · HardSigmoid(x)).
The head (the exit blueprint) is found by structure, not by op pattern: it is everything after the last
block whose output still has spatial extent > 1 (pooling of any kind, reshapes, several Gemms with
activations and dropout, a final Softmax), plus a 1×1 conv classifier that maps that block's input
to the classes. Candidate exit points are the outputs of backbone blocks that are feature maps
((C, L) or (C, H, W) with extent > 1), except the head's own input (an exit there would duplicate
the final classifier) and any block whose prefix already holds ≥ 99 % of the model's MACs (an exit there
could save at most 1 % and costs its own head: e.g. the block before a no-op Unsqueeze/Squeeze that a
dynamo export puts in front of the head). Rank-2 and head-internal tensors are never candidates.
An MLP (every tensor a vector [N, F]) has no maps: its head is its last layer with MACs (the classifier
Gemm/MatMul and what follows), and its candidates are the hidden vectors before the classifier's input.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import onnx_graphsurgeon as gs

from eecc.errors import EeccError
from eecc.model.ir import get_ann, per_sample_shape, set_ann

POST_OPS = {"BatchNormalization", "Relu", "LeakyRelu", "PRelu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid",
            "Tanh", "Elu", "Selu", "Gelu", "Mish", "Softplus", "Dropout", "Identity", "Mul", "Add", "Div", "Sub"}
# Elementwise ops that write out an activation of one tensor (_is_activation), beside the post-ops
ELEMENTWISE = {"Erf", "Pow", "Sqrt", "Exp", "Log", "Tanh", "Sigmoid", "Reciprocal", "Neg", "Abs", "Min", "Max",
               "Softsign", "Relu", "Clip"}
SOURCE, SINK = "<input>", "<output>"
# An exit whose prefix holds this share of the model's MACs or more is not offered (module docstring).
MAX_PREFIX_SHARE = 0.99


@dataclass(frozen=True)
class Block:
    index: int
    nodes: tuple[str, ...]
    ops: tuple[str, ...]
    output: str
    shape: tuple[int, ...]
    macs: int
    cumulative_macs: int
    params: int
    activation_bytes: int
    candidate_exit: bool


@dataclass(frozen=True)
class Head:
    nodes: tuple[str, ...]
    ops: tuple[str, ...]
    input: str
    input_shape: tuple[int, ...]
    macs: int
    num_classes: int
    output: str
    output_kind: str = "logits"        # what the original model output (passes/normalize_output.py)
    normalized: tuple[str, ...] = ()   # load-time passes that changed the model (eecc/model/normalize.py)


@dataclass(frozen=True)
class BlockGraph:
    blocks: tuple[Block, ...]
    head: Head
    total_macs: int
    total_params: int

    def candidates(self) -> list[Block]:
        return [b for b in self.blocks if b.candidate_exit]


def fuse_blocks(graph: gs.Graph) -> gs.Graph:
    """Requires annotate_cost. Adds `block`, `role`, `closes_block`, `candidate_exit`; does not mutate its input."""
    graph = graph.copy()
    if any(get_ann(n, "macs") is None for n in graph.nodes):
        raise EeccError("fuse_blocks: run annotate_cost first (nodes carry no 'macs' annotation)")
    graph.toposort()
    _check_scores(graph.outputs[0])
    flow = _dataflow(graph)
    doms = _articulation_nodes(flow)
    members = _segments(graph, flow, doms)
    members = _fuse_post_ops(members)
    vector = _is_mlp(members)
    head_start = _mlp_head_start(members, graph) if vector else _head_start(members, graph)
    total_macs = sum(get_ann(n, "macs", 0) for n in graph.nodes)
    cumulative_macs = 0
    for index, (closer, nodes) in enumerate(members):
        role = "head" if index >= head_start else "backbone"
        cumulative_macs += sum(get_ann(n, "macs", 0) for n in nodes)
        for node in nodes:
            set_ann(node, "block", index)
            set_ann(node, "role", role)
        set_ann(closer, "closes_block", True)
        # One output only: a Split that dominates the output hands on more than its first output. No MACs
        # yet (e.g. a Keras export's input Transpose): an exit there would classify the raw input.
        set_ann(closer, "candidate_exit", role == "backbone" and index < head_start - 1 and len(closer.outputs) == 1
                and 0 < cumulative_macs < MAX_PREFIX_SHARE * total_macs and _exit_shape(closer.outputs[0], vector))
    return graph


def _exit_shape(tensor: gs.Tensor, vector: bool) -> bool:
    """Whether an exit head can read `tensor`: a hidden vector (F,) of an MLP, else a (C, L) or (C, H, W) map."""
    rank = len(per_sample_shape(tensor) or ())
    return rank == 1 and not _is_integer(tensor) if vector else rank in (2, 3) and _spatial_extent(tensor) > 1


def read_blocks(graph: gs.Graph) -> BlockGraph:
    """The block table of a graph that went through fuse_blocks (also after a save/load round trip)."""
    by_block: dict[int, list[gs.Node]] = {}
    for node in graph.nodes:
        if get_ann(node, "block") is None:
            continue
        by_block.setdefault(get_ann(node, "block"), []).append(node)
    if not by_block:
        raise EeccError("read_blocks: graph has no block annotations; run fuse_blocks first")
    blocks, head_nodes, cumulative = [], [], 0
    for index in sorted(by_block):
        nodes = by_block[index]
        if get_ann(nodes[0], "role") == "head":
            head_nodes.extend(nodes)
            continue
        closer = next(n for n in nodes if get_ann(n, "closes_block"))
        macs = sum(get_ann(n, "macs", 0) for n in nodes)
        cumulative += macs
        out = closer.outputs[0]
        blocks.append(Block(index=index, nodes=tuple(n.name for n in nodes), ops=_ops(nodes), output=out.name,
                            shape=per_sample_shape(out) or (), macs=macs, cumulative_macs=cumulative,
                            params=sum(get_ann(n, "params", 0) for n in nodes),
                            activation_bytes=get_ann(closer, "activation_bytes", 0),
                            candidate_exit=bool(get_ann(closer, "candidate_exit"))))
    head_in = blocks[-1].output
    out = graph.outputs[0]
    last = out.inputs[0] if out.inputs else None
    head = Head(nodes=tuple(n.name for n in head_nodes), ops=_ops(head_nodes), input=head_in,
                input_shape=blocks[-1].shape, macs=sum(get_ann(n, "macs", 0) for n in head_nodes),
                num_classes=int(per_sample_shape(out)[-1]), output=out.name,
                output_kind=get_ann(last, "output_kind", "logits") if last else "logits",
                normalized=tuple(get_ann(last, "normalized", ())) if last else ())
    total_macs = cumulative + head.macs
    total_params = sum(get_ann(n, "params", 0) for n in graph.nodes)
    return BlockGraph(blocks=tuple(blocks), head=head, total_macs=total_macs, total_params=total_params)


def _ops(nodes: list[gs.Node]) -> tuple[str, ...]:
    return tuple(n.op for n in nodes if n.op != "Constant")


def _dataflow(graph: gs.Graph) -> nx.DiGraph:
    """Node-level DAG with a source at the input and a sink at the output. Constants carry no data, and
    neither do integer tensors: shape arithmetic that starts at Shape(input) (dynamo's as_strided index
    chains) would otherwise be a path around the whole backbone, leaving no dominator but the end."""
    flow = nx.DiGraph()
    flow.add_nodes_from([SOURCE, SINK])
    producer = {out.name: node.name for node in graph.nodes for out in node.outputs}
    for node in graph.nodes:
        flow.add_node(node.name)
        for inp in node.inputs:
            if isinstance(inp, gs.Variable):
                if inp.name in producer and not _is_integer(inp):
                    flow.add_edge(producer[inp.name], node.name)
                elif inp in graph.inputs:
                    flow.add_edge(SOURCE, node.name)
    for out in graph.outputs:
        flow.add_edge(producer[out.name], SINK)
    return flow


def _articulation_nodes(flow: nx.DiGraph) -> list[str]:
    """Nodes on every input→output path, in order: the sink's dominator chain."""
    idom = nx.immediate_dominators(flow, SOURCE)
    if SINK not in idom:
        raise EeccError("fuse_blocks: the output is not reachable from the input; the model is disconnected")
    chain, node = [], idom[SINK]
    while node != SOURCE:
        chain.append(node)
        node = idom[node]
    return chain[::-1]


def _segments(graph: gs.Graph, flow: nx.DiGraph, doms: list[str]) -> list[tuple[gs.Node, list[gs.Node]]]:
    """Segment k = nodes with exactly k articulation nodes strictly upstream; closed by doms[k]."""
    after = [nx.descendants(flow, d) for d in doms]
    reachable = nx.descendants(flow, SOURCE)
    by_name = {n.name: n for n in graph.nodes}
    segment_of: dict[str, int] = {}
    for node in graph.nodes:
        if node.name in reachable:
            segment_of[node.name] = min(sum(node.name in desc for desc in after), len(doms) - 1)
    # Constants and other input-free nodes belong with their first consumer (reverse topological order).
    for node in reversed(graph.nodes):
        if node.name not in segment_of:
            consumers = [segment_of[c.name] for out in node.outputs for c in out.outputs if c.name in segment_of]
            segment_of[node.name] = min(consumers, default=0)
    segments: list[list[gs.Node]] = [[] for _ in doms]
    for node in graph.nodes:
        segments[segment_of[node.name]].append(node)
    return [(by_name[d], seg) for d, seg in zip(doms, segments)]


def _is_post_op(node: gs.Node) -> bool:
    if node.op not in POST_OPS:
        return False
    if node.op in {"Mul", "Add", "Div", "Sub"}:  # only an elementwise op with a constant operand is a post-op
        return sum(isinstance(i, gs.Variable) and not _is_const_var(i) for i in node.inputs) == 1
    return True


def _is_const_var(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Variable) and len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant"


def _fuse_post_ops(members: list[tuple[gs.Node, list[gs.Node]]]) -> list[tuple[gs.Node, list[gs.Node]]]:
    fused: list[tuple[gs.Node, list[gs.Node]]] = []
    for closer, nodes in members:
        if fused and (all(_is_post_op(n) or n.op == "Constant" for n in nodes)
                      or _is_activation(nodes, fused[-1][0].outputs[0], closer)):
            fused[-1] = (closer, fused[-1][1] + nodes)
        else:
            fused.append((closer, nodes))
    return fused


def _is_activation(nodes: list[gs.Node], x: gs.Tensor, closer: gs.Node) -> bool:
    """An activation written out in elementwise ops of x alone, which branches from x and re-merges, e.g. GELU as
    a TorchScript export writes it, Mul(Mul(x, Add(Erf(Div(x, √2)), 1)), 0.5), or x · HardSigmoid(x): a block of
    its own, it offered a second exit at the same point as the block before it."""
    inside = {t.name for n in nodes for t in n.outputs}
    for n in nodes:
        if n.op == "Constant":
            continue
        if n.op not in POST_OPS | ELEMENTWISE:
            return False
        outside = [t for t in n.inputs if isinstance(t, gs.Variable) and t.name not in inside and not _is_const_var(t)]
        if any(t is not x for t in outside):
            return False
    return per_sample_shape(closer.outputs[0]) == per_sample_shape(x)


def _check_scores(out: gs.Tensor) -> None:
    """One value per sample is a regression (or a lone binary logit, or its Sigmoid), not scores of at least two
    classes. After a Sigmoid (normalize_output's `output_kind`) the advice names its input: both logits of the
    probability p itself, [-p, p], make every sample class 1 (nu14 F4: 9.70 % on a 9.7 %-positive detector)."""
    shape = per_sample_shape(out)
    if shape is None or int(np.prod(shape, dtype=np.int64)) != 1:
        return
    what = f"the output '{out.name}' holds one value per sample (per-sample shape {list(shape)})"
    if out.inputs and get_ann(out.inputs[0], "output_kind") == "sigmoid":
        raise EeccError(f"fuse_blocks: no classifier head: {what}, a Sigmoid's probability of one class, not scores "
                        "of two or more classes; eecc needs a classifier whose output is [N, classes]: export both "
                        "logits of the Sigmoid's input z instead of the Sigmoid, e.g. torch.cat([-z, z], 1) (on the "
                        "probability itself every sample would be class 1)")
    raise EeccError(f"fuse_blocks: no classifier head: {what}, a regression or a single logit, not scores of two or "
                    "more classes; eecc needs a classifier whose output is [N, classes] (a binary one: export "
                    "both logits, e.g. torch.cat([-z, z], 1))")


def _head_start(members: list[tuple[gs.Node, list[gs.Node]]], graph: gs.Graph) -> int:
    """Index of the first head block: the head is everything after the last block whose output still has
    spatial extent > 1, whatever its ops (DESIGN.md decision 14); a 1×1 conv classifier that maps such a
    map to the classes (SqueezeNet) belongs to the head too."""
    out = graph.outputs[0]
    if _spatial_extent(out) > 1:
        raise EeccError(f"fuse_blocks: no classifier head: the output '{out.name}' is a feature map (per-sample "
                        f"shape {list(per_sample_shape(out))}), not class scores; eecc needs a classifier whose "
                        "output is [N, classes]")
    spatial = [i for i, (closer, _) in enumerate(members) if _spatial_extent(closer.outputs[0]) > 1]
    if not spatial:
        raise EeccError(f"fuse_blocks: no tensor with spatial extent > 1 lies on every path to '{out.name}' "
                        "(the backbone's branches only merge at the end); eecc places exits on feature maps "
                        "that every path passes through, so there is no place for an exit in this model")
    last = spatial[-1]
    classes = (per_sample_shape(out) or (0,))[-1]
    if last > 0 and _is_conv_classifier(members[last][1], classes):
        last -= 1
    if last < 1:
        raise EeccError("fuse_blocks: no candidate exit point before the classifier head; the backbone needs "
                        "at least two blocks that every input-to-output path passes through")
    return last + 1


def _is_mlp(members: list[tuple[gs.Node, list[gs.Node]]]) -> bool:
    """Every float tensor a node computes is a vector [N, F] (or a scalar per sample): an MLP, whatever its input."""
    return all(len(per_sample_shape(t) or ()) <= 1 for _, nodes in members for n in nodes for t in n.outputs
               if not _is_integer(t))


def _mlp_head_start(members: list[tuple[gs.Node, list[gs.Node]]], graph: gs.Graph) -> int:
    """An MLP's head is its last layer with MACs (the classifier Gemm/MatMul) and what follows it (Softmax, …);
    exits read the hidden vectors before it, except the classifier's own input."""
    layers = [i for i, (_, nodes) in enumerate(members) if sum(get_ann(n, "macs", 0) for n in nodes) > 0]
    if len(layers) < 3:
        raise EeccError(f"fuse_blocks: this MLP has {len(layers)} layer(s) with weights (Gemm/MatMul) on the way to "
                        f"'{graph.outputs[0].name}'; an exit needs a hidden layer before the classifier's own input, "
                        "so eecc needs at least two hidden layers")
    return layers[-1]


def _spatial_extent(tensor: gs.Tensor) -> int:
    """H·W of a (C, H, W) map, L of a (C, L) sequence; 0 for vectors, scalars and unknown shapes."""
    shape = per_sample_shape(tensor)
    if shape is None or len(shape) < 2 or _is_integer(tensor):
        return 0
    return int(np.prod(shape[1:], dtype=np.int64))


def _is_conv_classifier(nodes: list[gs.Node], classes: int) -> bool:
    """One 1×1 Conv (plus post-ops) producing exactly `classes` channels: a classifier, not a feature."""
    convs = [n for n in nodes if not _is_post_op(n) and n.op != "Constant"]
    if len(convs) != 1 or convs[0].op != "Conv":
        return False
    weight = convs[0].inputs[1]
    shape = tuple(weight.shape) if weight.shape is not None else ()
    return len(shape) >= 3 and shape[0] == classes and all(k == 1 for k in shape[2:])


def _is_integer(tensor: gs.Tensor) -> bool:
    return tensor.dtype is not None and np.issubdtype(np.dtype(tensor.dtype), np.integer)
