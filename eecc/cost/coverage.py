"""The op kinds the shipped cost model measured; a stage holding any other is priced by analogy, an estimate."""

from __future__ import annotations

import numpy as np

from eecc.cost.activations import ACT
from eecc.cost.features import FREE, GATE, GLOBAL, POOL
from eecc.model import ir
from eecc.passes.annotate_cost import RECURRENT_OPS

# The op kinds of the units measured_*.json were fitted on (eecc.cost.__main__.all_units: the fixture zoo, the kws
# example, the digits MLP and the single-layer units; tests/test_cost_coverage.py checks this list against them),
# with QuantizeLinear / DequantizeLinear (the int8 units are those graphs quantised).
MEASURED_OPS = frozenset({
    "Add", "AveragePool", "Clip", "Conv", "Flatten", "Gemm", "GlobalAveragePool", "GreaterOrEqual", "HardSigmoid",
    "HardSwish", "LeakyRelu", "MatMul", "MaxPool", "Mul", "ReduceMax", "Relu", "Reshape", "Sigmoid", "Softmax",
    "QuantizeLinear", "DequantizeLinear"})
# Ops that lower to what a measured one does, or to nothing: TVM's Relax frontend turns ReduceMean over the spatial
# axes and GlobalAveragePool into the same relax.mean (targets/int8_lowering.py's global-mean rule matches both);
# views that move no data; a constant fill whose shape follows the batch (a GRU's zero initial state: a constant
# once the batch is fixed).
SAME_AS_MEASURED = frozenset({"ReduceMean", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Constant", "Shape",
                              "ConstantOfShape"})
SHAPE_TYPES = (np.int64, np.bool_)  # outputs of shape arithmetic and masks, not of the network's data


def unmeasured_ops(graph) -> list[str]:
    """Sorted op types of `graph` (gs.Graph, or onnx.GraphProto without the dtype test) that no measured unit of the
    cost model holds: a GRU (TVM cannot import it), a LayerNormalization or a Transpose (nu14 F2: an NHWC
    ConvNeXt-style model's M4 energy 29-42 % under QEMU's while labelled measured). Not counted: exit gates (their
    confidence over the classes, priced as the measured Softmax gate's whatever the metric) and nodes whose outputs
    are all int64 / bool (shape arithmetic: a dynamic export's Shape -> Gather -> Concat)."""
    if hasattr(graph, "nodes"):
        ops = {n.op for n in graph.nodes if ir.get_ann(n, "role") != "gate" and not _shape_only(n)}
    else:
        ops = {n.op_type for n in graph.node if ".gate." not in n.name}
    return sorted(ops - MEASURED_OPS - SAME_AS_MEASURED)


def _shape_only(node) -> bool:
    outs = [o for o in node.outputs if o.name]
    return bool(outs) and all(_dtype(o) in SHAPE_TYPES for o in outs)


def _dtype(tensor):
    """numpy scalar type of a gs tensor; None where unknown or not numpy's (gs keeps bfloat16 as an onnx enum)."""
    try:
        return None if tensor.dtype is None else np.dtype(tensor.dtype).type
    except TypeError:
        return None


def priced_as(op: str) -> str:
    """How eecc/cost/features.py prices an op kind no unit measured."""
    if op in RECURRENT_OPS:
        return "Gemm work"
    if op in FREE:
        return "no work"
    if op in POOL | GLOBAL:
        return "pooling work"
    if op in GATE:
        return "exit-gate work"
    if op in ACT:
        return "activation work"
    return "elementwise work"


def unmeasured_note(ops) -> str:
    """'GRU never measured, priced as Gemm work'; several kinds grouped by how they are priced, '; '-joined."""
    groups: dict[str, list[str]] = {}
    for op in ops:
        groups.setdefault(priced_as(op), []).append(op)
    return "; ".join(f"{', '.join(kinds)} never measured, priced as {how}" for how, kinds in groups.items())


def unmeasured_warning(ops, kinds=("cortex-m4",)) -> str:
    """The search's warning that its figures for the stages holding `ops` (unmeasured_ops) are estimates, with the
    way to count such a stage on the measured processor `kinds` instead: compile --emulate, under QEMU a Cortex-M's
    or a Cortex-A's (nu15 F2: an rk3588 Cortex-A stage was told 'Cortex-M'); none for a recurrent op: TVM cannot
    import it, so no stage holding one is compiled or emulated."""
    cores = " or ".join(sorted({"Cortex-A" if k.startswith("cortex-a") else "Cortex-M" for k in kinds}))
    advice = "" if RECURRENT_OPS & set(ops) else f"; compile --emulate counts a {cores} stage's instructions under QEMU"
    return (f"the cost model never measured {', '.join(ops)}: the latency and energy of stages holding "
            f"{'it' if len(ops) == 1 else 'them'} are estimates ({unmeasured_note(ops)})" + advice)


def counted_warning(ops) -> str:
    """unmeasured_warning once compile --emulate counted every stage holding `ops` (nu15 F2): the search chose on
    estimates, the bundle's stage figures are the emulated ones, and the advice already taken is not repeated."""
    return (f"the cost model never measured {', '.join(ops)}: the search chose on estimates of the stages holding "
            f"{'it' if len(ops) == 1 else 'them'} ({unmeasured_note(ops)}); --emulate counted those stages under "
            "QEMU, and the stage lines give the emulated figures in place of the estimates")
