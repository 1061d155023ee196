"""Activation features of the cost model (eecc/cost/features.py): Clip (ReLU6), HardSwish, and HardSigmoid with the Mul
of x · HardSigmoid(x) (TorchScript's Hardswish below opset 14), priced by how each (cpu, format) lowering runs them.

  act        output elements of an activation run as a pass of its own: in fp32 after a conv that eecc's own kernel
             runs (the M4F tile conv fuses bias and ReLU, nothing else) or after any other op; in int8 the float
             island the lowering leaves HardSigmoid / HardSwish in (a Clip costs nothing in int8: onnxruntime's
             quantiser folds it into the requantisation of the op before it, its QDQ "removable activation")
  act_fused  in fp32, output elements of one that TVM fuses into the conv before it (a conv TVM lowers: its output
             loop applies the activation)
  act_mul    of either, the elements of HardSigmoid / HardSwish (float multiplies: soft-float calls on the M0+)
An int8 island also counts its edges: the input dequantised and the output quantised again (features.py's
io_out / dequant_table and in_dense, as for an op left in float). The Mul of x · HardSigmoid(x) is part of the
HardSigmoid's pass in every lowering (M4F, fp32: the same 150,268 instructions as one HardSwish op on a 16×14×14
map, eecc/cost/layers.py ACTIVATION), so it counts nothing of its own. Before these features every activation was
`eltwise` work priced by the residual Adds of the fixtures (M4F fp32: ~39 instructions per element; nu9's
MobileNetV2-style stages 21-108 % over).
LeakyRelu and Sigmoid (with the Mul of SiLU = x · Sigmoid(x), as TorchScript exports it) are priced the same way (nu11:
a LeakyRelu after eecc's M4F tile conv was `eltwise` work, its stage 68 % over); in int8 both are float islands (the
quantiser, targets/quantize.QUANTIZED_OPS, leaves them in float), and a Sigmoid also counts
  act_exp    its output elements (an expf and a divide each: libm's expf, soft-float on the M0+)
  act_slope  of a LeakyRelu, its output elements (a compare and the slope's multiply: cheaper than HardSigmoid's
             act_mul work, M0+ int8 ~25 % over when priced as it)
In fp32 on a Cortex-M, `act_fused` also counts the elements of elementwise ops TVM fuses into the kernel of the Gemm /
MatMul, Transpose or Reshape they follow (fused_epilogue: a ViT's GELU Div, Erf, Add, Mul, Mul after its first MLP
layer, its residual Adds, the attention's scaling Muls; an Erf also counts act_exp: libm's erff, like expf). Each was
an `eltwise` pass of its own, priced by the CNN fixtures' residual Adds after eecc's tile conv (M4F 38.8 instructions
per element): the M4F profile of a tiny ViT's stage shows one TVM kernel, fused_matmul3_add6_divide1_erf_add7_multiply1
_multiply2, at ~21 instructions per element beyond its MACs plus erff's ~39. No measured unit has such an op after a
Gemm / MatMul / Transpose / Reshape (every unit's features are unchanged).
"""

from __future__ import annotations

import numpy as np

from eecc.cost.kernels import conv_kernel, table_dequantised

ACT = {"Clip", "HardSigmoid", "HardSwish", "LeakyRelu", "Sigmoid"}
GATING = {"HardSigmoid", "Sigmoid"}  # x · act(x): Hardswish below opset 14, SiLU
CARRY = {"MaxPool", "AveragePool", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}  # features.BEFORE_QUANTIZE
NAMES = ("act", "act_fused", "act_mul", "act_exp", "act_slope")


def gating_mul(node) -> bool:
    """A Mul of x and HardSigmoid(x) or Sigmoid(x) (the second half of a decomposed Hardswish or SiLU)."""
    if node.op != "Mul" or len(node.inputs) != 2:
        return False
    for a, b in (node.inputs, node.inputs[::-1]):
        made = a.inputs[0] if a.inputs else None
        if made is not None and made.op in GATING and made.inputs and made.inputs[0] is b:
            return True
    return False


EPILOGUE_AFTER = {"Gemm", "MatMul", "Transpose", "Reshape"}  # TVM's kernels an elementwise op after them joins


