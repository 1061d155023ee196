"""Feature cache: contents match the model, warm runs compute nothing, interrupted runs resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from eecc.model import ir
from eecc.data.cache import FeatureCache
from eecc.data.splits import make_splits
from eecc.exits.run import plan_exits
from golden import parse, run
from test_heads import SMALL
from test_insert_exits import _maxpool_ceil

RNG = np.random.default_rng(1)
RESNET = Path(__file__).parent / "fixtures" / "models" / "resnet.onnx"
X = RNG.random((50, 1, 16, 16)).astype(np.float32)
Y = np.arange(50) % 10


@pytest.fixture(scope="module")
def plan():
    return plan_exits(parse(SMALL))


def _split(x=X):
    return make_splits(x, Y, x[:10], Y[:10], input_shape=(1, 16, 16), num_classes=10).train


def _reference(plan, x):
    model = ir.to_model(plan.graph)
    for spec in plan.design.heads:
        model.graph.output.append(onnx.ValueInfoProto(name=spec.tensor))
    return run(model, {"x": x})


def test_cached_features_and_logits_match_the_model(tmp_path, plan):
    assert len(plan.design.heads) == 2
    feats = FeatureCache(tmp_path, plan.graph, plan.design.heads, chunk_rows=16).fill(_split())
    ref = _reference(plan, X)
    for spec in plan.design.heads:
        got = feats.features(spec)
        assert got.dtype == np.float32 and got.shape == (50, *spec.pooled_shape)
        assert np.moveaxis(got, 1, -1).flags.c_contiguous  # a view of the channels-last file
        want = _maxpool_ceil(ref[spec.tensor], spec.pool[0]) if spec.has_pool else ref[spec.tensor]
        # the feature pass runs with onnxruntime's optimisations on (blocked convolutions), the reference without
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(feats.final_logits(), ref["y"], rtol=1e-5, atol=1e-5)


def test_warm_cache_computes_nothing_and_subsets_reuse_it(tmp_path, plan):
    FeatureCache(tmp_path, plan.graph, plan.design.heads, chunk_rows=16).fill(_split())
    again = FeatureCache(tmp_path, plan.graph, plan.design.heads, chunk_rows=16)
    again.fill(_split())
    subset = FeatureCache(tmp_path, plan.graph, plan.design.heads[1:], chunk_rows=16)
    subset.fill(_split())
    other = FeatureCache(tmp_path, plan.graph, plan.design.heads, chunk_rows=16)
    other.fill(_split(X[::-1].copy()))
    assert (again.computed_chunks, subset.computed_chunks, other.computed_chunks) == (0, 0, 4)


@pytest.mark.parametrize("threads", [1, None])
def test_interrupted_run_resumes_without_redoing_finished_chunks(tmp_path, plan, threads):
    """threads=1: one session, chunks in order; None: lanes of one session each (FeatureCache._fill_lanes),
    which stop after their current chunk when one of them is interrupted."""
    class Interrupt(Exception):
        pass

    def stop_after_two(done, total):
        if done == 2:
            raise Interrupt

    first = FeatureCache(tmp_path / "a", plan.graph, plan.design.heads, chunk_rows=16, threads=threads)
    with pytest.raises(Interrupt):
        first.fill(_split(), on_chunk=stop_after_two)
    assert first.computed_chunks == 2 if threads == 1 else 2 <= first.computed_chunks < 4
    resumed = FeatureCache(tmp_path / "a", plan.graph, plan.design.heads, chunk_rows=16, threads=threads)
    feats = resumed.fill(_split())
    # 50 rows in chunks of 16: 4 chunks, the finished ones not redone
    assert resumed.computed_chunks == 4 - first.computed_chunks
    clean = FeatureCache(tmp_path / "b", plan.graph, plan.design.heads, chunk_rows=16, threads=threads).fill(_split())
    for spec in plan.design.heads:
        np.testing.assert_array_equal(np.asarray(feats.features(spec)), np.asarray(clean.features(spec)))
    np.testing.assert_array_equal(feats.final_logits(), clean.final_logits())


def test_a_cache_in_another_storage_format_is_recomputed_not_read(tmp_path, plan, monkeypatch):
    import eecc.data.cache as cache

    monkeypatch.setattr(cache, "FORMAT", "fp16")  # as an earlier eecc stored the maps
    FeatureCache(tmp_path, plan.graph, plan.design.heads, chunk_rows=16).fill(_split())
    monkeypatch.undo()
    again = FeatureCache(tmp_path, plan.graph, plan.design.heads, chunk_rows=16)
    feats = again.fill(_split())
    assert again.computed_chunks == 4  # every chunk of every map: the final logits alone were reusable
    clean = FeatureCache(tmp_path / "clean", plan.graph, plan.design.heads, chunk_rows=16).fill(_split())
    for spec in plan.design.heads:
        np.testing.assert_array_equal(feats.features(spec), clean.features(spec))


@pytest.mark.parametrize("threads", [1, None])
def test_runs_of_a_few_rows_fill_the_cache_with_the_same_bits(tmp_path, plan, threads):
    """run_rows: onnxruntime runs of at most that many rows of a chunk (cache_io.Runner); the cache is the
    same, bit for bit, as with one run per chunk, remainders included (50 rows, chunks of 16, runs of 5)."""
    whole = FeatureCache(tmp_path / "a", plan.graph, plan.design.heads, chunk_rows=16, threads=threads).fill(_split())
    runs = FeatureCache(tmp_path / "b", plan.graph, plan.design.heads, chunk_rows=16, threads=threads, run_rows=5)
    feats = runs.fill(_split())
    for spec in plan.design.heads:
        np.testing.assert_array_equal(feats.features(spec), whole.features(spec))
    np.testing.assert_array_equal(feats.final_logits(), whole.final_logits())


def test_the_feature_graph_gives_every_map_channels_last_and_leaves_the_model_alone(plan):
    """feature_graph: expose_features, each pooled map then transposed to [N, *pooled, C] (onnxruntime fuses that
    into its copy out of the blocked layout), the order the cache stores; it reads them back as [N, C, *pooled]."""
    from eecc.data.cache import session
    from eecc.data.cache_io import feature_graph
    from eecc.passes.insert_exits import expose_features, feature_name

    before = ir.to_model(plan.graph).SerializeToString()
    graph = feature_graph(plan.graph, plan.design.heads)
    assert ir.to_model(plan.graph).SerializeToString() == before
    names = [feature_name(s.tensor, i) for i, s in enumerate(plan.design.heads)]
    transposes = {n.outputs[0].name: n.attrs["perm"] for n in graph.nodes if n.op == "Transpose"}
    assert transposes == {name: [0, 2, 3, 1] for name in names}
    onnx.checker.check_model(ir.to_model(graph), full_check=True)
    got = run(ir.to_model(graph), {"x": X})
    want = run(ir.to_model(expose_features(plan.graph, heads=plan.design.heads)), {"x": X})
    for name in names:
        np.testing.assert_array_equal(np.moveaxis(got[name], -1, 1), want[name])
    np.testing.assert_array_equal(got["y"], want["y"])
    sess, _ = session(graph, 1)  # with onnxruntime's own layout work too (golden.run disables it)
    fast = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": X})))
    for name in names:
        np.testing.assert_allclose(np.moveaxis(fast[name], -1, 1), want[name], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not RESNET.exists(), reason="fixture models not generated (tests/fixtures/make_fixtures.py)")
def test_the_resnet_feature_graph_gives_the_same_bits_in_runs_of_a_few_rows():
    """What bench/exits.py caches (all 30 pooled maps of the ResNet fixture, in runs of RUN_BYTES' 116 rows):
    each run writes its rows of the chunk's buffers in place, and a new input rebinds every run."""
    from eecc.data.cache import RUN_BYTES, session
    from eecc.data.cache_io import Runner
    from eecc.exits.family import expand
    from eecc.exits.run import _chunk_rows
    from eecc.data.cache_io import feature_graph
    from eecc.passes.insert_exits import feature_name

    resnet = plan_exits(RESNET)
    maps = list({h.feature_key: h for h in expand(resnet.design, resnet.design.heads)}.values())
    sess, final = session(feature_graph(resnet.graph, maps), 1)
    names = [final, *(feature_name(s.tensor, i) for i, s in enumerate(maps))]
    rows = _chunk_rows(resnet, RUN_BYTES)
    assert len(maps) == 30 and rows == 116
    x = np.random.default_rng(3).random((600, 1, 28, 28), dtype=np.float32)
    runner = Runner(sess, rows)
    for chunk in (x[:300], x[300:600], x[:50]):  # a new input for the same bindings, then a shorter chunk
        want = [out.copy() for out in Runner(sess).run(names, chunk)]
        got = runner.run(names, chunk)
        assert [start for start, _ in runner.parts] == list(range(0, len(chunk), rows))
        for name, g, w in zip(names, got, want):
            np.testing.assert_array_equal(g, w, err_msg=name)
