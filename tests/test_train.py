"""The torch shim: parity of trained heads with their ONNX form, early dropping, determinism, independence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from eecc.model import ir
from eecc.exits.heads import ExitHead, HeadSpec
from eecc.passes.insert_exits import insert_exits, logits_name
from eecc.train.fit import FitResult, TrainConfig, _Adam, channel_stats, fit_head, fit_heads, predict_many
from eecc.train.modules import HeadModule, export, loss_and_grads, one_hot, predict
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
    streamed = fit_head(spec, np.load(tmp_path / "f.npy", mmap_mode="r"), y, x[:50], y[:50], TrainConfig(epochs=3))
    np.testing.assert_allclose(export(ram.module).fc_w, export(streamed.module).fc_w, rtol=1e-5, atol=1e-6)
    mean, std = channel_stats(mm, chunk=7)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std, x.astype(np.float64).std(axis=(0, 2, 3)), rtol=1e-4)


def test_channel_stats_hold_far_from_zero_and_on_vectors():
    """float64 sums of x and x²: a mean 10^5 standard deviations from zero still gives the std to 1e-4 (float32
    sums of squares would lose it all), for maps [N, C, H, W] and an MLP's vectors [N, F] alike."""
    rng = np.random.default_rng(5)  # its own: the module's RNG feeds the later tests' data
    x = (1000.0 + 0.01 * rng.normal(size=(5000, 3, 2, 2))).astype(np.float32)
    mean, std = channel_stats(x, chunk=999)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(std, x.astype(np.float64).std(axis=(0, 2, 3)), rtol=1e-4)
    v = rng.normal(size=(300, 5)).astype(np.float32) * 3 - 2
    mean, std = channel_stats(v)
    np.testing.assert_allclose(mean, v.astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, v.astype(np.float64).std(axis=0), rtol=1e-6)


@pytest.mark.parametrize("kind, width", [("gap", 6), ("gap", None), ("flat", 6)])
def test_hand_written_gradients_equal_autograd(kind, width):
    spec = HeadSpec("t", (8, 4, 4), (1, 1), width, 5, backbone_macs=0, kind=kind)
    torch.manual_seed(0)
    module = HeadModule(spec, RNG.normal(size=8).astype(np.float32), RNG.uniform(0.5, 2.0, 8).astype(np.float32))
    x = torch.from_numpy(RNG.normal(size=(64, 16, 8)).astype(np.float32) * 2 + 1)
    y = torch.from_numpy(RNG.integers(0, 5, 64))
    want_loss = nn.functional.cross_entropy(module.forward_standardised((x - module.mean) / module.std), y)
    want_loss.backward()
    want = {k: p.grad.clone() for k, p in module.named_parameters()}
    got_loss = loss_and_grads(module, x, y)
    assert got_loss == pytest.approx(want_loss.item(), rel=1e-5)
    for name, p in module.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), want[name].numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("kind, width, hidden", [("gap", 6, None), ("gap", None, None), ("flat", 6, None),
                                                  ("flat", None, None), ("mlp", None, 7)])
def test_one_hot_labels_give_the_same_gradient_bits(kind, width, hidden):
    """Training hands every head the batch's labels one-hot (built once for all the heads that step on it):
    each gradient has the same bits as with 1 subtracted at the labels by index."""
    spec = HeadSpec("t", (8, 4, 4), (1, 1), width, 5, backbone_macs=0, kind=kind, hidden=hidden)
    torch.manual_seed(0)
    module = HeadModule(spec, RNG.normal(size=8).astype(np.float32), RNG.uniform(0.5, 2.0, 8).astype(np.float32))
    x = torch.from_numpy(RNG.normal(size=(64, 16, 8)).astype(np.float32) * 2 + 1)
    if module.channel_major:
        x = x.transpose(1, 2).reshape(64, -1).contiguous()
    y = torch.from_numpy(RNG.integers(0, 5, 64))
    by_index = loss_and_grads(module, x, y)
    want = {k: p.grad.clone() for k, p in module.named_parameters()}
    assert loss_and_grads(module, x, y, onehot=one_hot(y, 5)) == by_index
    for name, p in module.named_parameters():
        assert torch.equal(p.grad, want[name]), name


