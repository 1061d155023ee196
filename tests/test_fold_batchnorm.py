"""fold_batchnorm: golden graphs (BEFORE -> AFTER), onnxruntime checks, and a trained opset-10 export whose
BatchNormalization nodes are kept, costed like the same network exported with them folded."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx
import pytest

from eecc.errors import EeccError
from eecc.passes.fold_batchnorm import fold_batchnorm
from golden import assert_same_graph, parse, run

STATS = ("float[4] g1, float[4] b1, float[4] m1, float[4] v1 = {1.0, 0.5, 2.0, 0.25}, "
         "float[6] g2, float[6] b2, float[6] m2, float[6] v2 = {0.3, 1.0, 4.0, 0.7, 1.5, 0.9}, "
         "float[3] g3, float[3] b3, float[3] m3, float[3] v3 = {2.0, 0.1, 1.0}")
# A 1-D conv with bias, a conv without (the bias is created), a Gemm: all three fold.
FOLD_BEFORE = f"""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 16] x) => (float[N, 3] y) <float[4, 2, 3] w1, float[4] c1b, float[6, 4, 3] w2, float[3, 6] fc, {STATS}>
{{
    c1 = Conv<pads = [1, 1]>(x, w1, c1b)
    n1 = BatchNormalization<epsilon = 0.001>(c1, g1, b1, m1, v1)
    r1 = Relu(n1)
    c2 = Conv(r1, w2)
    n2 = BatchNormalization(c2, g2, b2, m2, v2)
    r2 = Relu(n2)
    p = GlobalAveragePool(r2)
    f = Flatten(p)
    z = Gemm<transB = 1>(f, fc)
    y = BatchNormalization(z, g3, b3, m3, v3)
}}
"""
FOLD_AFTER = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 16] x) => (float[N, 3] y) <float[4, 2, 3] w1, float[4] c1b, float[6, 4, 3] w2, float[6] w2b,
                                           float[3, 6] fc, float[3] fcb>
{
    n1 = Conv<pads = [1, 1]>(x, w1, c1b)
    r1 = Relu(n1)
    n2 = Conv(r1, w2, w2b)
    r2 = Relu(n2)
    p = GlobalAveragePool(r2)
    f = Flatten(p)
    y = Gemm<transB = 1>(f, fc, fcb)
}
"""
# Not foldable, left as they are: a conv output that a second node reads too, and a BatchNormalization after an Add.
KEEP = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4, 6, 6] x) => (float[N, 4, 6, 6] y, float[N, 4, 6, 6] z) <float[4, 4, 3, 3] w, float[4] g1,
    float[4] b1, float[4] m1, float[4] v1 = {1.0, 0.5, 2.0, 0.25}>
{
    c = Conv<pads = [1, 1, 1, 1]>(x, w)
    y = BatchNormalization(c, g1, b1, m1, v1)
    a = Add(c, x)
    z = BatchNormalization(a, g1, b1, m1, v1)
}
"""
CONV2D = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 5, 4, 4] y) <float[5, 3, 3, 3] w, float[5] cb, float[5] g1, float[5] b1,
    float[5] m1, float[5] v1 = {1.0, 0.5, 2.0, 0.25, 3.0}>
{
    c = Conv<strides = [2, 2], pads = [1, 1, 1, 1]>(x, w, cb)
    y = BatchNormalization(c, g1, b1, m1, v1)
}
"""


def _named(text: str) -> onnx.ModelProto:
    model = parse(text)
    for i, node in enumerate(model.graph.node):
        node.name = f"{node.op_type}_{i}"
    return model


@pytest.mark.parametrize("before, after", [(FOLD_BEFORE, FOLD_AFTER), (KEEP, KEEP)], ids=["fold", "keep"])
def test_golden(before, after):
    model = _named(before)
    snapshot = model.SerializeToString()
    out = fold_batchnorm(model)
    assert model.SerializeToString() == snapshot  # input untouched
    assert_same_graph(out, parse(after))
    onnx.checker.check_model(out, full_check=True)
    # the folded nodes keep their producers' names (the runtime and the reports name nodes)
    assert [n.name for n in out.graph.node if n.op_type in ("Conv", "Gemm")] == \
        [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")]


@pytest.mark.parametrize("text, shape", [(FOLD_BEFORE, [4, 2, 16]), (KEEP, [4, 4, 6, 6]), (CONV2D, [4, 3, 8, 8])],
                         ids=["conv1d-gemm", "keep", "conv2d"])
def test_outputs_hold(text, shape):
    model = parse(text, seed=3)
    out = fold_batchnorm(model)
    if text is CONV2D:
        assert [n.op_type for n in out.graph.node] == ["Conv"]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want, got = run(model, {"x": x}), run(out, {"x": x})
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5 * float(np.abs(value).max()))


