"""Convolutions no eecc kernel takes (dilated, grouped with several channels per group) and the activations with an
exponential or a slope (LeakyRelu, Sigmoid, SiLU = x · Sigmoid(x)) in the cost model: features, the layer units of
eecc/cost/layers.py (TVM_CONV, ACTIVATION2) in the shipped rows, and stages none of the units is against QEMU.
nu11's 1-D CNN with dilated and grouped Conv1d was priced 3.2x under its QEMU count on the M4F (the M4's TVM-conv
weights fitted to 0: no unit had one), its Fashion-MNIST CNN's LeakyReLU stage 68 % over (`eltwise` work)."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from eecc.cost.features import graph_features, named
from eecc.cost.layers import ACTIVATION2, TVM_CONV
from eecc.cost.model import fit, load_rows

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                               reason="arm-none-eabi-gcc / qemu-system-arm not installed")


def _with_weights(text: str, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> onnx.ModelProto:
    rng, model = np.random.default_rng(seed), onnx.parser.parse_model(text)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(
        (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]) if len(s) > 1 else 10)).astype(np.float32), n)
        for n, s in shapes.items())
    onnx.checker.check_model(model, full_check=True)
    return model


def _conv1d(group: int, dilation: int) -> onnx.ModelProto:
    """x [N, 16, 20] -> Conv1d 16 -> 16, kernel 3, `group`, `dilation` ("same" pads) -> y."""
    return _with_weights(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        m (float[N, 16, 20] x) => (float[N, 16, 20] y)
        {{ y = Conv <kernel_shape = [3], pads = [{dilation}, {dilation}], group = {group}, dilations = [{dilation}]>
               (x, w, b) }}""", {"w": (16, 16 // group, 3), "b": (16,)})


def test_grouped_and_dilated_convs_have_features_of_their_own():
    macs = 16 * 20 * 3
    grouped = named(graph_features(_conv1d(4, 1), model_input="x"), "cortex-m4", "fp32")
    assert (grouped["grp_macs"], grouped["dw_macs"], grouped["dil_macs"]) == (macs * 4, 0, 0)
    assert grouped["tile_body"] == 0  # TVM's conv: no eecc kernel
    dilated = named(graph_features(_conv1d(1, 2), model_input="x"), "cortex-m4", "int8")
    assert (dilated["conv_macs"], dilated["dil_macs"], dilated["tile_body"]) == (macs * 16, macs * 16, 0)
    depthwise = named(graph_features(_conv1d(16, 1), model_input="x"), "cortex-m4", "fp32")
    assert (depthwise["dw_macs"], depthwise["grp_macs"]) == (macs, 0)
    # the Cortex-A prices them as before (the A76's TVM_CONV units fitted badly: aarch64.node_block)
    a = named(graph_features(_conv1d(4, 2), model_input="x"), "cortex-a", "fp32")
    assert a["grp_macs"] == a["dil_macs"] == 0 and a["dw_macs"] + a["neon_macs"] == macs * 4


def _act(op: str) -> onnx.ModelProto:
    """x [N, 8, 6, 6] -> 3x3 conv (8 outputs) -> LeakyRelu / Sigmoid / SiLU (Sigmoid + Mul) -> y."""
    acts = {"leaky": "y = LeakyRelu <alpha = 0.1> (c)", "sigmoid": "y = Sigmoid (c)",
            "silu": "s = Sigmoid (c)\n y = Mul (c, s)"}
    return _with_weights(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        m (float[N, 8, 6, 6] x) => (float[N, 8, 6, 6] y)
        {{ c = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (x, w, b)
           {acts[op]} }}""", {"w": (8, 8, 3, 3), "b": (8,)})


@pytest.mark.parametrize("op, want", [("leaky", {"act": 288, "act_slope": 288, "act_mul": 0, "act_exp": 0}),
                                      ("sigmoid", {"act": 288, "act_slope": 0, "act_mul": 0, "act_exp": 288}),
                                      ("silu", {"act": 288, "act_slope": 0, "act_mul": 288, "act_exp": 288})])
def test_leaky_relu_sigmoid_and_silu_are_activations_not_eltwise_work(op, want):
    m4 = named(graph_features(_act(op), model_input="x"), "cortex-m4", "fp32")  # after eecc's tile conv: a pass
    assert {k: m4[k] for k in want} == want and m4["eltwise"] == 0  # (SiLU's Mul is in the Sigmoid's pass)
    m0 = named(graph_features(_act(op), model_input="x"), "cortex-m0plus", "fp32")  # TVM fuses it into its conv
    assert (m0["act"], m0["act_fused"]) == (0, 288)
    int8 = named(graph_features(_act(op), model_input="x"), "cortex-m4", "int8")  # a float island
    base = named(graph_features(_conv_only(), model_input="x"), "cortex-m4", "int8")
    assert int8["act"] == 288 and int8["io_out"] - base["io_out"] == 288


def test_an_average_pool_after_a_float_island_has_no_conversion_edges_in_int8():
    """onnxruntime's quantiser leaves an AveragePool reading a float tensor in float: after a LeakyRelu it is neither
    dequantised nor quantised; the island quantises the pool's output (activations._quantised_after)."""
    model = _act("leaky")
    model.graph.node[1].output[0] = "l"
    model.graph.node.append(onnx.helper.make_node("AveragePool", ["l"], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
    model.graph.node.append(onnx.helper.make_node("Relu", ["p"], ["y"]))
    model.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 8, 3, 3]))
    f = named(graph_features(model, model_input="x"), "cortex-m4", "int8")
    alone = named(graph_features(_act("leaky"), model_input="x"), "cortex-m4", "int8")
    assert f["float_pool"] == 72 * 4 and f["io_out"] - alone["io_out"] == 72 - 288  # the stage output shrank
    assert f["in_dense"] - alone["in_dense"] == 72  # the 72 pooled values quantised, once


def _conv_only() -> onnx.ModelProto:
    model = _act("leaky")
    model.graph.node[0].output[0] = "y"
    del model.graph.node[1]
    return model


def test_the_shipped_rows_hold_the_new_units_on_every_cortex_m_group_and_the_activations_on_the_a76():
    from eecc.cost import aarch64

    rows, (a_rows, _) = load_rows()["rows"], aarch64.load_rows()
    conv = {f"layer:tvmconv-{c}x{n}-o{o}k{k}r{r}g{g}d{d}" for c, o, k, n, r, g, d in TVM_CONV}
    acts = {f"layer:{a}-{c}x{n}-o{o}k{k}s{s}{'dw' if g > 1 else ''}" for a, c, o, k, n, s, g in ACTIVATION2}
    for cpu in ("cortex-m0plus", "cortex-m4"):
        for fmt in ("fp32", "int8"):
            assert {r["model"] for r in rows if (r["cpu"], r["format"]) == (cpu, fmt)} >= conv | acts
    assert {r["model"] for r in a_rows} >= acts and not {r["model"] for r in a_rows} & conv


def _cnn1d_stage() -> onnx.ModelProto:
    """nu11's 1-D CNN's first blocks (none of the units): dilated Conv1d, grouped dilated Conv1d, max pool, grouped
    Conv1d, global pool, classifier, Softmax."""
    return _with_weights("""
        <ir_version: 8, opset_import: ["" : 17]>
        m (float[N, 28, 28] x) => (float[N, 10] y)
        { a = Conv <kernel_shape = [3], pads = [2, 2], dilations = [2]> (x, w1, b1)
          ra = Relu (a)
          c = Conv <kernel_shape = [3], pads = [2, 2], dilations = [2], group = 4> (ra, w2, b2)
          rc = Relu (c)
          p = MaxPool <kernel_shape = [2], strides = [2]> (rc)
          d = Conv <kernel_shape = [3], pads = [1, 1], group = 8> (p, w3, b3)
          rd = Relu (d)
          g = GlobalAveragePool (rd)
          f = Flatten (g)
          l = Gemm <transB = 1> (f, wf, bf)
          y = Softmax <axis = 1> (l) }""",
        {"w1": (32, 28, 3), "b1": (32,), "w2": (32, 8, 3), "b2": (32,), "w3": (64, 4, 3), "b3": (64,),
         "wf": (10, 64), "bf": (10,)})


def _fm_act_stage() -> onnx.ModelProto:
    """nu11's Fashion-MNIST CNN's first blocks: conv, LeakyReLU, average pool, conv, SiLU (Sigmoid + Mul), average
    pool, global pool, classifier."""
    return _with_weights("""
        <ir_version: 8, opset_import: ["" : 17]>
        m (float[N, 1, 28, 28] x) => (float[N, 10] y)
        { a = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (x, w1, b1)
          la = LeakyRelu <alpha = 0.1> (a)
          pa = AveragePool <kernel_shape = [2, 2], strides = [2, 2]> (la)
          c = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (pa, w2, b2)
          s = Sigmoid (c)
          sc = Mul (c, s)
          pc = AveragePool <kernel_shape = [2, 2], strides = [2, 2]> (sc)
          g = GlobalAveragePool (pc)
          f = Flatten (g)
          y = Gemm <transB = 1> (f, wf, bf) }""",
        {"w1": (16, 1, 3, 3), "b1": (16,), "w2": (24, 16, 3, 3), "b2": (24,), "wf": (10, 24), "bf": (10,)}, seed=1)


@needs_arm
@pytest.mark.parametrize("stage, cpu, fmt", [("cnn1d", "cortex-m4", "fp32"), ("cnn1d", "cortex-m4", "int8"),
                                             ("fm_act", "cortex-m4", "fp32"), ("fm_act", "cortex-m0plus", "int8")])
def test_stages_of_nu11s_models_match_their_qemu_counts(tmp_path, stage, cpu, fmt):
    """Priced by the shipped fit within 15 % of QEMU's count. Kernels 883e36b4e5006f46, shipped fit vs QEMU, before
    these features and units -> now: cnn1d M4F fp32 -81.2 % -> +12.2 % (795,521 instructions), M4 int8 -55.9 % ->
    +9.3 % (423,555), M0+ int8 -65.7 % -> -3.7 %, M0+ fp32 -18.1 % -> +2.1 %; fm_act M4F fp32 +16.7 % -> +5.0 %
    (3,133,472), M0+ int8 -65.1 % -> +0.5 % (21,011,012), M4 int8 -0.7 % -> -2.5 %, M0+ fp32 -22.6 % -> -12.0 %
    (fm_act int8 +2.3 % and +8.2 % while its average pools after the float islands still counted conversion edges)."""
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m
    from eecc.targets.quantize import quantize_stages

    model = {"cnn1d": _cnn1d_stage, "fm_act": _fm_act_stage}[stage]()
    predicted = fit(load_rows()["rows"]).instructions(graph_features(model, model_input="x"), cpu, fmt)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    x = np.random.default_rng(0).normal(size=(64, *shape)).astype(np.float32)
    model = quantize_stages([model], x)[0] if fmt == "int8" else model
    counted = emulate_stage(cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp_path), x[:2]).instructions
    assert abs(predicted / counted - 1) <= 0.15, (predicted, counted)


def _act_cnn(path) -> str:
    """A Fashion-MNIST-sized CNN whose candidates follow float islands: conv, LeakyReLU, average pool, conv, SiLU,
    average pool, conv, Sigmoid, global pool, classifier (written to `path`)."""
    model = _with_weights("""
        <ir_version: 8, opset_import: ["" : 17]>
        m (float[N, 1, 16, 16] x) => (float[N, 10] y)
        { a = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (x, w1, b1)
          la = LeakyRelu <alpha = 0.1> (a)
          pa = AveragePool <kernel_shape = [2, 2], strides = [2, 2]> (la)
          c = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (pa, w2, b2)
          s = Sigmoid (c)
          sc = Mul (c, s)
          pc = AveragePool <kernel_shape = [2, 2], strides = [2, 2]> (sc)
          d = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (pc, w3, b3)
          sd = Sigmoid (d)
          g = GlobalAveragePool (sd)
          f = Flatten (g)
          y = Gemm <transB = 1> (f, wf, bf) }""",
        {"w1": (16, 1, 3, 3), "b1": (16,), "w2": (24, 16, 3, 3), "b2": (24,), "w3": (32, 24, 3, 3), "b3": (32,),
         "wf": (10, 32), "bf": (10,)}, seed=2)
    onnx.save(model, str(path))
    return str(path)


def _built(plan, start, end, spec=None):
    """The stage from cut `start` to the exit at `end` (None: model input, final) as compile builds it."""
    from eecc.cost.measure import dummy_heads
    from eecc.driver.pipeline import make_stages
    from eecc.passes.insert_exits import insert_exits

    specs = {h.tensor: h for h in plan.design.heads} | ({spec.tensor: spec} if spec else {})
    cuts = [t for t in (start, end) if t is not None]
    graph = insert_exits(plan.graph, heads=dummy_heads([specs[t] for t in cuts]))
    return make_stages(graph, cuts=cuts, processors=[f"p{k}" for k in range(len(cuts) + 1)],
                       thresholds=[0.5] * len(cuts))[0 if start is None else 1]


def test_the_search_prices_every_stage_of_a_float_island_model_as_the_built_stage(tmp_path):
    """The search's piece sums (eecc/cost/segments.py) equal the built stage's features for every (start, exit) of a
    model with LeakyRelu / SiLU / Sigmoid islands, in every block, with the blueprint and another head design. Each
    piece priced in its all-cuts stage (the exit head after it) charged the head's pooling and the quantisation of its
    pooled map to every stage through that piece: M4 int8 stage input -> exit after the first average pool +24 % over
    the built stage, act.onnx (/work/notes/done/cm11.md)."""
    from eecc.cost.segments import SegmentTable
    from eecc.exits.family import family
    from eecc.exits.run import plan_exits

    plan = plan_exits(_act_cnn(tmp_path / "act.onnx"))
    table, first, cuts = SegmentTable.from_plan(plan), plan.graph.inputs[0].name, [None, *SegmentTable.from_plan(plan).tensors, None]
    assert len(cuts) >= 6
    for i, start in enumerate(cuts[:-1]):
        for end in cuts[i + 1:]:
            np.testing.assert_allclose(table.features(start, end), graph_features(_built(plan, start, end),
                                                                                  model_input=first), atol=1e-6)
    blueprint = plan.design.heads[1]
    spec = next(s for s in family(blueprint) if s.kind == "flat" and s.pool_op == "max")
    assert spec.design != blueprint.design
    for start in (None, cuts[1]):
        np.testing.assert_allclose(table.features(start, spec.tensor, spec.design),
                                   graph_features(_built(plan, start, spec.tensor, spec), model_input=first), atol=1e-6)


@needs_arm
def test_the_search_prices_a_stage_ending_after_a_float_island_pool_as_qemu_counts_it(tmp_path):
    """The stage from the input to the exit after the first average pool of _act_cnn, M4 int8: the search's estimate
    (shipped fit) within 10 % of QEMU's count (was +14.7 %: 252,403 vs 220,124 instructions, the exit head's pooling
    and quantisation charged to the LeakyRelu piece; now 205,155, -6.8 %), and the whole model within 10 % too."""
    from eecc.cost.model import default_model
    from eecc.cost.segments import SegmentTable
    from eecc.exits.run import plan_exits
    from eecc.model import ir
    from eecc.runtime.emulate import emulate_stage
    from eecc.targets import cortex_m
    from eecc.targets.quantize import quantize_stages

    plan = plan_exits(_act_cnn(tmp_path / "act.onnx"))
    table = SegmentTable.from_plan(plan)
    x = np.random.default_rng(0).normal(size=(64, 1, 16, 16)).astype(np.float32)
    for end in ("pa", None):
        model = quantize_stages([ir.to_model(_built(plan, None, end))], x)[0]
        counted = emulate_stage(cortex_m.compile_stage(model, cpu="cortex-m4", out_dir=tmp_path / str(end)),
                                x[:2]).instructions
        predicted = default_model().instructions(table.features(None, end), "cortex-m4", "int8")
        assert abs(predicted / counted - 1) <= 0.10, (end, predicted, counted)