@pytest.mark.parametrize("kind", ["flat", "mlp"])
def test_hand_written_gradients_of_channel_major_heads_equal_autograd(kind):
    """Flat heads without a conv and MLPs train on flat rows with folded standardisation: [N, C·P] from NCHW
    features, [N, P·C] from the cache's channels-last ones (position_major); the gradients are the weights' own."""
    spec = HeadSpec("t", (8, 4, 4), (2, 2), None, 5, backbone_macs=0, kind=kind, pool_op="avg",
                    hidden=6 if kind == "mlp" else None)
    torch.manual_seed(0)
    module = HeadModule(spec, RNG.normal(size=8).astype(np.float32), RNG.uniform(0.5, 2.0, 8).astype(np.float32))
    assert module.channel_major
    cp = torch.from_numpy(RNG.normal(size=(64, 8, 4)).astype(np.float32) * 2 + 1)  # [N, C, P]
    y = torch.from_numpy(RNG.integers(0, 5, 64))
    z = module.forward_standardised((cp.transpose(1, 2) - module.mean) / module.std)  # [N, P, C] reference path
    want_loss = nn.functional.cross_entropy(z, y)
    want_loss.backward()
    want = {k: p.grad.clone() for k, p in module.named_parameters()}
    with torch.no_grad():
        np.testing.assert_allclose(module(cp).numpy(), z.detach().numpy(), rtol=1e-5, atol=1e-5)
    for position_major in (False, True):
        flat = cp.transpose(1, 2).reshape(64, -1) if position_major else cp.reshape(64, -1)
        got_loss = loss_and_grads(module, flat, y, position_major=position_major)
        assert got_loss == pytest.approx(want_loss.item(), rel=1e-5)
        with torch.no_grad():
            np.testing.assert_allclose(module.forward_flat(flat, position_major).numpy(), z.detach().numpy(),
                                       rtol=1e-5, atol=1e-5)
        for name, p in module.named_parameters():
            np.testing.assert_allclose(p.grad.numpy(), want[name].numpy(), rtol=1e-4, atol=1e-6,
                                       err_msg=f"{name}, position-major {position_major}")


def test_adam_matches_torch_adam_without_decay_of_the_rate():
    w0 = torch.from_numpy(RNG.normal(size=(4, 3)).astype(np.float32))
    ours, theirs = w0.clone(), w0.clone().requires_grad_()
    opt = _Adam([ours], 1e-2, 1e-3, steps=10**12)  # the cosine factor stays 1
    ref = torch.optim.Adam([theirs], lr=1e-2, weight_decay=1e-3)
    for _ in range(5):
        grad = torch.from_numpy(RNG.normal(size=(4, 3)).astype(np.float32))
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(ours.numpy(), w0.numpy())


def test_heads_trained_together_equal_heads_trained_alone():
    """Exits are independent: neither the other heads nor the worker count change a head's weights."""
    specs = [HeadSpec("a", (16, 8, 8), (2, 2), 16, 5, 0), HeadSpec("b", (8, 8), (1,), None, 5, 0),
             HeadSpec("c", (4, 4, 4), (1, 1), 4, 5, 0)]
    data = [_blobs(600, s, 0.5) for s in specs]
    val = [_blobs(200, s, 0.5) for s in specs]
    y, yv = data[0][1], val[0][1]
    together = fit_heads(specs, [d[0] for d in data], y, [v[0] for v in val], yv, TrainConfig(epochs=3, threads=2))
    for spec, d, v, fit in zip(specs, data, val, together):
        alone = fit_head(spec, d[0], y, v[0], yv, TrainConfig(epochs=3, threads=1))
        assert fit.epochs == alone.epochs and not fit.dropped
        for name, w in vars(export(fit.module)).items():
            if w is not None:
                np.testing.assert_array_equal(w, getattr(export(alone.module), name), err_msg=f"{spec.tensor}.{name}")
        np.testing.assert_array_equal(fit.val_logits, predict(alone.module, v[0]))


