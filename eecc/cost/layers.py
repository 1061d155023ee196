"""Single-layer measurement units: the cost model's microbenchmarks beside the fixture cuts (eecc/cost/measure.py).

The fixtures alone leave kernel variants with one model each (1-D convolutions: only the 1D CNN; convolutions
with odd Cout or odd pixel counts; small-K convolutions on the M0+), so a fit without that model cannot price
them. These layers cover each variant over a range of shapes (tile remainders included): a graph
x -> Conv/Gemm/pool -> Relu, seeded random weights, measured like every unit. Their rows are named
"layer:<spec>" and are never held out (they belong to no fixture).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (name, input shape without batch, op attributes): conv = (Cout, kernel, strides, pads, group)
CONV1D = [(1, 8, 5, 32, 1, 2), (8, 16, 3, 16, 1, 1), (16, 16, 5, 24, 1, 2), (16, 32, 3, 12, 2, 1),
          (4, 12, 1, 20, 1, 0), (32, 16, 3, 8, 1, 1), (12, 24, 7, 30, 2, 3)]          # C, O, k, L, stride, pad
CONV2D = [(3, 5, 3, 3, 7, 7, 1, 1), (8, 9, 3, 3, 5, 5, 1, 1), (1, 12, 5, 3, 15, 7, 2, 1), (16, 7, 1, 1, 6, 5, 1, 0),
          (32, 24, 3, 3, 4, 4, 1, 1), (12, 16, 3, 3, 9, 9, 2, 1), (6, 10, 3, 3, 8, 8, 1, 0),
          (24, 33, 1, 1, 3, 3, 1, 0), (1, 16, 3, 3, 12, 12, 1, 1),
          # K = C·kh·kw ≥ 100 (the M0+'s tiled kernel too), Cout and pixel counts odd and even
          (16, 16, 3, 3, 8, 8, 1, 1), (12, 24, 3, 3, 6, 6, 1, 1), (32, 8, 3, 3, 5, 5, 1, 1), (16, 32, 3, 3, 4, 4, 1, 1),
          (128, 16, 1, 1, 4, 4, 1, 0), (48, 11, 3, 3, 3, 3, 1, 1), (20, 6, 5, 5, 6, 6, 1, 2), (64, 64, 3, 3, 2, 2, 1, 1),
          (16, 24, 3, 3, 9, 7, 2, 1)]                                                # C, O, kh, kw, H, W, stride, pad
DEPTHWISE = [(8, 3, 9, 9, 1, 1), (16, 3, 10, 10, 2, 1), (12, 5, 7, 7, 1, 2), (24, 3, 5, 3, 1, 1),
             (32, 3, 4, 4, 1, 1), (20, 3, 7, 6, 2, 1)]                                # C, k, H, W, stride, pad
GEMM = [(64, 10), (144, 32), (20, 5), (200, 64)]                                      # in, out
POOL = [("MaxPool", 16, 8, 8), ("GlobalAveragePool", 32, 5, 5), ("MaxPool", 12, 7, 9)]  # op, C, H, W
CHAIN = [(8, 16, 3, 5, 16), (4, 8, 3, 1, 8), (1, 8, 3, 3, 10)]       # C, O, k1, k2, L or H=W: conv k2 after conv k1
AVGPOOL = [(16, 24, 6), (8, 8, 2), (12, 7, 3), (6, 30, 4)]   # C, L (rank 1 if L ≥ 24) or H=W, window: conv then AveragePool
RESIDUAL = [(8, 8, 8), (16, 6, 6), (32, 4, 3)]                                         # C, H, W: relu(conv3x3(x) + x)
# Exit gates over C classes (a Gemm's logits, Softmax, ReduceMax, >= threshold, as passes/insert_gates builds): the
# fixtures have 10-12 classes except cnn1d's 2, so without these the fit cannot tell a gate's per-class cost from the
# per-inference constant (held out, one fixture's small pieces took the other's balance: up to +39 %).
GATES = [2, 5, 20, 40]                                                                 # classes, from 16 features
# Dense layers as MLPs run them: the fixtures' Gemms are 10-12-class heads, priced at ~4.3 instructions per MAC on
# the M4F while a 128x128 layer runs at 6.2 (TVM's matmul loop; features.py gemm_loop / gemm_rem / gemm_far).
# Widths of digits-sized MLPs, reductions K whose loop LLVM unrolls fully (K <= 32), by a divisor of K - 1 (64, 100,
# 256) or with exit tests (K - 1 prime: 48, 128, 200); with and without bias and ReLU; as the exporters write them:
# TorchScript's Flatten + Gemm(transB), dynamo's Reshape + Gemm(transB), MatMul + Add.
DENSE = [(64, 128, 1, 1, "flatten"), (128, 128, 1, 1, "gemm"), (128, 10, 1, 0, "gemm"), (64, 256, 1, 1, "reshape"),
         (256, 256, 1, 1, "gemm"), (256, 10, 1, 0, "matmul"), (48, 96, 0, 1, "gemm"), (200, 100, 1, 1, "matmul"),
         (100, 64, 1, 0, "gemm"), (32, 200, 1, 1, "gemm"), (144, 48, 0, 0, "matmul"), (96, 160, 1, 1, "reshape")]
MLP2 = [(64, 128, 10), (256, 64, 32), (100, 200, 12)]          # K, hidden, N: Gemm-ReLU-Gemm (an [N, F] hand-off)
# MobileNet-style activations after a conv (nu9: MobileNetV2-style stages priced 21-108 % over): Hardswish as
# TorchScript opset < 14 writes it (HardSigmoid + Mul), as one HardSwish op, and ReLU6 (Clip 0..6), after a
# 3x3 / 1x1 / depthwise conv; and inverted-residual blocks (1x1 expand, ReLU6, depthwise 3x3, ReLU6, 1x1 project, Add).
ACTIVATION = [("hsig", 1, 16, 3, 28, 2, 1), ("hswish", 1, 16, 3, 28, 2, 1), ("hsig", 8, 12, 1, 9, 1, 1),
              ("hswish", 16, 24, 1, 7, 1, 1), ("relu6", 16, 64, 1, 14, 1, 1), ("relu6", 8, 16, 3, 8, 1, 1),
              ("relu6", 32, 32, 3, 10, 2, 32), ("relu6", 24, 24, 3, 7, 1, 24)]  # act, C, O, k, H=W, stride, group
INVERTED = [(16, 64, 8), (24, 96, 5)]                                                    # C, expanded, H=W
# Convolutions no eecc kernel takes (mcu_kernels.fits: dilation 1 and groups 1 or depthwise only; conv2d_f32: dilation 1,
# groups 1): TVM's conv on every core, which no unit above measured on the M4 (nu11's 1-D CNN with dilated and grouped
# Conv1d: its M4F stages priced 3.2x under their QEMU counts, the TVM conv weights of the M4 groups fitted to 0).
TVM_CONV = [(28, 32, 3, 28, 1, 1, 2), (16, 24, 5, 40, 1, 1, 2), (32, 32, 3, 24, 1, 1, 4), (32, 32, 3, 28, 1, 4, 1),
            (64, 64, 3, 14, 1, 8, 1), (24, 48, 5, 20, 1, 2, 1), (64, 64, 3, 14, 1, 4, 4), (8, 16, 3, 12, 2, 1, 2),
            (16, 16, 3, 8, 2, 1, 2), (16, 32, 3, 8, 2, 4, 1), (32, 32, 3, 6, 2, 8, 1), (24, 24, 3, 9, 2, 3, 1)]
#                                                     C, O, k, L or H=W, rank, group, dilation (stride 1, "same" pads)
# Activations with an exponential or a slope (nu11's Fashion-MNIST CNN: LeakyReLU priced 68 % over as `eltwise`
# work; SiLU = x · Sigmoid(x) as TorchScript exports it): after a 3x3 / 1x1 / depthwise conv, as ACTIVATION
ACTIVATION2 = [("leaky", 1, 16, 3, 28, 1, 1), ("leaky", 16, 32, 3, 14, 1, 1), ("leaky", 16, 24, 1, 10, 1, 1),
               ("leaky", 24, 24, 3, 8, 1, 24), ("silu", 16, 32, 3, 14, 1, 1), ("silu", 8, 16, 1, 12, 1, 1),
               ("silu", 24, 24, 3, 7, 1, 24), ("sigmoid", 16, 16, 3, 8, 1, 1)]
MLP = (64, 256, 256, 256, 10)  # the digits MLP of tests/fixtures/make_foreign.py: a held-out fixture (mlp_fixture)


def _model(name: str, in_shape: list[int], nodes, inits, out_shape: list[int]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *in_shape])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", *out_shape])
    graph = helper.make_graph(nodes, name, [x], [y], [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _conv(name, c, o, kernel, spatial, stride, pad, group, rng, dilation: int = 1) -> onnx.ModelProto:
    out = [(d + 2 * pad - dilation * (k - 1) - 1) // stride + 1 for d, k in zip(spatial, kernel)]
    w = rng.normal(0, 1 / np.sqrt(c // group * np.prod(kernel)), (o, c // group, *kernel)).astype(np.float32)
    b = rng.normal(0, 0.1, o).astype(np.float32)
    dilated = {"dilations": [dilation] * len(kernel)} if dilation > 1 else {}  # (the earlier units' bytes unchanged)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(kernel), group=group,
                            strides=[stride] * len(kernel), pads=[pad] * (2 * len(kernel)), **dilated)
    return _model(name, [c, *spatial], [conv, helper.make_node("Relu", ["c"], ["y"])], {"w": w, "b": b}, [o, *out])


def layer_models(seed: int = 0) -> dict[str, onnx.ModelProto]:
    """{"layer:<spec>": float model} of every single-layer unit (deterministic)."""
    rng, out = np.random.default_rng(seed), {}
    for c, o, k, n, s, p in CONV1D:
        out[f"layer:conv1d-{c}x{n}-o{o}k{k}s{s}"] = _conv("conv1d", c, o, [k], [n], s, p, 1, rng)
    for c, o, kh, kw, h, w, s, p in CONV2D:
        out[f"layer:conv2d-{c}x{h}x{w}-o{o}k{kh}x{kw}s{s}"] = _conv("conv2d", c, o, [kh, kw], [h, w], s, p, 1, rng)
    for c, k, h, w, s, p in DEPTHWISE:
        out[f"layer:dw-{c}x{h}x{w}-k{k}s{s}"] = _conv("dw", c, c, [k, k], [h, w], s, p, c, rng)
    for i, o in GEMM:
        w = rng.normal(0, 1 / np.sqrt(i), (o, i)).astype(np.float32)
        gemm = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
        out[f"layer:gemm-{i}-o{o}"] = _model("gemm", [i], [gemm], {"w": w, "b": np.zeros(o, np.float32)}, [o])
    for op, c, h, w in POOL:
        attrs = {"kernel_shape": [2, 2], "strides": [2, 2]} if op == "MaxPool" else {}
        shape = [c, h // 2, w // 2] if op == "MaxPool" else [c, 1, 1]
        out[f"layer:{op.lower()}-{c}x{h}x{w}"] = _model(op, [c, h, w], [helper.make_node(op, ["x"], ["y"], **attrs)],
                                                        {}, shape)
    for c, o, k1, k2, n in CHAIN:  # a second conv that reads no stage input (no fused input quantisation)
        rank = 1 if n == 16 else 2
        m = _conv("chain", c, o, [k1] * rank, [n] * rank, 1, k1 // 2, 1, rng)
        w = rng.normal(0, 1 / np.sqrt(o * k2 ** rank), (o, o, *[k2] * rank)).astype(np.float32)
        m.graph.initializer.append(numpy_helper.from_array(w, "w2"))
        m.graph.node[1].CopyFrom(helper.make_node("Relu", ["c"], ["r"]))
        m.graph.node.append(helper.make_node("Conv", ["r", "w2"], ["y"], kernel_shape=[k2] * rank, pads=[0] * 2 * rank))
        m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", o,
                                                                 *[n - k2 + 1] * rank]))
        out[f"layer:chain-{c}x{n}-o{o}k{k1}k{k2}r{rank}"] = m
    for c, n, k in AVGPOOL:  # not lowered to integers: pooled in float between a dequantize and a quantize
        rank = 1 if n >= 24 else 2
        m = _conv("avg", c, c, [3] * rank, [n] * rank, 1, 1, 1, rng)
        m.graph.node[1].CopyFrom(helper.make_node("Relu", ["c"], ["r"]))
        m.graph.node.append(helper.make_node("AveragePool", ["r"], ["y"], kernel_shape=[k] * rank, strides=[k] * rank,
                                             ceil_mode=1))
        m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", c, *[-(-n // k)] * rank]))
        out[f"layer:avgpool-{c}x{n}-k{k}r{rank}"] = m
    for c, h, w in RESIDUAL:
        m = _conv("res", c, c, [3, 3], [h, w], 1, 1, 1, rng)
        m.graph.node[1].CopyFrom(helper.make_node("Add", ["c", "x"], ["s"]))
        m.graph.node.append(helper.make_node("Relu", ["s"], ["y"]))
        out[f"layer:residual-{c}x{h}x{w}"] = m
    for classes in GATES:
        out[f"layer:gate-16-o{classes}"] = _gate(classes, rng)
    for k, o, bias, relu, style in DENSE:
        out[f"layer:dense-{k}-o{o}{'b' if bias else ''}{'r' if relu else ''}-{style}"] = _dense(k, o, bias, relu, style,
                                                                                               rng)
    for k, h, o in MLP2:
        out[f"layer:mlp2-{k}-h{h}-o{o}"] = _mlp2(k, h, o, rng)
    for spec in ACTIVATION:
        out.update([_activation_unit(*spec, rng)])
    for c, e, n in INVERTED:
        out[f"layer:inverted-{c}x{n}-e{e}"] = _inverted(c, e, n, rng)
    for c, o, k, n, rank, group, dil in TVM_CONV:
        name = f"layer:tvmconv-{c}x{n}-o{o}k{k}r{rank}g{group}d{dil}"
        out[name] = _conv("tvmconv", c, o, [k] * rank, [n] * rank, 1, dil * (k // 2), group, rng, dilation=dil)
    for spec in ACTIVATION2:
        out.update([_activation_unit(*spec, rng)])
    return out  # new units go last: the seeded draws of the earlier ones (their bytes, their cached counts) stay


def _activation_unit(act: str, c: int, o: int, k: int, n: int, stride: int, group: int,
                     rng) -> tuple[str, onnx.ModelProto]:
    """("layer:<act>-...", a k x k conv [batch, c, n, n] -> [batch, o, ...] followed by the activation `act`)."""
    m = _conv("act", c, o, [k, k], [n, n], stride, k // 2, group, rng)
    del m.graph.node[1]  # the Relu
    m.graph.node.extend(_activation(act, "c", "y", m))
    return f"layer:{act}-{c}x{n}-o{o}k{k}s{stride}{'dw' if group > 1 else ''}", m


def _mlp2(k: int, h: int, o: int, rng) -> onnx.ModelProto:
    """Gemm K -> h + bias + Relu, then Gemm h -> o + bias: [batch, K] -> [batch, o] (two dense layers, one unit)."""
    m = _dense(k, h, 1, 1, "gemm", rng)
    second = _dense(h, o, 1, 0, "gemm", rng).graph
    m.graph.node[-1].output[0] = "h"
    m.graph.node.append(helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], transB=1))
    m.graph.initializer.extend([numpy_helper.from_array(numpy_helper.to_array(t), f"{t.name}2")
                                for t in second.initializer])
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", o]))
    return m


def _dense(k: int, o: int, bias: int, relu: int, style: str, rng) -> onnx.ModelProto:
    """x [N, k] (or [N, 1, 8, 8] for k = 64 flattened / reshaped) -> dense layer -> [N, o]; style: "gemm",
    "flatten" / "reshape" (Flatten / Reshape to [-1, k] first, as TorchScript / dynamo export), "matmul" (MatMul
    with a [k, o] weight, then Add of the bias)."""
    w = rng.normal(0, 1 / np.sqrt(k), (o, k)).astype(np.float32)
    inits, nodes, x = {"b": rng.normal(0, 0.1, o).astype(np.float32)} if bias else {}, [], "x"
    if style in ("flatten", "reshape"):
        nodes.append(helper.make_node("Flatten", ["x"], ["f"]) if style == "flatten"
                     else helper.make_node("Reshape", ["x", "shape"], ["f"]))
        inits |= {"shape": np.array([-1, k], np.int64)} if style == "reshape" else {}
        x = "f"
    last = "y" if not relu else "z"
    if style == "matmul":
        inits["w"] = np.ascontiguousarray(w.T)
        nodes.append(helper.make_node("MatMul", [x, "w"], ["m" if bias else last]))
        nodes += [helper.make_node("Add", ["m", "b"], [last])] if bias else []
    else:
        inits["w"] = w
        nodes.append(helper.make_node("Gemm", [x, "w", *(["b"] if bias else [])], [last], transB=1))
    nodes += [helper.make_node("Relu", ["z"], ["y"])] if relu else []
    in_shape = [1, 8, 8] if style in ("flatten", "reshape") and k == 64 else [k]
    return _model("dense", in_shape, nodes, inits, [o])


def mlp_fixture(seed: int = 0) -> onnx.ModelProto:
    """The digits MLP's shape (MLP: Flatten, Gemm-ReLU layers, a Gemm classifier, as TorchScript exports it) with
    seeded random weights: a fixture of the held-out set (`python -m eecc.cost held-out`), cut at its candidates."""
    rng, nodes, inits, x = np.random.default_rng(seed), [helper.make_node("Flatten", ["x"], ["h0"])], {}, "h0"
    for i, (k, o) in enumerate(zip(MLP[:-1], MLP[1:])):
        inits |= {f"w{i}": rng.normal(0, 1 / np.sqrt(k), (o, k)).astype(np.float32),
                  f"b{i}": rng.normal(0, 0.1, o).astype(np.float32)}
        last = i == len(MLP) - 2
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], ["y" if last else f"g{i}"], transB=1))
        nodes += [] if last else [helper.make_node("Relu", [f"g{i}"], [f"h{i + 1}"])]
        x = f"h{i + 1}"
    return _model("mlp", [1, 8, 8], nodes, inits, [MLP[-1]])


def _gate(classes: int, rng) -> onnx.ModelProto:
    """x [N, 16] -> logits [N, classes] (Gemm) and the max-softmax exit flag [N] (bool), a stage's exit outputs."""
    w = rng.normal(0, 0.25, (classes, 16)).astype(np.float32)
    n = helper.make_node
    nodes = [n("Gemm", ["x", "w", "b"], ["logits"], transB=1), n("Softmax", ["logits"], ["p"], axis=1),
             n("ReduceMax", ["p"], ["conf"], axes=[1], keepdims=0), n("GreaterOrEqual", ["conf", "t"], ["exit"])]
    inits = {"w": w, "b": np.zeros(classes, np.float32), "t": np.array(0.5, np.float32)}
    graph = helper.make_graph(nodes, "gate", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
                               helper.make_tensor_value_info("exit", TensorProto.BOOL, ["batch"])],
                              [numpy_helper.from_array(a, k) for k, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _activation(act: str, x: str, y: str, model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes of y = act(x) as exporters write it: "relu6" Clip(x, 0, 6) (its bounds added to `model`'s
    initializers), "hswish" HardSwish, "hsig" x · HardSigmoid(x) (alpha 1/6, beta 0.5: TorchScript's Hardswish below
    opset 14), "leaky" LeakyRelu (alpha 0.1), "sigmoid" Sigmoid, "silu" x · Sigmoid(x) (TorchScript's SiLU)."""
    if act == "leaky":
        return [helper.make_node("LeakyRelu", [x], [y], alpha=0.1)]
    if act in ("sigmoid", "silu"):
        gated = act == "silu"
        return [helper.make_node("Sigmoid", [x], [f"{y}.s" if gated else y])] + \
            ([helper.make_node("Mul", [x, f"{y}.s"], [y])] if gated else [])
    if act == "relu6":
        model.graph.initializer.extend([numpy_helper.from_array(np.array(v, np.float32), f"{y}.{n}")
                                        for n, v in (("lo", 0.0), ("hi", 6.0))])
        return [helper.make_node("Clip", [x, f"{y}.lo", f"{y}.hi"], [y])]
    if act == "hswish":
        return [helper.make_node("HardSwish", [x], [y])]
    return [helper.make_node("HardSigmoid", [x], [f"{y}.hs"], alpha=1 / 6, beta=0.5),
            helper.make_node("Mul", [x, f"{y}.hs"], [y])]


def _inverted(c: int, e: int, n: int, rng) -> onnx.ModelProto:
    """x [N, c, n, n] -> 1x1 conv to e, ReLU6, depthwise 3x3, ReLU6, 1x1 conv to c, + x (MobileNetV2's block)."""
    inits = {"w1": rng.normal(0, 1 / np.sqrt(c), (e, c, 1, 1)), "b1": rng.normal(0, 0.1, e),
             "wd": rng.normal(0, 1 / 3, (e, 1, 3, 3)), "bd": rng.normal(0, 0.1, e),
             "w2": rng.normal(0, 1 / np.sqrt(e), (c, e, 1, 1)), "b2": rng.normal(0, 0.1, c)}
    m = _model("inverted", [c, n, n], [], {k: v.astype(np.float32) for k, v in inits.items()}, [c, n, n])
    m.graph.node.extend([helper.make_node("Conv", ["x", "w1", "b1"], ["e"], kernel_shape=[1, 1]),
                         *_activation("relu6", "e", "r1", m),
                         helper.make_node("Conv", ["r1", "wd", "bd"], ["d"], kernel_shape=[3, 3], pads=[1] * 4, group=e),
                         *_activation("relu6", "d", "r2", m),
                         helper.make_node("Conv", ["r2", "w2", "b2"], ["p"], kernel_shape=[1, 1]),
                         helper.make_node("Add", ["p", "x"], ["y"])])
    return m
