"""A cascade's int8 stages quantised as ONE graph, the heads kept from changing the backbone's Q/DQ (nu14 F10).

onnxruntime's QDQ quantiser (targets/quantize.py) gives a tensor one Q/DQ pair shared by all its consumers, and
a tensor made by an op outside QUANTIZED_OPS (Transpose, LayerNormalization, Gelu, LeakyRelu, ...) gets it only
when a consumer quantises its input. Quantising stage by stage, a hand-off tensor's pair then depends on the cut
(stage k sees only the head as consumer, stage k+1 only the backbone), and in the search's all-heads graph
(eecc/exits/int8.py) on which heads share the tensor: nu14's GELU/LayerNorm model on rk3588, int8, search
85.60 % / exits 95.85 % vs the built stages' 85.90 % / 95.65 %. Two rules make a tensor's Q/DQ the same in
every graph:

  one graph:  the stages are joined at their hand-offs and quantised once (MinMax on the same float
              activations), then cut again: a hand-off keeps the one pair the whole
              backbone gives it; stage k outputs it dequantised, stage k+1 quantises it again with the same
              scale and zero point (exact: q -> (q - z)·s -> q);
  isolated heads: every head reads its backbone tensor through its own Reshape to the same shape (a copy, of
              onnxruntime's "direct 8-bit" kind: quantised only when its input already is, with its
              input's scale), placed after every backbone node. A head's first op (Conv, GlobalAveragePool,
              Gemm quantise their input; MaxPool, Flatten follow it) then acts on that copy, never on the
              backbone tensor, and sees the backbone's final decision. The copies go after quantisation.

So the backbone's Q/DQ is the one of the backbone alone whatever heads and cuts there are, and a head's int8
logits depend on its own tensor only: the search's graph and the built stages compute the same numbers
(tests/test_int8_cascade.py: bit for bit, every head and the final classifier). Where the backbone quantises a
head's tensor, the head reads it as before (its copy's pair, same scale and zero point, is dropped).

A cut stage is then written as quantize_stage writes a stage quantised alone wherever that computes the same:
the pairs that are the identity at its entry and that quantize_stage does not make there go
(_drop_entry_pairs), shared scales take the stage's own names (_own_names), and a stage whose nodes and
initializers equal quantize_stages' is that file (its node order). Every stage of the fixtures' all-cuts splits
(tests/fixtures/models, ReLU CNNs, 1-D CNNs, ResNets, DS-CNNs; 80 stages) is byte for byte quantize_stages';
the cost is a second quantisation, stage by stage, for that comparison.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx

from eecc.targets import quantize
from eecc.targets.quantize import CALIBRATION_SAMPLES

_ROLE = "pkg.eecc.role"
_COPY = ".eecc_head_copy"  # in the names of an isolating Reshape's output, its node and its Shape
# ops whose output holds input values only (a tensor on a quantisation grid stays on it)
GRID_OPS = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity")


def quantize_cascade(models: Sequence[onnx.ModelProto], x: np.ndarray, *,
                     samples: int = CALIBRATION_SAMPLES) -> list[onnx.ModelProto]:
    """The int8 stages of the float cascade `models` (stage k+1's inputs are stage k's hand-off outputs):
    one quantisation of the joined graph on the first `samples` rows of `x` (model inputs [N, ...]), cut back
    into stages with each float stage's graph name, inputs, outputs and annotations. A stage that
    quantize_stages (stage by stage) makes with the same nodes and initializers is that file, node order and
    all (a ReLU model's stages stay byte for byte what they were). Raises EeccError as quantize_stage does."""
    x = np.asarray(x, dtype=np.float32)[:samples]
    joined, handoffs = _join(models)
    first = [i.name for i in joined.graph.input if i.name not in {t.name for t in joined.graph.initializer}][0]
    quantized = quantize.quantize_stage(isolate_heads(joined), {first: x})
    cuts = [_cut(quantized, m, handoffs) for m in models]
    return [s if same_graph(s, c) else c for s, c in zip(quantize.quantize_stages(models, x), cuts)]


def same_graph(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    """The same nodes and initializers (in any order), inputs and outputs."""
    def key(m):
        g = m.graph
        return (sorted(n.SerializeToString() for n in g.node), sorted(t.SerializeToString() for t in g.initializer),
                [v.SerializeToString() for v in g.input], [v.SerializeToString() for v in g.output])
    return key(a) == key(b)


def quantize_with_heads(model: onnx.ModelProto, calibration: dict[str, np.ndarray]) -> onnx.ModelProto:
    """quantize_stage of a graph with exit heads (role "exit"), the heads isolated (module docstring)."""
    quantized = quantize.quantize_stage(isolate_heads(model), calibration)
    drop_copies(quantized)
    return quantized


def isolate_heads(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which every exit-role node reads each non-exit tensor through Reshape(t, Shape(t)), the
    nodes ordered backbone, copies, heads, gates (a topological order: heads read the backbone, gates the
    heads)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = list(out.graph.node)
    role = {id(n): _role(n) for n in nodes}
    made = {o for n in nodes if role[id(n)] == "exit" for o in n.output}
    constants = {t.name for t in out.graph.initializer}
    copies = []
    for node in (n for n in nodes if role[id(n)] == "exit"):
        for k, name in enumerate(node.input):
            if not name or name in made or name in constants:
                continue
            copy = f"{name}{_COPY}{len(copies) // 2}"  # one per reading node: heads on one tensor share none
            copies += [onnx.helper.make_node("Shape", [name], [copy + ".shape"], name=copy + ".Shape"),
                       onnx.helper.make_node("Reshape", [name, copy + ".shape"], [copy], name=copy + ".Reshape")]
            node.input[k] = copy
    order = [n for n in nodes if role[id(n)] not in ("exit", "gate")] + copies + \
            [n for n in nodes if role[id(n)] == "exit"] + [n for n in nodes if role[id(n)] == "gate"]
    del out.graph.node[:]
    out.graph.node.extend(order)
    return out


def drop_copies(model: onnx.ModelProto) -> None:
    """Removes isolate_heads' Shape/Reshape copies from a quantised graph, in place: a head reads the backbone
    tensor (its dequantised form where the backbone quantises it); the copy's own Q/DQ pair goes too when it
    has the backbone pair's scale and zero point (then it is the identity), else it stays the head's."""
    g = model.graph
    nodes = list(g.node)  # one list: protobuf wrappers are not stable across iterations, their ids are
    copies = [n for n in nodes if _COPY in n.name and n.name.endswith((".Reshape", ".Shape"))]
    rename = {n.output[0]: n.input[0] for n in copies if n.op_type == "Reshape"}
    dead = {id(n) for n in copies}
    producer = {o: n for n in nodes for o in n.output}
    for q in [n for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] in rename]:
        src = producer.get(rename[q.input[0]])
        dq = [n for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]]
        if src is not None and src.op_type == "DequantizeLinear" and list(src.input[1:]) == list(q.input[1:]) \
                and len(dq) == 1:
            dead |= {id(q), id(dq[0])}
            rename[dq[0].output[0]] = rename[q.input[0]]
    kept = [n for n in nodes if id(n) not in dead]
    for n in kept:
        for k, name in enumerate(n.input):
            while name in rename:
                name = rename[name]
            n.input[k] = name
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def _join(models: Sequence[onnx.ModelProto]) -> tuple[onnx.ModelProto, set[str]]:
    """One model of all stages (nodes, initializers once by name); the hand-offs (outputs some later stage
    reads) are internal tensors, every other stage output is an output."""
    read = {i.name for m in models[1:] for i in m.graph.input}
    handoffs = {o.name for m in models[:-1] for o in m.graph.output if o.name in read}
    joined = onnx.ModelProto()
    joined.CopyFrom(models[0])
    g = joined.graph
    del g.output[:]
    seen = {t.name for t in g.initializer}
    for m in models[1:]:
        g.node.extend(m.graph.node)
        g.initializer.extend(t for t in m.graph.initializer if t.name not in seen)
        seen |= {t.name for t in m.graph.initializer}
    g.output.extend(o for m in models for o in m.graph.output if o.name not in handoffs)
    return joined, handoffs


def _cut(quantized: onnx.ModelProto, stage: onnx.ModelProto, handoffs: set[str]) -> onnx.ModelProto:
    """Stage `stage` of the joined int8 graph: from its inputs (the float hand-offs, quantised again in it) to
    its outputs, a quantised hand-off output given dequantised under its own name."""
    inits = {t.name for t in stage.graph.initializer}
    inputs = [i.name for i in stage.graph.input if i.name not in inits]
    dq_of = _dequantised(quantized)
    outputs = [dq_of.get(o.name, o.name) if o.name in handoffs else o.name for o in stage.graph.output]
    cut = _slice(quantized, inputs, outputs)
    drop_copies(cut)
    rename = {}
    for o in stage.graph.output:
        if o.name in handoffs and o.name in dq_of:
            rename[o.name], rename[dq_of[o.name]] = o.name + "_QuantizeLinear_Input", o.name
    for n in cut.graph.node:
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
    for field, src in ((cut.graph.input, stage.graph.input), (cut.graph.output, stage.graph.output)):
        del field[:]
        field.extend(v for v in src if v.name not in inits)
    _drop_entry_pairs(cut, [i for i in inputs if i in handoffs])
    _own_names(cut)
    cut.graph.name = stage.graph.name
    del cut.metadata_props[:]
    cut.metadata_props.extend(stage.metadata_props)
    return cut


def _slice(model: onnx.ModelProto, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    """The nodes (in graph order) and initializers `outputs` need, computed from `inputs`."""
    nodes, producer = list(model.graph.node), {}
    for n in nodes:
        producer.update({o: n for o in n.output})
    need, todo, stop = set(), list(outputs), set(inputs)
    while todo:
        name = todo.pop()
        n = producer.get(name)
        if name in stop or n is None or id(n) in need:
            continue
        need.add(id(n))
        todo += [i for i in n.input if i]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    kept = [n for n in nodes if id(n) in need]
    used = {i for n in kept for i in n.input}
    inits = [t for t in model.graph.initializer if t.name in used]
    for field, items in ((g.node, kept), (g.initializer, inits)):
        del field[:]
        field.extend(items)
    del g.value_info[:]
    return out


def _drop_entry_pairs(model: onnx.ModelProto, handoffs: list[str]) -> None:
    """Removes, in place, the Q/DQ pairs that are the identity at a stage's entry and that quantize_stage does
    not make there: the previous stage hands a tensor over dequantised with its pair, so the tensor, and what
    value-keeping ops (GRID_OPS) make of it, lie on that pair's grid; a pair with those scale and zero point
    on such a tensor changes nothing, and unless an op that quantises its input by itself reads it
    (stage_cost.ALWAYS_INT8: Conv, Gemm, MatMul, Add, GlobalAveragePool) a stage quantised alone has none
    (onnxruntime leaves the MaxPool, Reshape, ... at a stage's entry in float)."""
    from eecc.model.stage_cost import ALWAYS_INT8

    g = model.graph
    nodes, outputs = list(g.node), {o.name for o in g.output}
    value = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    pair = {n.input[0]: n for n in nodes if n.op_type == "QuantizeLinear"}
    grid = {t: pair[t].input[1:3] for t in handoffs if t in pair}  # tensor -> (scale, zero point) names
    dead, rename = set(), {}
    for n in nodes:
        src = rename.get(n.input[0], n.input[0]) if n.input else None
        if n.op_type in GRID_OPS and src in grid:
            grid[n.output[0]] = grid[src]
        if n.op_type != "QuantizeLinear" or src not in grid or \
                not all(np.array_equal(value[a], value[b]) for a, b in zip(n.input[1:3], grid[src])):
            continue
        dq = [m for m in nodes if m.op_type == "DequantizeLinear" and m.input[0] == n.output[0]]
        readers = [m for m in nodes if len(dq) == 1 and dq[0].output[0] in m.input]
        if len(dq) != 1 or any(m.op_type in ALWAYS_INT8 for m in readers):
            continue
        dead |= {id(n), id(dq[0])}
        if dq[0].output[0] in outputs:  # a hand-off output: its producer writes it under the output's name
            rename[n.input[0]] = dq[0].output[0]
            grid[dq[0].output[0]] = grid[src]
        else:
            rename[dq[0].output[0]] = src
    kept = [n for n in nodes if id(n) not in dead]
    for n in kept:
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in kept for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def _own_names(model: onnx.ModelProto) -> None:
    """Scales and zero points named after a tensor this stage does not quantise (onnxruntime's shared
    parameters of a MaxPool, Reshape, ... output, whose input was quantised in an earlier stage) take the
    names of the first tensor they quantise here, in place: the names quantize_stage gives it (values
    unchanged)."""
    g = model.graph
    nodes = list(g.node)
    def tensor(q):  # a graph output's pair quantises "<output>_QuantizeLinear_Input" under the output's names
        return q.input[0].removesuffix("_QuantizeLinear_Input")

    quantised = {tensor(n) for n in nodes if n.op_type == "QuantizeLinear"}
    inits = {t.name: t for t in g.initializer}
    for q in [n for n in nodes if n.op_type == "QuantizeLinear"]:
        old = list(q.input[1:3])
        owner = old[0].removesuffix("_scale")
        new = [f"{tensor(q)}_scale", f"{tensor(q)}_zero_point"]
        if old == new or owner in quantised or old[1] != f"{owner}_zero_point" or any(n in inits for n in new) \
                or not all(n in inits for n in old):
            continue
        for n in nodes:
            n.input[:] = [new[old.index(i)] if i in old else i for i in n.input]
        for k in range(2):
            inits[old[k]].name = new[k]
            inits[new[k]] = inits.pop(old[k])


def _dequantised(model: onnx.ModelProto) -> dict[str, str]:
    """{tensor: the output of the DequantizeLinear after its QuantizeLinear} for every quantised activation."""
    q = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    return {q[n.input[0]]: n.output[0] for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in q}


def _role(node: onnx.NodeProto) -> str:
    return next((p.value.strip('"') for p in node.metadata_props if p.key == _ROLE), "backbone")