def test_successive_halving_stops_the_heads_keep_turns_down_at_each_rung():
    """Rung 0 sits after a quarter of the first epoch's batches (TrainConfig.rung), rung 1 at the epoch's end:
    keep sees each head's validation accuracy there; a head turned down keeps those weights, one that goes
    on trains exactly as alone."""
    specs = [HeadSpec("a", (8, 8, 8), (2, 2), w, 5, 0) for w in (None, 4, 8)]
    data, val = _blobs(600, specs[0], 1.0), _blobs(200, specs[0], 1.0)
    seen = []

    def keep(acc, rung):
        seen.append((list(acc), rung))
        return [True, False, True] if rung == 0 else [True, False, False]

    config = TrainConfig(epochs=3, threads=2, rung_rows=0)  # 600 rows: below the default minimum for a rung
    assert config.rung == 0.25
    fits = fit_heads(specs, [data[0]] * 3, data[1], [val[0]] * 3, val[1], config, keep=keep)
    assert seen == [([f.rung_accuracy for f in fits], 0),  # every head's accuracy at the rung
                    ([fits[0].first_epoch_accuracy, None, fits[2].first_epoch_accuracy], 1)]  # those left
    assert fits[1].epochs == 8 / 30  # 600 rows in 30 batches of 20 (min_steps): the rung after ceil(30/4)
    assert fits[1].val_accuracy == fits[1].first_epoch_accuracy == fits[1].rung_accuracy and not fits[1].dropped
    assert fits[2].epochs == 1 and fits[2].val_accuracy == fits[2].first_epoch_accuracy and not fits[2].dropped
    assert fits[0].epochs > 1
    alone = [fit_head(spec, data[0], data[1], val[0], val[1], replace(config, threads=1)) for spec in specs]
    assert fits[2].first_epoch_accuracy == alone[2].first_epoch_accuracy < alone[2].val_accuracy  # stopped at 1
    np.testing.assert_array_equal(fits[0].val_logits, alone[0].val_logits)  # the rungs left it as alone
    for name, w in vars(export(fits[0].module)).items():
        if w is not None:
            np.testing.assert_array_equal(w, getattr(export(alone[0].module), name), err_msg=name)
    # The rung's weights are those of the first batches: a head turned down there is less trained than alone.
    assert fits[1].val_accuracy < alone[1].first_epoch_accuracy


@pytest.mark.parametrize("rung", [{"rung": 1.0}, {}])
def test_a_rung_at_one_epoch_stops_heads_after_their_first_epoch(rung):
    """rung=1.0, or fewer training rows than `rung_rows` (600 < 8192): one rung, where keep judges the first
    epoch's accuracies; heads turned down keep their first-epoch weights."""
    specs = [HeadSpec("a", (8, 8, 8), (2, 2), w, 5, 0) for w in (None, 4)]
    data, val = _blobs(600, specs[0], 0.5), _blobs(200, specs[0], 0.5)
    config = TrainConfig(epochs=3, threads=1, **rung)
    seen = []
    fits = fit_heads(specs, [data[0]] * 2, data[1], [val[0]] * 2, val[1], config,
                     keep=lambda first, rung: seen.append((list(first), rung)) or [True, False])
    alone = fit_head(specs[1], data[0], data[1], val[0], val[1], config)
    assert seen == [([f.first_epoch_accuracy for f in fits], 0)] and fits[1].epochs == 1 and alone.epochs > 1
    assert fits[1].val_accuracy == fits[1].first_epoch_accuracy == alone.first_epoch_accuracy  # its first epoch


def test_the_designs_on_one_map_train_in_lockstep_exactly_as_alone():
    """Heads given one array share each gathered batch; every kind still trains as it would alone."""
    base = dict(in_shape=(8, 8, 8), pool=(2, 2), num_classes=5, backbone_macs=0, pool_op="avg")
    specs = [HeadSpec("m", width=None, kind="flat", **base), HeadSpec("m", width=4, kind="flat", **base),
             HeadSpec("m", width=6, kind="gap", **base), HeadSpec("m", width=None, kind="mlp", hidden=7, **base)]
    (x, y), (xv, yv) = _blobs(700, specs[0], 0.3), _blobs(200, specs[0], 0.3)
    config = TrainConfig(epochs=4, patience=1, threads=2, rung_rows=0)
    fits = fit_heads(specs, [x] * 4, y, [xv] * 4, yv, config, keep=lambda first, rung: [True, True, False, True])
    assert fits[2].epochs < 1
    for spec, fit in zip(specs, fits):
        alone = fit_head(spec, x, y, xv, yv, replace(config, threads=1))
        if spec.width == 6:
            continue  # stopped by `keep` at the rung; alone it went on
        assert fit.first_epoch_accuracy == alone.first_epoch_accuracy
        assert fit.epochs == alone.epochs
        for name, w in vars(export(fit.module)).items():
            if w is not None:
                np.testing.assert_array_equal(w, getattr(export(alone.module), name), err_msg=f"{spec.kind}.{name}")
        np.testing.assert_array_equal(fit.val_logits, alone.val_logits)