def fused_epilogue(node, elementwise, bias_add, depth: int = 0) -> bool:
    """Whether TVM fuses elementwise `node` into the kernel of the Gemm / MatMul (its bias Add), Transpose or Reshape
    before it, directly or through other fused elementwise ops: a Gemm's / MatMul's output joins when every reader of
    it is elementwise (GELU reads x twice), a Transpose's / Reshape's always. `elementwise(node)`, `bias_add(node)`:
    features.py's predicates."""
    if depth > 16 or not elementwise(node):
        return False
    for t in node.inputs:
        made = t.inputs[0] if getattr(t, "inputs", None) else None
        if made is None:
            continue
        if made.op in ("Transpose", "Reshape") or (all(elementwise(c) for c in t.outputs) and (
                made.op in EPILOGUE_AFTER or bias_add(made) or fused_epilogue(made, elementwise, bias_add, depth + 1))):
            return True
    return False


def epilogue_block(node, n_out: float) -> dict[str, float]:
    """{features.BASE name: value} of an elementwise op fused into a kernel's epilogue (fp32, Cortex-M)."""
    return {"act_fused": n_out, **({"act_exp": n_out} if node.op == "Erf" else {})}


def after_island(t) -> bool:
    """Whether tensor `t` is an int8 float island's output (an ACT other than Clip, or its gating Mul), directly or
    through CARRY ops: an average pool reading it stays float with no conversion edges of its own (onnxruntime's
    quantiser leaves a pool in float unless its input is quantised; nu11's LeakyReLU, then AvgPool: M4 int8 stage
    priced 18 % over with a dequantise and a quantise around the pool)."""
    while t.inputs:
        node = t.inputs[0]
        if (node.op in ACT and node.op != "Clip") or gating_mul(node):
            return True
        if node.op not in CARRY or not node.inputs:
            return False
        t = node.inputs[0]
    return False


def _island_output(node):
    """The tensor an activation chain ends in: the gating Mul's output after a HardSigmoid, else the node's own."""
    out = node.outputs[0]
    for user in out.outputs:
        if gating_mul(user):
            return user.outputs[0]
    return out


def _quantised_after(out, elems) -> tuple[int, int]:
    """(elements the int8 stage quantises after an island ending in `out`, max-pool work run in float on the way):
    onnxruntime's quantiser leaves max / average pools and reshapes that read a float tensor in float (they commute
    with the quantisation, as at a stage's entry: features.BEFORE_QUANTIZE), so the QuantizeLinear comes after them
    (nu9's mbv2 stage 0: Hardswish, then the exit head's 4x4 max pool and Flatten in float, 256 values quantised,
    not 3,136)."""
    float_max = 0
    while len(out.outputs) == 1 and out.outputs[0].op in CARRY and out.outputs[0].outputs:
        node, out = out.outputs[0], out.outputs[0].outputs[0]
        if node.op == "MaxPool":
            float_max += elems(out) * int(np.prod(node.attrs.get("kernel_shape", [1])))
    return (elems(out) if out.outputs else 0), float_max


def activation_block(node, cpu: str, fmt: str, n_out: float, elems) -> dict[str, float]:
    """{features.BASE name: value} of an ACT node on (cpu, fmt); `n_out` its output elements, `elems(tensor)` a
    tensor's elements per sample. In int8 a max pool the island runs in float moves from `pool` (the integer pool
    features.py priced it as) to `float_max`."""
    made = node.inputs[0].inputs[0] if node.inputs and node.inputs[0].inputs else None
    gated = node.op in GATING and _island_output(node) is not node.outputs[0]
    mul = 0 if node.op in ("Clip", "LeakyRelu") or (node.op == "Sigmoid" and not gated) else n_out
    exp = {"act_exp": n_out} if node.op == "Sigmoid" else {"act_slope": n_out} if node.op == "LeakyRelu" else {}
    if fmt == "int8":
        if node.op == "Clip":
            return {}
        n_in = elems(node.inputs[0])
        quantised, float_max = _quantised_after(_island_output(node), elems)
        return {"act": n_out, "act_mul": mul, **exp, "kernels": 1, "in_dense": quantised, "float_max": float_max,
                "pool": -float_max, "dequant_table" if table_dequantised(n_in, cpu) else "io_out": n_in}
    if made is not None and made.op == "Conv" and conv_kernel(made, cpu, fmt) == "tvm":  # TVM fuses it in
        return {"act_fused": n_out, "act_mul": mul, **exp}
    return {"act": n_out, "act_mul": mul, **exp, "kernels": 1}