def test_training_mode_batchnorm_is_refused_with_the_way_out():
    text = KEEP.replace('"" : 17', '"" : 15').replace("y = BatchNormalization(c,", "y, rm, rv = BatchNormalization<training_mode = 1>(c,")
    with pytest.raises(EeccError, match="BatchNormalization 'BatchNormalization_1' is in training mode.*model.eval"):
        fold_batchnorm(_named(text))


def _sines(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """n noisy sinusoids [n, 1, 64] of 4 frequency classes (synthetic, seeded)."""
    y = rng.integers(0, 4, n)
    t = np.arange(64) / 64
    f = 2 + 3 * y + rng.uniform(-0.5, 0.5, n)
    x = np.sin(2 * np.pi * f[:, None] * t + rng.uniform(0, 2 * np.pi, n)[:, None]) + rng.normal(0, 0.5, (n, 64))
    return x[:, None, :].astype(np.float32), y


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A Conv1d + BatchNorm net trained for two epochs, exported at opset 10 with its BatchNormalization nodes
    kept (TorchScript, training=PRESERVE, no constant folding) and at opset 13 with them folded by the exporter."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    (x, y), (xt, yt) = _sines(800, rng), _sines(200, rng)
    net = nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(), nn.MaxPool1d(2),
                        nn.Conv1d(8, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
                        nn.Conv1d(16, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU(),
                        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 4))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(2):
        for i in range(0, len(x), 32):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xs[i:i + 32]), ys[i:i + 32]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean())
    out, dummy = tmp_path_factory.mktemp("bn"), torch.zeros(1, 1, 64)
    kept, folded = out / "kept.onnx", out / "folded.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        common = dict(dynamo=False, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
        torch.onnx.export(net, dummy, kept, opset_version=10, training=torch.onnx.TrainingMode.PRESERVE,
                          do_constant_folding=False, **common)
        torch.onnx.export(net, dummy, folded, opset_version=13, **common)
    return kept, folded, acc, xt


def test_kept_batchnorm_export_is_costed_like_the_folded_one(exports):
    from eecc.cost.features import graph_features
    from eecc.cost.model import default_model
    from eecc.model.normalize import load
    from eecc.passes.annotate_cost import annotate_cost, totals

    kept, folded, acc, xt = exports
    assert acc >= 0.9  # a really trained model
    assert "BatchNormalization" in {n.op_type for n in onnx.load(kept).graph.node}
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(folded).graph.node}
    a, b = load(kept), load(folded)
    assert [n.op for n in a.nodes] == [n.op for n in b.nodes]  # no BatchNormalization left: the same network
    assert totals(annotate_cost(a)) == totals(annotate_cost(b))
    fa, fb = graph_features(a, model_input="x"), graph_features(b, model_input="x")
    np.testing.assert_allclose(fa, fb)
    model = default_model()
    for fmt in ("fp32", "int8"):
        assert model.instructions(fa, "cortex-m4", fmt) == pytest.approx(model.instructions(fb, "cortex-m4", fmt))
    # and it computes what the original computes
    from eecc.model import ir
    proto = ir.to_model(a)
    want, got = run(onnx.load(kept), {"x": xt}), run(proto, {"x": xt})
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-5, atol=1e-5 * float(np.abs(want["y"]).max()))


def test_a_batchnorm_left_in_place_is_priced_not_free():
    from eecc.cost.features import FEATURES, node_features
    from eecc.model import ir

    graph = ir.from_model(fold_batchnorm(parse(KEEP)), classifier=False)
    for node in (n for n in graph.nodes if n.op == "BatchNormalization"):
        f = dict(zip(FEATURES, node_features(node)))
        for cpu in ("cortex-m0plus", "cortex-m4"):
            for fmt in ("fp32", "int8"):  # one unit of elementwise work per output element, and a kernel call
                assert f[f"{cpu}/{fmt}/eltwise"] == 4 * 6 * 6 and f[f"{cpu}/{fmt}/kernels"] == 1