def test_predicting_many_heads_on_threads_equals_predicting_each():
    """Test-split logits come from predict_many: the same logits as `predict` per head, whatever the
    worker count, and the caller's torch thread count is left as it was."""
    base = dict(in_shape=(8, 8, 8), pool=(2, 2), num_classes=5, backbone_macs=0, pool_op="avg")
    specs = [HeadSpec("m", width=None, kind="flat", **base), HeadSpec("m", width=4, kind="flat", **base),
             HeadSpec("m", width=6, kind="gap", **base), HeadSpec("m", width=None, kind="mlp", hidden=7, **base)]
    (x, y), (xv, yv) = _blobs(300, specs[0], 0.5), _blobs(100, specs[0], 0.5)
    fits = fit_heads(specs, [x] * 4, y, [xv] * 4, yv, TrainConfig(epochs=1, threads=1))
    threads = torch.get_num_threads()
    one, two = (predict_many([f.module for f in fits], [xv] * 4, workers=w) for w in (1, 3))
    assert torch.get_num_threads() == threads
    for f, a, b in zip(fits, one, two):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, predict(f.module, xv))
        np.testing.assert_array_equal(a, f.val_logits)  # the logits training scored the head by


def test_stored_heads_enter_each_rung_with_the_accuracy_it_judged():
    """A location whose heads are partly stored (a run cut short) halves on what each rung saw: the stored
    heads' accuracy at rung 0, their first-epoch accuracy at rung 1 unless they had stopped or dropped before."""
    from eecc.exits.train_task import _judged

    module = HeadModule(HeadSpec("a", (4, 2, 2), (1, 1), None, 3, 0), np.zeros(4, np.float32), np.ones(4, np.float32))
    at_rung = FitResult(module, 0.7, 0.7, 1.0, 0.25, False, rung_accuracy=0.7)
    at_epoch = FitResult(module, 0.8, 0.8, 1.0, 1, False, rung_accuracy=0.6)
    trained = FitResult(module, 0.85, 0.9, 1.0, 5, False, rung_accuracy=0.65)
    dropped = FitResult(module, 0.3, 0.3, 1.0, 1, True, rung_accuracy=0.32)
    heads = (at_rung, at_epoch, trained, dropped)
    assert [_judged(f, 0) for f in heads] == [0.7, 0.6, 0.65, 0.32]
    assert [_judged(f, 1) for f in heads] == [None, 0.8, 0.85, None]


def test_heads_on_channels_last_features_train_as_on_nchw_ones():
    """The cache stores maps channels-last and hands out [N, C, *pooled] views (eecc.data.cache): heads with a conv
    or a global pool read the same batches bit for bit; flat heads read them position-major, the same function
    summed in another order, so within rounding."""
    base = dict(in_shape=(8, 8, 8), pool=(2, 2), num_classes=5, backbone_macs=0, pool_op="avg")
    specs = [HeadSpec("m", width=None, kind="flat", **base), HeadSpec("m", width=4, kind="flat", **base),
             HeadSpec("m", width=6, kind="gap", **base), HeadSpec("m", width=None, kind="mlp", hidden=7, **base)]
    (x, y), (xv, yv) = _blobs(700, specs[0], 0.3), _blobs(200, specs[0], 0.3)
    x, xv = x.astype(np.float32), xv.astype(np.float32)

    def channels_last(a):
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)

    config = TrainConfig(epochs=3, patience=3, threads=1, rung_rows=0)
    nchw = fit_heads(specs, [x] * 4, y, [xv] * 4, yv, config)
    last = fit_heads(specs, [channels_last(x)] * 4, y, [channels_last(xv)] * 4, yv, config)
    for spec, a, b in zip(specs, nchw, last):
        assert a.epochs == b.epochs
        if spec.width:
            np.testing.assert_array_equal(a.val_logits, b.val_logits, err_msg=spec.design)
        else:
            np.testing.assert_allclose(a.val_logits, b.val_logits, rtol=1e-4, atol=1e-4, err_msg=spec.design)
        np.testing.assert_allclose(predict(b.module, channels_last(xv)), predict(a.module, xv), rtol=1e-4, atol=1e-4)
