"""Work features of a stage graph, one block per (cpu, format): what the fitted cost model multiplies by instructions.

  f(stage)[cpu, format] = Σ_nodes f(node)[cpu, format] + io(stage) + [1 kernel per compute node] + [1]

A conv that the Cortex-M lowering gives one of eecc's own kernels is counted in that kernel's loop counts
(eecc/cost/kernels.py), what TVM lowers in the per-op-kind features below. The blocks lie side by side (FEATURES =
"<cpu>/<format>/<name>"): sums over pieces and stages stay plain sums, a (cpu, format) fit reads its own block.

Per-op-kind features of what TVM lowers, all per sample (batch excluded), MACs by the README convention:
  conv_macs   Conv with groups = 1 and a kernel > 1          Cout·spatial_out·Cin·prod(k)
  pw_macs     Conv with groups = 1 and a 1×1 kernel
  dw_macs     Conv with groups > 1 and one input channel per group (depthwise)
  grp_macs    Conv with groups > 1 and several input channels per group (TVM's on every core; M4F 5-9 per MAC)
  dil_macs    of those, MACs of a dilated Conv (TVM's on every core), besides its conv_macs / grp_macs
  gemm_macs   Gemm, MatMul                                    prod(out[1:]) · K
              RNN, GRU, LSTM  annotate_cost.recurrent_macs (TVM cannot import them: a guess, never measured)
  gemm_loop   MACs of the Gemm / MatMul whose reduction loop (K) TVM's matmul keeps as a loop: K > 32 (LLVM unrolls
              shorter ones fully; on the M4F a 32x32 layer runs at 4.5 instructions per MAC, a 64x64 one at 5.3);
              in int8 K > 48 (a shorter body: K = 48 is unrolled fully)
  gemm_rem    of those, MACs of the ones whose K - 1 (the loop after the peeled first MAC) has no divisor in 3..32
              (K = 48, 128, 200): LLVM unrolls it 4 times with exit tests in the body (_unroll; M4F: 5.7 instructions
              per MAC at 128x64, 5.3 at 100x100)
  gemm_far    of those, MACs × the share of an unrolled body's weight loads VLDR cannot reach from one base: weights are
              read down a [K, N] column, 4N bytes apart, VLDR reaches 1020 B, so 1 + 1020 // 4N of the U copies share
              a base, each other one costs an address add (M4F 100x64: 7 of 11)
  gemm_dense  in fp32 without an FPU, MACs of the Gemm / MatMul that read the model's own input (through reshapes): no
              ReLU zeros, every soft-float call runs in full (M0+: ~203 instructions per MAC, ~165 on a hidden layer)
  mac_out     output elements of those (bias, activation and requantisation epilogue)
  pad_in      padded input elements of convs (TVM pads the input in a pass of its own)
  pool        MaxPool / AveragePool: output elements × window; GlobalAveragePool / Reduce*: input elements
  pool_div    in int8, output elements of a 1-D AveragePool (left in float): TVM's avg_pool1d divides each by its window
              count (M0+ __aeabi_fdiv: 46.7k instructions for cnn1d unit 302's 128 outputs; bench/mcu_profile.py), its
              2-D pools do not (7.1k for cnn unit 300's 256); in fp32 the pool weight prices it (two units, too few)
  float_pool  in int8, the pool work of an AveragePool (FLOAT_IN_INT8: the lowering leaves it in float)
              (its input is dequantised, as io_out, unless it is an exit head reading the hand-off, which the stage
              dequantises for its output anyway; its output is quantised, as in_dense: an average is seldom zero)
  eltwise     output elements of Add/Sub/Mul/Div/Relu/Clip/... (residual adds, unfused activations; a Relu
              right after a Conv / Gemm is fused into it and free)
  gate        input elements of Softmax / LogSoftmax / Exp / ReduceMax / TopK (the exit gate, float even in int8)
  io_out      elements of the stage's outputs (int8: dequantised on exit: a soft-float multiply on the M0+), and
              in int8 the elements dequantised into an op left in float
  dequant_table  in int8, those of tensors the lowering dequantises by a 256-entry table instead (a load each:
              kernels.table_dequantised)
  in_work     elements of hand-off inputs quantised on entry (mcu_quantize's kernel: a float divide and add; the M0+'s
              soft-float divide returns early for a zero: a hand-off is a ReLU output, about half zeros)
  in_dense    elements of the model's own input quantised on entry (no zeros: every divide runs in full; QEMU: ~380
              instructions per M0+ __aeabi_fdiv of a non-zero, ~30 for a zero), in int8 also float ops' outputs
  float_max   in int8, MaxPool work (outputs × window) on a stage input before its quantisation: the quantiser moves
              the QuantizeLinear past max pools and reshapes, so those pools run in float and fewer elements are
              quantised (as in_dense: the max of a window of ReLU outputs is seldom zero)
  kernels     compute nodes (each is roughly one kernel call: a fixed per-call overhead); in the GPU block the kernels
              left after TVM's operator fusion (_gpu_fused), each one launch
  const       1 (the driver's fixed cost per inference)
  neon_macs, loop_macs, loop_iters, gemm_relu, sdot_macs: the Cortex-A blocks only (eecc/cost/aarch64.py)
  act, act_fused, act_mul, act_exp, act_slope: Clip, HardSigmoid, HardSwish, LeakyRelu, Sigmoid (eecc/cost/activations.py)
  + KERNEL_FEATURES (eecc/cost/kernels.py) of the convolutions lowered to eecc's kernels
Exit-head ops are priced as the same ops of the backbone (an exit head's 1×1 conv runs the same kernel).
QuantizeLinear / DequantizeLinear of a QDQ stage are skipped: the int8 lowering folds them into the
integer kernels (requantisation is then per output element, in mac_out) or into the edges (io_out, in_work).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from eecc.cost.activations import ACT, activation_block, after_island, epilogue_block, fused_epilogue, gating_mul
from eecc.cost.kernels import (GPU, GROUPS, KERNEL_FEATURES, conv_kernel, kernel_features, soft_float,
                                table_dequantised)
from eecc.model import ir
from eecc.passes.annotate_cost import RECURRENT_OPS, recurrent_macs

BASE = ("conv_macs", "pw_macs", "dw_macs", "gemm_macs", "gemm_loop", "gemm_rem", "gemm_far", "gemm_dense", "mac_out",
        "pad_in", "pool", "float_pool", "eltwise", "gate", "io_out", "in_work", "kernels", "const", "in_dense", "float_max",
        "dequant_table", "pool_div", "neon_macs", "loop_macs", "loop_iters", "gemm_relu", "sdot_macs",
        "act", "act_fused", "act_mul", *KERNEL_FEATURES, "act_exp", "act_slope", "grp_macs", "dil_macs")
# Ops the int8 lowering leaves in float (targets/int8_lowering.py rewrites conv, matmul, global mean, add,
# max pooling and reshapes): dequantised, computed in float (soft-float on the M0+), quantised again.
FLOAT_IN_INT8 = {"AveragePool", "LpPool"}
# TVM's matmul (fp32, and int8 through int8_lowering): a reduction loop over K per output, unrolled fully by LLVM up
# to K = 32 (seen in the M4F disassembly: 32 VMULs in a row), else _unroll's way; weights read down a column, 4N
# bytes apart, VLDR's immediate offset reaching 1020 bytes
UNROLLED_K, VLDR_REACH = 32, 1020
UNROLLED_K_INT8 = 48  # int8 (LDRSB, LDRSB, MLA per MAC): K = 48 fully unrolled, K = 64 a loop of 21 (M4 disassembly)
RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
A_KIND = "cortex-a"  # TVM's operators only, some of their loops vectorised: eecc/cost/aarch64.py
FEATURES = tuple(f"{cpu}/{fmt}/{name}" for cpu, fmt in GROUPS for name in BASE)
_INDEX = {f: i for i, f in enumerate(BASE)}
B = len(BASE)
QDQ = {"QuantizeLinear", "DequantizeLinear"}
POOL = {"MaxPool", "AveragePool", "LpPool"}
GLOBAL = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceL2"}
GATE = {"Softmax", "LogSoftmax", "Exp", "Log", "ReduceMax", "TopK", "ArgMax"}
# Ops the quantiser's QuantizeLinear commutes past (onnxruntime's QDQ propagation), in float at a stage's entry
BEFORE_QUANTIZE = {"MaxPool", "AveragePool", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
FREE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Constant", "Shape", "Concat",
        "Slice", "ConstantOfShape", "Expand", "Transpose", *QDQ}


def _elems(t) -> int:
    """Elements of one sample's share of tensor `t` (ir.sample_shape: attention's [N·tokens, dim] and [tokens, N, dim]
    hold tokens·dim; counted as one row, or none, a ViT's projections were priced at a sixteenth or nothing); 1 for
    a scalar or a 1-D tensor, 0 where the shape is unknown."""
    shape = getattr(t, "shape", None)
    if not shape or len(shape) == 1:
        return 1
    rest = ir.sample_shape(t) if isinstance(t, gs.Variable) else None
    return 0 if rest is None else int(np.prod(rest, dtype=np.int64))


def _conv(node: gs.Node, n_out: int) -> np.ndarray:
    """[B] TVM-operator features of a Conv (the block of a (cpu, format) that lowers it with TVM)."""
    f = np.zeros(B)
    w = node.inputs[1]
    per = int(np.prod(w.shape[1:])) if w.shape else 0
    group = int(node.attrs.get("group", 1))
    kind = "conv_macs" if group == 1 else ("dw_macs" if w.shape[1] == 1 else "grp_macs")
    kind = "pw_macs" if kind == "conv_macs" and int(np.prod(w.shape[2:])) == 1 else kind
    f[_INDEX[kind]] += n_out * per
    f[_INDEX["dil_macs"]] += n_out * per if any(int(d) > 1 for d in node.attrs.get("dilations", [])) else 0
    f[_INDEX["mac_out"]] += n_out
    # pads = (begin per axis..., end per axis...): TVM pads the input first (in int8 with its zero point)
    pads = [int(p) for p in node.attrs.get("pads", [])] or [0] * (2 * (len(w.shape) - 2))
    shape = [int(d) for d in (node.inputs[0].shape or [])[1:]]
    half = len(pads) // 2
    f[_INDEX["pad_in"]] += shape[0] * int(np.prod([d + pads[i] + pads[i + half] for i, d in enumerate(shape[1:])]))
    return f


def _reduction(node: gs.Node) -> int:
    """K of a Gemm / MatMul (0 when unknown)."""
    a = node.inputs[0]
    if not a.shape:
        return 0
    k = a.shape[0] if node.op == "Gemm" and int(node.attrs.get("transA", 0)) else a.shape[-1]
    return int(k) if isinstance(k, (int, np.integer)) else 0


def _gemm(node: gs.Node, n_out: int, model_input: str | None) -> np.ndarray:
    """[B] of a Gemm / MatMul: its MACs (n_out·K), those in a kept reduction loop, in one unrolled with exit tests,
    those reading a wide weight matrix or the model input `model_input` (module docstring), its output elements."""
    f, a, k = np.zeros(B), node.inputs[0], _reduction(node)
    shape = getattr(node.outputs[0], "shape", None) or [0]
    n, macs = (int(shape[-1]) if isinstance(shape[-1], (int, np.integer)) else 0), n_out * k
    f[_INDEX["gemm_macs"]] += macs
    if k > UNROLLED_K:
        copies, exit_tests = _unroll(k)
        f[_INDEX["gemm_loop"]] += macs
        f[_INDEX["gemm_rem"]] += macs if exit_tests else 0
        f[_INDEX["gemm_far"]] += macs * max(0, copies - (1 + VLDR_REACH // (4 * n))) / copies if n else 0
    x = a
    while x.inputs and x.inputs[0].op in RESHAPES:  # the model input flattened / reshaped for the first layer
        x = x.inputs[0].inputs[0]
    f[_INDEX["gemm_dense"]] += macs if model_input is not None and not x.inputs and x.name == model_input else 0
    f[_INDEX["mac_out"]] += n_out
    return f


def _unroll(k: int) -> tuple[int, bool]:
    """(copies U of the body, exit tests in it) of the loop LLVM makes of TVM's matmul reduction over K: its trip
    count K - 1 (the first MAC is peeled) split by its largest divisor up to 32 (M4F disassembly: U = 21 at K = 64,
    11 at 100, 13 at 144, 17 at 256), else (K - 1 prime: 48, 128, 200) 4 copies with exit tests."""
    divisors = [d for d in range(3, 33) if (k - 1) % d == 0]
    return (max(divisors), False) if divisors else (4, True)


def _fused(node: gs.Node) -> bool:
    """A Relu right after a Conv / Gemm / MatMul (or a MatMul's bias Add): every lowering folds it into that
    kernel's epilogue (TVM's operator fusion, conv2d_f32's relu, the int8 requantisation's clamp), so it costs no
    pass of its own."""
    producers = node.inputs[0].inputs if node.inputs else []
    return node.op == "Relu" and len(producers) == 1 and (producers[0].op in ("Conv", "Gemm", "MatMul")
                                                          or _bias_add(producers[0]))


def _bias_add(node: gs.Node) -> bool:
    """An Add of a constant to a MatMul's output that nothing else reads (Linear as MatMul + Add): TVM fuses it
    into the matmul in fp32; in int8 the quantiser keeps it an integer Add of its own."""
    if node.op != "Add" or len(node.inputs) != 2:
        return False
    made = [t for t in node.inputs if t.inputs]
    return len(made) == 1 and made[0].inputs[0].op == "MatMul" and len(made[0].outputs) == 1 \
        and any(isinstance(t, gs.Constant) for t in node.inputs)


def _op_features(node: gs.Node, model_input: str | None = None) -> np.ndarray:
    """[B] per-op-kind work of one node lowered with TVM's operators (kernels and const excluded); `model_input`:
    the model's own input tensor's name (Gemms reading it: gemm_dense)."""
    f = np.zeros(B)
    named = [o for o in node.outputs if o.name]  # an omitted optional output is named ''
    op, out = node.op, (named[0] if named else None)
    if op in FREE or out is None or _fused(node) or gating_mul(node):  # (the Mul is in its HardSigmoid's pass)
        return f
    n_out = _elems(out)
    if op == "Conv":
        f += _conv(node, n_out)
    elif op in RECURRENT_OPS:  # its matrix-vector products, priced as Gemm work: no measured unit has a recurrent op
        f[_INDEX["gemm_macs"]] += recurrent_macs(node)
        f[_INDEX["mac_out"]] += n_out
    elif op in ("Gemm", "MatMul"):
        f += _gemm(node, n_out, model_input)
    elif op in POOL:
        f[_INDEX["pool"]] += n_out * int(np.prod(node.attrs.get("kernel_shape", [1])))
    elif op in GLOBAL:
        f[_INDEX["pool"]] += _elems(node.inputs[0])
    elif op in GATE:
        f[_INDEX["gate"]] += _elems(node.inputs[0])
    elif op in ACT:  # priced per lowering in _block
        f[_INDEX["act"]] += n_out
    else:  # elementwise and anything unknown: one unit of work per output element
        f[_INDEX["eltwise"]] += n_out
    f[_INDEX["kernels"]] += 1
    return f


def _block(node: gs.Node, cpu: str, fmt: str, ops: np.ndarray) -> np.ndarray:
    """[B] of one node on (cpu, fmt): its eecc kernel's loop counts, else `ops` (its TVM-operator features)."""
    if cpu == GPU:  # only whether the node launches a kernel of its own
        f = np.zeros(B)
        f[_INDEX["kernels"]] = 0.0 if not ops[_INDEX["kernels"]] or _gpu_fused(node) else 1.0
        return f
    if node.op in ACT:
        f = np.zeros(B)
        for name, value in activation_block(node, cpu, fmt, ops[_INDEX["act"]], _elems).items():
            f[_INDEX[name]] += value
        return f
    if fmt == "int8" and node.op in FLOAT_IN_INT8:
        f = np.zeros(B)
        f[_INDEX["float_pool"]] = ops[_INDEX["pool"]]
        f[_INDEX["pool_div"]] = _elems(node.outputs[0]) if len(node.attrs.get("kernel_shape", [])) == 1 else 0
        deq, f[_INDEX["in_dense"]] = (0, 0) if after_island(node.inputs[0]) else _float_edges(node)
        f[_INDEX[_dequant(deq, cpu)]] = deq
        f[_INDEX["kernels"]] = ops[_INDEX["kernels"]]
        return f
    if fmt == "fp32" and _bias_add(node):
        return np.zeros(B)  # fused into the matmul before it
    if fmt == "fp32" and cpu != A_KIND and ops[_INDEX["eltwise"]] and fused_epilogue(node, _elementwise, _bias_add):
        return _vector(epilogue_block(node, ops[_INDEX["eltwise"]]))
    kernel = conv_kernel(node, cpu, fmt) if node.op == "Conv" else "tvm"
    if kernel == "tvm" and ops[_INDEX["gemm_dense"]] and not (fmt == "fp32" and soft_float(cpu)):
        ops = ops.copy()
        ops[_INDEX["gemm_dense"]] = 0  # integer or FPU arithmetic: its cost does not depend on the values
    if fmt == "int8" and node.op in ("Gemm", "MatMul") and _reduction(node) <= UNROLLED_K_INT8:
        ops = ops.copy()  # the int8 body is shorter: LLVM unrolls longer reductions fully
        ops[[_INDEX["gemm_loop"], _INDEX["gemm_rem"], _INDEX["gemm_far"]]] = 0
    if kernel == "tvm":
        if cpu == A_KIND:  # TVM's operators, some loops vectorised
            from eecc.cost.aarch64 import node_block
            return node_block(node, fmt, ops)
        return ops
    f = np.zeros(B)
    for name, value in kernel_features(node, kernel, cpu, fmt).items():
        f[_INDEX[name]] += value
    f[_INDEX["kernels"]] += 1
    return f


