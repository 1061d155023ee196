"""Load-time normalisation passes: golden graphs (BEFORE -> AFTER) and onnxruntime checks that outputs hold."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from eecc.model import ir
from eecc.passes.expand_sum import expand_sum
from eecc.passes.fold_constants import fold_constants
from eecc.passes.inline_functions import inline_functions
from eecc.passes.normalize_float import normalize_float
from eecc.passes.normalize_opset import normalize_opset
from eecc.passes.normalize_output import normalize_output, output_kind
from eecc.passes.remove_dropout import remove_dropout
from eecc.passes.select_probabilities import select_probabilities, selection_note
from eecc.passes.unfix_batch import unfix_batch
from golden import assert_same_graph, canonical, parse, run

HEAD = "<float[4, 2, 3, 3] w, float[3, 4] fc, float[3] fcb>"
OPSET9 = f"""
<ir_version: 8, opset_import: ["" : 9]>
g (float[N, 2, 6, 6] x) => (float[N, 3] y) {HEAD}
{{
    c = Conv(x, w)
    u = Upsample<mode = "nearest">(c, scales)
    p = GlobalAveragePool(u)
    f = Flatten(p)
    z = Gemm<transB = 1>(f, fc, fcb)
    y = Softmax(z)
}}
"""
OPSET13 = f"""
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 2, 6, 6] x) => (float[N, 3] y) {HEAD}
{{
    c = Conv(x, w)
    roi = Constant<value = float[8] {{0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0}}>()
    u = Resize<mode = "nearest">(c, roi, scales)
    p = GlobalAveragePool(u)
    f = Flatten(p)
    z = Gemm<transB = 1>(f, fc, fcb)
    y = Softmax<axis = -1>(z)
}}
"""
INLINE_BEFORE = """
<ir_version: 8, opset_import: ["" : 17, "local" : 1]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y) <float[2, 2, 1, 1] w>
{
    y = local.ConvRelu(x, w)
}
<domain: "local", opset_import: ["" : 17]>
ConvRelu (a, k) => (b)
{
    t = Conv(a, k)
    b = Relu(t)
}
"""
INLINE_AFTER = """
<ir_version: 8, opset_import: ["" : 17, "local" : 1]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y) <float[2, 2, 1, 1] w>
{
    t = Conv(x, w)
    y = Relu(t)
}
"""
FOLD_BEFORE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y) <float[1] s>
{
    shape = Constant<value = int64[4] {2, 2, 1, 1}>()
    ones = ConstantOfShape<value = float[1] {0.5}>(shape)
    w = Mul(ones, s)
    y = Conv(x, w)
}
"""
FOLD_AFTER = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y) <float[2, 2, 1, 1] w>
{
    y = Conv(x, w)
}
"""
FP16_BEFORE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 4, 4] x) => (float16[N, 2, 2, 2] y) <float16[2, 2, 3, 3] w, float16[2] b>
{
    h = Cast<to = 10>(x)
    c = Conv(h, w, b)
    y = Relu(c)
}
"""
FP16_AFTER = FP16_BEFORE.replace("float16", "float").replace("to = 10", "to = 1")
DROPOUT_BEFORE = """
<ir_version: 8, opset_import: ["" : 11]>
g (float[N, 8] x) => (float[N, 3] y) <float[4, 8] a, float[3, 4] b>
{
    h = Gemm<transB = 1>(x, a)
    r = Relu(h)
    d, mask = Dropout<ratio = 0.5>(r)
    y = Gemm<transB = 1>(d, b)
}
"""
DROPOUT_AFTER = """
<ir_version: 8, opset_import: ["" : 11]>
g (float[N, 8] x) => (float[N, 3] y) <float[4, 8] a, float[3, 4] b>
{
    h = Gemm<transB = 1>(x, a)
    r = Relu(h)
    y = Gemm<transB = 1>(r, b)
}
"""
SUM_BEFORE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 4, 4] x) => (float[N, 2, 4, 4] y) <float[2, 2, 1, 1] a, float[2, 2, 1, 1] b>
{
    p = Conv(x, a)
    q = Conv(x, b)
    y = Sum(x, p, q)
}
"""
SUM_AFTER = SUM_BEFORE.replace("y = Sum(x, p, q)", "s = Add(x, p)\n    y = Add(s, q)")
# skl2onnx's MLPClassifier export (nu11): the label through ArgMax and the class list, the probabilities as ZipMap's
# sequence of maps; with zipmap=False the probability tensor is an output itself.
SKL_BEFORE = """
<ir_version: 8, opset_import: ["" : 13, "ai.onnx.ml" : 1]>
g (float[N, 4] x) => (int64[N] output_label, seq(map(int64, float)) output_probability)
  <float[4, 5] a, float[5, 3] b, int64[3] classes = {0, 1, 2}, int64[1] flat = {-1}>
{
    h = MatMul(x, a)
    r = Relu(h)
    z = MatMul(r, b)
    p = Softmax<axis = 1>(z)
    am = ArgMax<axis = 1>(p)
    afe = ai.onnx.ml.ArrayFeatureExtractor(classes, am)
    lab = Reshape(afe, flat)
    output_label = Cast<to = 7>(lab)
    output_probability = ai.onnx.ml.ZipMap<classlabels_int64s = [0, 1, 2]>(p)
}
"""
SKL_AFTER = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 3] p) <float[4, 5] a, float[5, 3] b>
{
    h = MatMul(x, a)
    r = Relu(h)
    z = MatMul(r, b)
    p = Softmax<axis = 1>(z)
}
"""
SKL_NOZIPMAP = (SKL_BEFORE.replace("seq(map(int64, float)) output_probability", "float[N, 3] p")
                .replace("    output_probability = ai.onnx.ml.ZipMap<classlabels_int64s = [0, 1, 2]>(p)\n", ""))
