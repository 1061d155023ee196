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

from eecc.model.ir import get_ann, sample_shape

NUMERICS = ("fp32", "int8")
# What onnxruntime's QDQ quantiser (eecc/targets/quantize.py, op_types_to_quantize = QUANTIZED_OPS) makes int8:
# these ops' outputs always (it quantises their inputs and outputs) ...
ALWAYS_INT8 = ("Conv", "Gemm", "MatMul", "Add", "GlobalAveragePool")
# ... these only when their input already is (onnxruntime's removable activations and direct 8-bit ops); any
# other op (LeakyRelu, Sigmoid, Mul, Erf, ...) runs in float, and so does what follows it until the next
# ALWAYS_INT8 op (nu10: LeakyRelu then AveragePool held 100,352 B of float where int8 sizes said 25,088)
FOLLOW_INT8 = ("Relu", "Clip", "MaxPool", "AveragePool", "Flatten", "Reshape")


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


def processor_needs(procs: Sequence[str], weights: Sequence[int], peaks: Sequence[int]) -> dict[str, tuple[int, int]]:
    """(storage bytes, RAM bytes) per processor for the stages on it (`procs[k]` runs stage k): stages on one
    processor run back to back from one program (targets/mcu_program.py), so their weights add up and their
    activations take two arenas, stage k's in arena k mod 2 (the hand-off stays where stage k left it): the RAM is
    the largest even stage's + the largest odd stage's peak (one stage: its own)."""
    out = {}
    for name in dict.fromkeys(procs):
        own = [k for k, p in enumerate(procs) if p == name]
        runs = [peaks[k] for k in own]
        out[name] = (sum(weights[k] for k in own), max(runs[0::2], default=0) + max(runs[1::2], default=0))
    return out


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
    """Peak per-sample bytes of live activations when `nodes` run one after another in this order: a tensor
    lives from its producer (an input: from the start) to its last consumer among `nodes`, an output to the end
    (int8: `inputs` and `outputs` 4 + 1 B per element, other tensors 1 B where `int8_tensors` (from the
    `quantized` inputs, default all) says int8, else their float size; fp32: their dtype's size)."""
    out_names = {t.name for t in outputs}
    edges = out_names | {t.name for t in inputs}
    small = int8_tensors(nodes, inputs if quantized is None else quantized) if int8 else set()

    def size(t: gs.Tensor) -> int:
        if not int8:
            return tensor_bytes(t)
        return tensor_bytes(t, 5 if t.name in edges else 1 if t.name in small else None)

    last_use: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for t in node.inputs:
            if isinstance(t, gs.Variable):
                last_use[t.name] = i
    live = {t.name: size(t) for t in inputs}
    peak = sum(live.values())
    for i, node in enumerate(nodes):
        if node.op == "Constant":
            continue
        for t in node.outputs:
            live[t.name] = size(t)
        peak = max(peak, sum(live.values()) + (_converted(node, small, edges) if int8 else 0))
        for name in [n for n in live if last_use.get(n, -1) <= i and n not in out_names]:
            del live[name]
    return int(peak)


def _converted(node: gs.Node, small: set[str], edges: set[str]) -> int:
    """Bytes of the copies an int8 build makes of `node`'s activation inputs while it runs: a float op reads an
    int8 tensor through a float copy (DequantizeLinear, 4 B per element), an int8 op a float one through an int8
    copy (QuantizeLinear, 1 B); stage edges are held in both formats already."""
    runs_int8 = any(t.name in small for t in node.outputs)
    data = [t for t in node.inputs if isinstance(t, gs.Variable) and t.name not in edges
            and not (t.inputs and t.inputs[0].op == "Constant")]
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