# What TVM's operator fusion (FuseOps) lets elementwise ops after it join on a GPU: a conv's, a matmul's or a pool's
# kernel (out-elementwise-fusable), or another elementwise op's; seen in the Mali launch plans (targets/gpu_plan.py):
# Conv + bias + Clip, Conv + bias + HardSigmoid + Mul, Conv + bias + residual Add are one kernel each.
GPU_EPILOGUE_AFTER = {"Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "AveragePool"}


def _pointwise(node: gs.Node) -> bool:
    """An elementwise or broadcast op (activations included), as TVM fuses them; not views (FREE), pools,
    reductions, gates or the ops with a reduction inside."""
    return node.op not in FREE | POOL | GLOBAL | GATE | RECURRENT_OPS | {"Conv", "ConvTranspose", "Gemm", "MatMul",
                                                                         "LayerNormalization"}


def _gpu_fused(node: gs.Node) -> bool:
    """Whether elementwise `node` joins the kernel that makes one of its inputs (GPU_EPILOGUE_AFTER or elementwise)
    rather than launching its own: when every reader of that input is elementwise too (HardSigmoid and its Mul both
    read the conv's output; a residual Add joins the conv whose output nothing else reads)."""
    if not _pointwise(node):
        return False
    for t in node.inputs:
        made = t.inputs[0] if getattr(t, "inputs", None) else None
        if made is not None and (made.op in GPU_EPILOGUE_AFTER or _pointwise(made)) and \
                all(_pointwise(c) for c in t.outputs):
            return True
    return False


def _elementwise(node: gs.Node) -> bool:
    """An op _op_features prices as `eltwise` that TVM can fuse into a kernel's loop (not LayerNormalization: a
    reduction, a kernel of its own)."""
    return node.op not in FREE | POOL | GLOBAL | GATE | ACT | RECURRENT_OPS | {"Conv", "Gemm", "MatMul",
                                                                               "LayerNormalization"} \
        and not (_fused(node) or gating_mul(node) or _bias_add(node))


def _vector(named_values: dict[str, float]) -> np.ndarray:
    f = np.zeros(B)
    for name, value in named_values.items():
        f[_INDEX[name]] += value
    return f


def _float_edges(node: gs.Node) -> tuple[int, int]:
    """(elements dequantised into, quantised out of) an op the int8 lowering leaves in float (an exit head's
    pooling reads the hand-off, which the stage dequantises for its output anyway)."""
    shared = ir.get_ann(node, "role") == "exit"
    return (0 if shared else _elems(node.inputs[0])), _elems(node.outputs[0])


def _dequant(n: int, cpu: str) -> str:
    """The int8 feature that prices dequantising a tensor of n elements on `cpu`."""
    return "dequant_table" if table_dequantised(n, cpu) else "io_out"


def node_features(node: gs.Node, model_input: str | None = None) -> np.ndarray:
    """[len(FEATURES)] work of one node on every (cpu, format) (const and in_work excluded); `model_input` as in
    graph_features."""
    ops = _op_features(node, model_input)
    return np.concatenate([_block(node, cpu, fmt, ops) for cpu, fmt in GROUPS])


def graph_features(graph: gs.Graph | onnx.ModelProto, *, roles: set[str | None] | None = None,
                   with_io: bool = True, model_input: str | None = None) -> np.ndarray:
    """Σ node_features over the graph's nodes (those whose `role` annotation is in `roles`, or all),
    plus io, const and entry_features when `with_io`; `model_input` names the model's own input (its
    elements count as in_dense and the Gemms reading it as gemm_dense; other inputs are hand-offs). A ModelProto
    is read through ir (shapes inferred)."""
    if isinstance(graph, onnx.ModelProto):
        graph = ir.from_model(graph, classifier=False)
    f = np.zeros(len(FEATURES))
    for node in graph.nodes:
        if roles is None or ir.get_ann(node, "role") in roles:
            f += node_features(node, model_input)
    if with_io:
        from eecc.cost.edges import entry_features, io_features  # (edges.py reads this module's columns)

        dense = [_elems(t) for t in graph.inputs if t.name == model_input]
        f += io_features([_elems(t) for t in graph.inputs if t.name != model_input],
                         [_elems(t) for t in graph.outputs], dense=sum(dense))
        f += entry_features(graph, model_input=model_input)
    return f


def block(cpu: str, fmt: str) -> slice:
    """The columns of FEATURES that belong to (cpu, fmt)."""
    g = GROUPS.index((cpu, fmt))
    return slice(g * B, (g + 1) * B)


def named(features: np.ndarray, cpu: str, fmt: str) -> dict[str, float]:
    """{BASE name: value} of one (cpu, fmt) block of a feature vector."""
    return dict(zip(BASE, map(float, np.asarray(features)[block(cpu, fmt)])))