BATCH1_BEFORE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 2, 4, 4] x) => (float[1, 3] y) <float[2, 2, 1, 1] w, float[3, 32] fc, int64[2] shape = {1, -1}>
{
    c = Conv(x, w)
    f = Reshape(c, shape)
    y = Gemm<transB = 1>(f, fc)
}
"""
BATCH1_AFTER = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 4, 4] x) => (float[N, 3] y) <float[2, 2, 1, 1] w, float[3, 32] fc, int64[2] shape = {-1, 32}>
{
    c = Conv(x, w)
    f = Reshape(c, shape)
    y = Gemm<transB = 1>(f, fc)
}
"""


def _ir3(text: str) -> onnx.ModelProto:
    """An IR-3 model: every initializer is also listed as a graph input (old exporters did that)."""
    model = parse(text.replace("float[3] fcb>", "float[3] fcb, float[4] scales = {1.0, 1.0, 2.0, 2.0}>"))
    model.ir_version = 3
    model.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in model.graph.initializer)
    return model


def _check(step, before: onnx.ModelProto, expected: onnx.ModelProto, feeds: dict, *, atol=1e-5) -> onnx.ModelProto:
    snapshot = before.SerializeToString()
    after = step(before)
    assert before.SerializeToString() == snapshot, "the pass mutated its input"
    assert_same_graph(after, expected)
    onnx.checker.check_model(after, full_check=True)
    want, got = run(before, feeds), run(after, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-3, atol=atol)
    return after


def _x(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_normalize_opset_upgrades_opset9_ir3():
    after = _check(normalize_opset, _ir3(OPSET9), parse(OPSET13.replace(
        "float[3] fcb>", "float[3] fcb, float[4] scales = {1.0, 1.0, 2.0, 2.0}>")), {"x": _x(2, 2, 6, 6)})
    assert after.ir_version >= 7 and [o.version for o in after.opset_import if o.domain == ""] == [13]
    assert [i.name for i in after.graph.input] == ["x"]


def test_normalize_opset_leaves_a_modern_model_alone():
    model = parse(SUM_BEFORE)
    assert canonical(normalize_opset(model)) == canonical(model)


def test_inline_functions():
    after = _check(inline_functions, parse(INLINE_BEFORE), parse(INLINE_AFTER), {"x": _x(2, 2, 4, 4)})
    assert not after.functions


def test_fold_constants_turns_constant_subgraph_weights_into_initializers():
    after = _check(fold_constants, parse(FOLD_BEFORE), parse(FOLD_AFTER), {"x": _x(2, 2, 4, 4)})
    assert [n.op_type for n in after.graph.node] == ["Conv"]


def test_normalize_float_computes_in_float32():
    before = parse(FP16_BEFORE)
    after = _check(normalize_float, before, parse(FP16_AFTER), {"x": _x(2, 2, 4, 4)}, atol=2e-2)
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in after.graph.initializer)


def test_remove_dropout():
    _check(remove_dropout, parse(DROPOUT_BEFORE), parse(DROPOUT_AFTER), {"x": _x(3, 8)})


def test_remove_dropout_keeps_a_used_mask():
    text = DROPOUT_BEFORE.replace("=> (float[N, 3] y)", "=> (float[N, 3] y, bool[N, 4] mask)")
    model = parse(text)
    assert canonical(remove_dropout(model)) == canonical(model)


