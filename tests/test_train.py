"""The torch shim: parity of trained heads with their ONNX form, early dropping, determinism."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from eecc import ir
from eecc.heads import ExitHead, HeadSpec
from eecc.passes.insert_exits import insert_exits, logits_name
from eecc.train.fit import TrainConfig, channel_stats, fit_head
from eecc.train.modules import export, predict
from golden import parse, run
from test_heads import SMALL
from test_insert_exits import _maxpool_ceil

RNG = np.random.default_rng(2)


def _blobs(n, spec: HeadSpec, signal: float):
    """Class-dependent channel means, so a head can learn; signal 0 gives pure noise."""
    y = np.arange(n) % spec.num_classes
    centers = np.random.default_rng(5).normal(size=(spec.num_classes, spec.channels, *[1] * (len(spec.in_shape) - 1)))
    x = RNG.normal(size=(n, *spec.pooled_shape)) + signal * centers[y] + 3.0  # offset: standardisation matters
    return x.astype(np.float16), y


@pytest.mark.parametrize("width", [6, None])
def test_onnx_head_equals_torch_head(width):
    """Trained weights written into ONNX initializers give the torch head's logits within 1e-5."""
    graph = ir.from_model(parse(SMALL))
    spec = HeadSpec("r1", (8, 16, 16), (4, 4), width, 10, backbone_macs=0)
    x, y = _blobs(400, spec, 3.0)
    fit = fit_head(spec, x, y, x[:100], y[:100], TrainConfig(epochs=2))
    assert not fit.dropped
    with torch.no_grad():  # make the folded standardisation non-trivial
        fit.module.mean.uniform_(0.0, 1.0)
        fit.module.std.uniform_(0.5, 2.0)
    heads = [ExitHead(spec, export(fit.module))]
    model = ir.to_model(insert_exits(graph, heads=heads))
    onnx.checker.check_model(model, full_check=True)
    inp = RNG.random((7, 1, 16, 16)).astype(np.float32)
    probe = ir.to_model(graph)
    probe.graph.output.append(onnx.ValueInfoProto(name="r1"))
    pooled = _maxpool_ceil(run(probe, {"x": inp})["r1"], 4)
    got = run(model, {"x": inp})[logits_name("r1", 0)]
    np.testing.assert_allclose(got, predict(fit.module, pooled), rtol=1e-5, atol=1e-5)


def test_head_learns_and_is_deterministic():
    spec = HeadSpec("t", (16, 8, 8), (2, 2), 16, 5, backbone_macs=0)
    x, y = _blobs(1000, spec, 0.5)
    xv, yv = _blobs(300, spec, 0.5)
    a = fit_head(spec, x, y, xv, yv)
    b = fit_head(spec, x, y, xv, yv)
    assert not a.dropped and a.val_accuracy > 0.9 and a.epochs >= 2
    for name, w in vars(export(a.module)).items():
        np.testing.assert_array_equal(w, getattr(export(b.module), name), err_msg=name)


def test_head_on_noise_is_dropped_after_one_epoch():
    spec = HeadSpec("t", (16, 8), (1,), None, 4, backbone_macs=0)
    x, y = _blobs(2000, spec, 0.0)
    xv, yv = _blobs(400, spec, 0.0)
    fit = fit_head(spec, x, y, xv, yv)
    assert fit.dropped and fit.epochs == 1 and fit.first_epoch_accuracy < 0.35


def test_streaming_from_memmap_equals_in_ram(tmp_path):
    spec = HeadSpec("t", (4, 4, 4), (1, 1), 4, 3, backbone_macs=0)
    x, y = _blobs(300, spec, 1.0)
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float16, shape=x.shape)
    mm[:] = x
    mm.flush()
    ram = fit_head(spec, x, y, x[:50], y[:50], TrainConfig(epochs=3))
    streamed = fit_head(spec, np.load(tmp_path / "f.npy", mmap_mode="r"), y, x[:50], y[:50],
                        TrainConfig(epochs=3, ram_bytes=0))
    np.testing.assert_allclose(export(ram.module).fc_w, export(streamed.module).fc_w, rtol=1e-5, atol=1e-6)
    mean, std = channel_stats(mm, chunk=7)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std, x.astype(np.float64).std(axis=(0, 2, 3)), rtol=1e-4)
