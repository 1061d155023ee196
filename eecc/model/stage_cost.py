"""What a stage costs in memory and MACs, from its nodes' annotations and static shapes: the one sizing of a
stage that the search's pruning before training (eecc/search/memory.py) and the check after the split
(passes/split_by_target.py) both use, so a placement the search keeps is never refused later for memory.

  fp32: weights as stored (float32 initializers and Constant values), activations 4 B per element
  int8 (--quantize int8, eecc/targets/quantize.py and the MCU program's layout): Conv/Gemm/MatMul weights
        1 B per value, other float constants 4 B (int32 biases, requantisation multipliers); activations 1 B
        per element where the int8 stage holds them as int8 (`int8_tensors`), else their float size; a stage's
        inputs and outputs 4 + 1 B (the stage edges stay float32: QuantizeLinear makes the int8 copy of an input,
        DequantizeLinear the float output)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from eecc.model.ir import get_ann, per_sample_shape, sample_shape

NUMERICS = ("fp32", "int8")
# What onnxruntime's QDQ quantiser (eecc/targets/quantize.py, op_types_to_quantize = QUANTIZED_OPS) makes int8:
# these ops' outputs always (it quantises their inputs and outputs) ...
ALWAYS_INT8 = ("Conv", "Gemm", "MatMul", "Add", "GlobalAveragePool")
# ... these only when their input already is (onnxruntime's removable activations and direct 8-bit ops); any
# other op (LeakyRelu, Sigmoid, Mul, Erf, ...) runs in float, and so does what follows it until the next
# ALWAYS_INT8 op (nu10: LeakyRelu then AveragePool held 100,352 B of float where int8 sizes said 25,088)
FOLLOW_INT8 = ("Relu", "Clip", "MaxPool", "AveragePool", "Flatten", "Reshape")
# How the MCU builds (targets/tvm_import.py, the int8 lowering) lay a stage's tensors out:
ALIGN = 64  # bytes: every arena buffer starts at a multiple (targets/tvm_import.py ALIGN)
VIEWS = ("Flatten", "Reshape")  # given their input's buffer
FUSED, FUSING = ("Relu", "Clip"), ("Conv", "Gemm", "MatMul", "Add")  # an activation run in its producer's kernel
FLOAT_IN_INT8 = ("AveragePool",)
POOLS = ("MaxPool", "AveragePool")  # quantised in the QDQ graph, run in float by the int8 lowering
STACK_BYTES = 8192  # the stack targets/cortex_m.py's linker script reserves (its STACK_BYTES; a test checks)
PROGRAM_BYTES = 512  # the rest of an MCU program's .data + .bss: eecc_workspace (64 B), newlib's 96 B, the driver's
# tick table and state (264 B in all in a two-stage M4 program, 88 B in a one-stage build), rounded up


@dataclass(frozen=True)
class StageCost:
    macs: int                    # per sample, README convention; head_macs included
    head_macs: int
    params: int
    weight_bytes: int
    peak_activation_bytes: int   # per sample, live tensors at the worst point of a sequential run
    input_bytes: int
    handoff_bytes: int           # 0 for the last stage
    result_bytes: int = 0        # the stage's logits: what goes back to where the input arrived when a sample leaves

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def stage_cost(stage: gs.Graph, numeric: str = "fp32") -> StageCost:
    """Costs of one stage graph (split_by_target's) sized as `numeric` (module docstring). Hand-off and input
    bytes stay float32's: that is what crosses between stages."""
    if numeric not in NUMERICS:
        raise ValueError(f"stage_cost: numeric must be 'fp32' or 'int8', not {numeric!r}")
    macs = sum(int(get_ann(n, "macs", 0)) for n in stage.nodes)
    head = sum(int(get_ann(n, "macs", 0)) for n in stage.nodes if get_ann(n, "role") in ("exit", "gate"))
    out = stage.outputs[0] if len(stage.outputs) > 1 else None
    int8 = numeric == "int8"
    return StageCost(macs=macs, head_macs=head, params=int(sum(a.size for a in _constants(stage.nodes))),
                     weight_bytes=weight_bytes(stage.nodes, numeric),
                     peak_activation_bytes=live_peak(stage.nodes, stage.inputs, stage.outputs, int8),
                     input_bytes=sum(tensor_bytes(t) for t in stage.inputs),
                     handoff_bytes=tensor_bytes(out) if out is not None else 0,
                     result_bytes=tensor_bytes(stage.outputs[1 if out is not None else 0]))


def processor_needs(procs: Sequence[str], weights: Sequence[int], peaks: Sequence[int],
                    inputs: Sequence[int] | None = None,
                    program: dict[str, int] | None = None) -> dict[str, tuple[int, int]]:
    """(storage bytes, RAM bytes) per processor for the stages on it (`procs[k]` runs stage k): stages on one
    processor run back to back from one program (targets/mcu_program.py), so their weights add up and their
    arenas are two, stage k's in arena k mod 2 (the hand-off stays where stage k left it): the RAM is the largest
    even stage's + the largest odd stage's arena, the first stage's input buffer (a later stage reads its input
    in the other arena) and `program[name]` (`program_bytes`: stack and statics). `inputs[k]`: stage k's input
    buffer bytes, counted in `peaks[k]` (None: none)."""
    inputs = [0] * len(procs) if inputs is None else [input_buffer_bytes(n) for n in inputs]
    out = {}
    for name in dict.fromkeys(procs):
        own = [k for k, p in enumerate(procs) if p == name]
        runs = [peaks[k] - inputs[k] for k in own]
        ram = max(runs[0::2], default=0) + max(runs[1::2], default=0) + inputs[own[0]]
        out[name] = (sum(weights[k] for k in own), ram + (program or {}).get(name, 0))
    return out


def program_bytes(platform) -> dict[str, int]:
    """RAM a processor's program holds besides its stages' activations: a Cortex-M program's stack (STACK_BYTES)
    and other statics (PROGRAM_BYTES); 0 elsewhere (memory in GiB, no program of eecc's)."""
    return {p.name: STACK_BYTES + PROGRAM_BYTES if p.kind.startswith("cortex-m") else 0 for p in platform.processors}


def weight_bytes(nodes: Iterable[gs.Node], numeric: str = "fp32") -> int:
    """Bytes of the constants `nodes` read (each once), as `numeric` stores them."""
    nodes = list(nodes)
    if numeric == "int8":
        return int8_weight_bytes(nodes)
    return int(sum(a.nbytes for a in _constants(nodes)))


def _constants(nodes: Iterable[gs.Node]) -> list[np.ndarray]:
    nodes = list(nodes)
    weights = {id(t): t for n in nodes for t in n.inputs if isinstance(t, gs.Constant)}
    weights |= {id(v): v for n in nodes if n.op == "Constant"
                for v in [n.attrs.get("value")] if isinstance(v, gs.Constant)}
    return [np.asarray(t.values) for t in weights.values()]


def int8_weight_bytes(nodes: Iterable[gs.Node]) -> int:
    """Weights as int8 stages store them: a Conv/Gemm/MatMul weight (input 1) 1 byte per value, every other
    float constant (biases as int32, scales) 4, integer constants (shapes, axes) as they are."""
    sizes: dict[int, int] = {}
    for node in nodes:
        for i, t in enumerate(node.inputs):
            if isinstance(t, gs.Variable) and len(t.inputs) == 1 and t.inputs[0].op == "Constant":
                t = t.inputs[0].attrs.get("value")  # a Constant node's value, counted like an initializer
            if isinstance(t, gs.Constant):
                a, weight = np.asarray(t.values), i == 1 and node.op in ("Conv", "Gemm", "MatMul")
                size = a.size if weight else 4 * a.size if np.issubdtype(a.dtype, np.floating) else a.nbytes
                sizes[id(t)] = min(size, sizes.get(id(t), size))
    return int(sum(sizes.values()))


def int8_tensors(nodes: Sequence[gs.Node], quantized: Iterable[gs.Tensor]) -> set[str]:
    """Names of the tensors an int8 build of `nodes` (in order) holds as int8, given the `quantized` inputs."""
    names = {t.name for t in quantized}
    for node in nodes:
        data = [t for t in node.inputs if isinstance(t, gs.Variable)]
        if node.op in ALWAYS_INT8 or (node.op in FOLLOW_INT8 and data and data[0].name in names):
            names |= {t.name for t in node.outputs}
    return names


def live_peak(nodes: Sequence[gs.Node], inputs: Sequence[gs.Tensor], outputs: Sequence[gs.Tensor],
              int8: bool = False, quantized: Sequence[gs.Tensor] | None = None) -> int:
    """Per-sample activation bytes of a stage built from `nodes` (in this order): its input buffers (each stage
    input held in float for the whole run, `input_buffer_bytes`) plus its arena, `arena_bytes`. On the fixtures'
    232 stages of every single cut (fp32 and int8, M4 and M0+) this is the built input buffers + arena −192 …
    +4,672 B (the M0+'s fp32 convs hold no scratch; below by at most part of `program_bytes`' statics margin); a
    two-stage int8 program of a 28×28 CNN, stack and statics included, +0.2 % (M4) / +1.6 % (M0+) over its ELF
    (tests/test_stage_ram.py). Summing the live tensors, a Relu's output beside its Conv's, put int8 stages up to
    45 % over what they built in (nu11 F7)."""
    return sum(input_buffer_bytes(tensor_bytes(t, 4)) for t in inputs) + arena_bytes(nodes, inputs, outputs, int8,
                                                                                      quantized)


def input_buffer_bytes(float_bytes: int) -> int:
    """A stage input's buffer: its float32 bytes, at least ALIGN (targets/mcu_driver.py stage_tables)."""
    return max(ALIGN, int(float_bytes))


def arena_bytes(nodes: Sequence[gs.Node], inputs: Sequence[gs.Tensor], outputs: Sequence[gs.Tensor],
                int8: bool = False, quantized: Sequence[gs.Tensor] | None = None) -> int:
    """The arena an MCU build of `nodes` plans (targets/tvm_import.py plan_memory's rule on the buffers `_buffers`
    gives), bytes per sample. int8: a tensor is 1 B per element where `int8_tensors` (from the `quantized` inputs,
    default all) says int8, else its float size; outputs 4 + 1 B (the float copy of an int8 result)."""
    return plan_arena(_buffers(list(nodes), inputs, outputs, int8, quantized))


def plan_arena(buffers: Sequence[tuple[int, int, int]]) -> int:
    """Arena bytes for `buffers` (size B, first step, last step) placed greedily by size (the TFLite Micro
    planner's rule, targets/tvm_import.py plan_memory): two overlap in memory only if no step sees both."""
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    for size, lo, hi in sorted(buffers, key=lambda b: (-b[0], b[1])):
        size, offset = _align(size), 0
        for start, end in sorted((o, e) for o, e, f, last in placed if not (last < lo or hi < f)):
            if offset + size <= start:
                break
            offset = max(offset, end)
        placed.append((offset, offset + size, lo, hi))
    return max((e for _, e, _, _ in placed), default=0)


def _buffers(nodes: list[gs.Node], inputs, outputs, int8: bool, quantized) -> list[tuple[int, int, int]]:
    """(bytes, first step, last step) of every arena buffer: one per tensor a node writes, except a view
    (VIEWS) or an activation its producer's kernel runs (FUSED after FUSING, the tensor read by it alone), which
    share their input's; a Conv's scratch (`_scratch`) and the converted copies (`_converted`) during the node;
    int8: each quantised input's int8 copy. Stage outputs live to the end; stage inputs lie outside the arena."""
    out_names = {t.name for t in outputs}
    edges = out_names | {t.name for t in inputs}
    small = int8_tensors(nodes, inputs if quantized is None else quantized) if int8 else set()
    steps = [n for n in nodes if n.op != "Constant"]
    if not int8:
        steps = _post_order(steps, outputs)
    readers: dict[str, int] = {}
    for node in steps:
        for t in _data(node, ()):
            readers[t.name] = readers.get(t.name, 0) + 1
    makers = {t.name: node for node in steps for t in node.outputs}
    sizes, spans, owner = [], [], {}

    def new(size: int, first: int, last: int) -> int:
        sizes.append(size)
        spans.append([first, last])
        return len(sizes) - 1

    end = 2 * len(steps)  # node i runs at step 2i, the float copy of an int8 stage output is made at 2i + 1
    for t in (quantized if quantized is not None else inputs) if int8 else ():
        pooled = [tensor_bytes(o, 5) for n in steps if n.op in POOLS and _data(n, ())[:1] == [t] for o in n.outputs]
        owner[t.name] = new(max([tensor_bytes(t, 1), *pooled]), 0, 0)  # QuantizeLinear's int8 copy of a float
        # input; a pool reading it runs on the float input and quantises its float result (4 + 1 B)
    for i, node in enumerate(steps):
        data = _data(node, ())
        for t in data:
            if owner.get(t.name) is not None:
                spans[owner[t.name]][1] = max(spans[owner[t.name]][1], 2 * i)
        extra = _scratch(node, int8) + (_converted(node, small, edges) if int8 else 0)
        if extra:
            new(extra, 2 * i, 2 * i)
        for t in node.outputs:
            out, size = t.name in out_names, tensor_bytes(t, 1 if t.name in small else None)
            last = 2 * i + 1 if out and t.name in small else end if out else 2 * i
            src = data[0] if data else None
            if src is not None and owner.get(src.name) is not None and (
                    node.op in VIEWS or (node.op in FUSED and readers.get(src.name) == 1 and src.name not in edges
                                         and getattr(makers.get(src.name), "op", None) in FUSING)):
                owner[t.name] = b = owner[src.name]  # the same buffer, as large and as long as either needs
                sizes[b], spans[b][1] = max(sizes[b], size), max(spans[b][1], last)
            else:
                owner[t.name] = new(size, 2 * i, last)
            if out and t.name in small:
                new(tensor_bytes(t, 4), 2 * i + 1, end)  # DequantizeLinear's float copy, the stage's output
    return [(size, first, last) for size, (first, last) in zip(sizes, spans)]


def _post_order(steps: list[gs.Node], outputs: Sequence[gs.Tensor]) -> list[gs.Node]:
    """`steps` in the order TVM's fp32 lowering calls their kernels: depth-first from the outputs, each node's
    inputs in order (a residual block's shortcut conv after its main branch, so the block input lives through
    it); nodes that reach no output keep their place after those that do."""
    makers = {t.name: n for n in steps for t in n.outputs}
    order, seen = [], set()
    todo = [(makers[t.name], False) for t in reversed(list(outputs)) if t.name in makers]
    while todo:
        node, done = todo.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        todo.append((node, True))
        todo += [(makers[t.name], False) for t in reversed(_data(node, ())) if t.name in makers
                 and id(makers[t.name]) not in seen]
    return order + [n for n in steps if id(n) not in seen]


def _data(node: gs.Node, edges) -> list[gs.Variable]:
    """`node`'s activation inputs: variables not made by a Constant node, less `edges`."""
    return [t for t in node.inputs if isinstance(t, gs.Variable) and t.name not in edges
            and not (t.inputs and t.inputs[0].op == "Constant")]


def _scratch(node: gs.Node, int8: bool) -> int:
    """Bytes the MCU kernel of a Conv holds while it runs (the Cortex-M4 kernels', the largest: an upper bound
    for the M0+'s, which hold one column): 16 B plus two patches of K = Cin/group · kernel values (int16 in
    int8, K to a multiple of 4; float32 in fp32); a depthwise Conv also a 2-byte padded input plane (at least 8
    per channel); each of them ALIGN-aligned. Read off the lowered stages' call arguments (tests/test_stage_ram.py
    builds such stages)."""
    if node.op != "Conv" or len(node.inputs) < 2 or node.inputs[1].shape is None:
        return 0
    w, x = node.inputs[1].shape, per_sample_shape(node.inputs[0]) if isinstance(node.inputs[0], gs.Variable) else None
    k = int(np.prod(w[1:], dtype=np.int64))
    out = _align(16) + _align(4 * -(-k // 4) * 4 if int8 else 8 * k)
    group = int(node.attrs.get("group", 1))
    if group > 1 and x is not None and group == x[0]:
        pads = list(node.attrs.get("pads", [0] * 2 * (len(x) - 1)))
        plane = int(np.prod([d + pads[j] + pads[j + len(x) - 1] for j, d in enumerate(x[1:])], dtype=np.int64))
        out += _align(max(2 * plane, 8 * group)) + _align(24)
    return out


def _align(n: int) -> int:
    return -(-int(n) // ALIGN) * ALIGN


def _converted(node: gs.Node, small: set[str], edges: set[str]) -> int:
    """Bytes of the copies an int8 build makes of `node`'s activation inputs while it runs: a float op reads an
    int8 tensor through a float copy (DequantizeLinear, 4 B per element), an int8 op a float one through an int8
    copy (QuantizeLinear, 1 B); stage edges are held in both formats already. An op the int8 lowering runs in
    float (FLOAT_IN_INT8) reads a float copy of its int8 input and writes a float result before quantising it."""
    runs_int8 = any(t.name in small for t in node.outputs)
    data = _data(node, edges)
    if runs_int8 and node.op in FLOAT_IN_INT8:
        return (sum(tensor_bytes(t, 4) for t in data if t.name in small)
                + sum(tensor_bytes(t, 4) for t in node.outputs))
    return sum(tensor_bytes(t, 1 if runs_int8 else 4) for t in data if (t.name in small) != runs_int8)


def tensor_bytes(t: gs.Tensor, float_size: int | None = None) -> int:
    """Per-sample bytes; `float_size` replaces the item size of a float tensor."""
    shape = sample_shape(t) if isinstance(t, gs.Variable) else None
    if shape is None:
        return 0
    itemsize = np.dtype(t.dtype).itemsize if t.dtype is not None else 4
    if float_size is not None and (t.dtype is None or np.issubdtype(np.dtype(t.dtype), np.floating)):
        itemsize = float_size
    return int(np.prod(shape, dtype=np.int64)) * itemsize