def test_expand_sum():
    _check(expand_sum, parse(SUM_BEFORE), parse(SUM_AFTER), {"x": _x(2, 2, 4, 4)})


@pytest.mark.parametrize("zipmap", [True, False])
def test_select_probabilities_keeps_the_probability_tensor_of_a_sklearn_export(zipmap):
    """Both skl2onnx forms become the probability tensor alone: the label path and the ai.onnx.ml import go, the
    kept output holds what ZipMap's maps held, and argmax of it is the dropped label."""
    before = parse(SKL_BEFORE if zipmap else SKL_NOZIPMAP)
    snapshot = before.SerializeToString()
    after = select_probabilities(before)
    assert before.SerializeToString() == snapshot, "the pass mutated its input"
    assert_same_graph(after, parse(SKL_AFTER))
    onnx.checker.check_model(after, full_check=True)
    x = _x(6, 4)
    want, got = run(before, {"x": x}), run(after, {"x": x})["p"]
    maps = want["output_probability"] if zipmap else want["p"]
    np.testing.assert_allclose(got, [[m[k] for k in range(3)] for m in maps] if zipmap else maps, rtol=1e-6)
    assert got.argmax(1).tolist() == want["output_label"].tolist()
    note = selection_note(before, after, "m.onnx")
    assert ("outputs 'output_label', 'output_probability' dropped: eecc reads the class probabilities from "
            "ZipMap's input 'p'" if zipmap else "output 'output_label' dropped: eecc reads the class probabilities "
            "from 'p'") in note and "searchsorted" not in note


def test_select_probabilities_says_what_class_k_means_when_the_classes_are_not_0_to_k():
    """y must be class indices; a model fitted on labels 3, 5, 7 outputs probabilities in that order."""
    before = parse(SKL_BEFORE.replace("{0, 1, 2}", "{3, 5, 7}").replace("[0, 1, 2]", "[3, 5, 7]"))
    note = selection_note(before, select_probabilities(before), "m.onnx")
    assert "class k is the model's label [3, 5, 7][k]: give y as those indices (np.searchsorted(classes, y))" in note


def test_select_probabilities_leaves_other_models_alone():
    """Two float outputs, or a model without the ai.onnx.ml import, are not a scikit-learn classifier: unchanged."""
    for text in (SUM_BEFORE, SKL_NOZIPMAP.replace("int64[N] output_label", "float[N, 3] z")):
        before = parse(text)
        assert select_probabilities(before).SerializeToString() == before.SerializeToString()


@pytest.mark.parametrize("fixed", [1, 2])
def test_unfix_batch_frees_the_batch_and_runs_at_batch_4(fixed):
    """A batch of 1 (classic zoo files) or of the example input's size (torch export without dynamic_axes)."""
    text = BATCH1_BEFORE.replace("[1, ", f"[{fixed}, ").replace("{1, -1}", f"{{{fixed}, -1}}")
    before, after = parse(text), unfix_batch(parse(text))
    _check(unfix_batch, before, parse(BATCH1_AFTER), {"x": _x(fixed, 2, 4, 4)})
    x = _x(4, 2, 4, 4)
    rows = np.concatenate([run(before, {"x": x[i:i + fixed]})["y"] for i in range(0, 4, fixed)])
    np.testing.assert_allclose(run(after, {"x": x})["y"], rows, rtol=1e-5, atol=1e-5)


SOFTMAX_HEAD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 4, 4] x) => (float[N, 3] y) <float[3, 2] fc>
{
    p = GlobalAveragePool(x)
    f = Flatten(p)
    z = Gemm<transB = 1>(f, fc)
    y = {op}(z)
}
"""


@pytest.mark.parametrize("op, after, kind", [
    ("Softmax<axis = 1>", "y = LogSoftmax<axis = 1>(z)", "softmax"),
    ("LogSoftmax", "y = LogSoftmax(z)", "log_softmax"),
    ("Sigmoid", "a = Neg(z)\n    b = Softplus(a)\n    y = Neg(b)", "sigmoid"),
    ("Relu", "y = Relu(z)", "logits"),
])
def test_normalize_output(op, after, kind):
    before = parse(SOFTMAX_HEAD.replace("{op}(z)", op + "(z)"))
    expected = parse(SOFTMAX_HEAD.replace("y = {op}(z)", after))
    graph = ir.from_model(before)
    out_graph = normalize_output(graph)
    assert output_kind(graph) == "logits" and output_kind(out_graph) == kind  # input graph untouched
    model = ir.to_model(out_graph)
    assert_same_graph(model, expected)
    onnx.checker.check_model(model, full_check=True)
    x = _x(5, 2, 4, 4)
    probs, logp = run(before, {"x": x})["y"], run(model, {"x": x})["y"]
    softmax = np.exp(logp - logp.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    want = {"softmax": probs, "log_softmax": np.exp(probs), "sigmoid": probs / probs.sum(1, keepdims=True)}
    if kind in want:
        np.testing.assert_allclose(softmax, want[kind], rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(logp, probs)


QDQ = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 4, 4] x) => (float[N, 3] y)
  <float[4, 2, 3, 3] w1, float[4, 4, 3, 3] w2, float[3, 4] fc, float s = {0.1}, uint8 zp = {128}>
{
    q = QuantizeLinear(x, s, zp)
    d = DequantizeLinear(q, s, zp)
    c1 = Conv<pads = [1, 1, 1, 1]>(d, w1)
    r1 = Relu(c1)
    c2 = Conv<pads = [1, 1, 1, 1]>(r1, w2)
    r2 = Relu(c2)
    p = GlobalAveragePool(r2)
    f = Flatten(p)
    y = Gemm<transB = 1>(f, fc)
}
"""


def test_quantised_model_is_refused_naming_quantisation():
    from eecc.errors import EeccError
    from eecc.driver.pipeline import analyse
    with pytest.raises(EeccError, match="int8-quantised model .*DequantizeLinear, QuantizeLinear.*float model"):
        analyse(parse(QDQ))
    # The advice, followed: the same model before quantisation analyses.
    text = QDQ.replace("q = QuantizeLinear(x, s, zp)\n    d = DequantizeLinear(q, s, zp)", "d = Identity(x)")
    assert analyse(parse(text))[1].total_macs == 4 * 16 * 2 * 9 + 4 * 16 * 4 * 9 + 3 * 4


def test_input_shape_must_agree_with_declared_dims(tmp_path, capsys):
    from eecc.cli import main
    path = tmp_path / "m.onnx"
    onnx.save(parse(OPSET13.replace("float[3] fcb>", "float[3] fcb, float[4] scales = {1.0, 1.0, 2.0, 2.0}>")),
              str(path))
    assert main(["inspect", str(path), "--input-shape", "6,6,2"]) == 2
    err = capsys.readouterr().err
    assert "contradicts the dims input 'x' declares (2,6,6)" in err and "leave --input-shape out" in err
    assert main(["inspect", str(path), "--input-shape", "2,6,6"]) == 0  # the advice, followed
    assert main(["inspect", str(path)]) == 0


def test_external_data_beside_the_model_is_read(tmp_path, capsys):
    from eecc.cli import main
    model = _ir3(OPSET9)
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
              size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    capsys.readouterr()
    assert main(["inspect", str(path), "--json"]) == 0
    summary = __import__("json").loads(capsys.readouterr().out)
    assert summary["output_kind"] == "softmax" and summary["normalized"][0] == "normalize_opset"
    assert summary["total_macs"] == 4 * 4 * 4 * 2 * 9 + 3 * 4  # Conv [4,2,3,3] on 6x6 (valid) + Gemm 4->3


def test_inspect_says_float32_stages_only_where_a_float16_model_was_normalised(tmp_path, capsys):
    """nu15 F4: `inspect` on a float32 model printed 'normalised on load: unfix_batch (outputs unchanged; eecc
    analyses and writes float32 stages)' (also after fold_batchnorm, normalize_opset): only normalize_float needs it."""
    from eecc.cli import main

    fp16 = """
<ir_version: 8, opset_import: ["" : 13]>
g (float16[N, 2, 6, 6] x) => (float16[N, 3] y)
  <float16[4, 2, 3, 3] w, float16[4, 4, 3, 3] w2, float16[3, 4] fc, float16[3] fcb>
{
    c = Conv(x, w)
    r = Relu(c)
    c2 = Conv<pads = [1, 1, 1, 1]>(r, w2)
    r2 = Relu(c2)
    p = GlobalAveragePool(r2)
    f = Flatten(p)
    y = Gemm<transB = 1>(f, fc, fcb)
}
"""
    for name, model, said in (("opset9", _ir3(OPSET9), "normalised on load: normalize_opset ("),
                              ("fp16", parse(fp16), "normalised on load: normalize_float (")):
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
        capsys.readouterr()
        assert main(["inspect", str(tmp_path / f"{name}.onnx")]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("normalised on load: "))
        assert said in line, line
        if name == "fp16":
            assert line.endswith("(float16 computed in float32: eecc analyses and writes float32 stages)"), line
        else:
            assert line.endswith("(outputs unchanged)") and "float32" not in line, line
