"""The feature pass in a forked process (eecc/data/aside.py): the same bits, and a child that dies mid-pass leaves
the rest to the caller's own fill."""

from __future__ import annotations

import multiprocessing
import os
import signal

import numpy as np
import pytest

from eecc.data.aside import can_fork, fill_aside
from eecc.data.cache import FeatureCache
from eecc.data.splits import make_splits
from test_cache import _split, plan  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(not can_fork(), reason="no fork on this platform")


def _same(feats, clean, plan) -> None:
    for spec in plan.design.heads:
        np.testing.assert_array_equal(feats.features(spec), clean.features(spec))
    np.testing.assert_array_equal(feats.final_logits(), clean.final_logits())


def test_the_forked_pass_fills_every_split_with_the_same_bits(tmp_path, plan):
    split = _split()
    seen = []
    cache = FeatureCache(tmp_path / "aside", plan.graph, plan.design.heads, chunk_rows=16)
    code = fill_aside(cache, {"train": split}, {"train": split.fingerprint()},
                      {"train": lambda done, total: seen.append((done, total))}, module="json")
    assert code == 0 and seen[-1] == (4, 4)  # 50 rows in chunks of 16, reported as the child finished them
    feats = cache.fill(split)
    assert cache.computed_chunks == 0  # the child did it all
    clean = FeatureCache(tmp_path / "clean", plan.graph, plan.design.heads, chunk_rows=16).fill(split)
    _same(feats, clean, plan)


def test_a_forked_pass_killed_midway_leaves_the_rest_to_the_callers_fill(tmp_path, plan):
    x = np.random.default_rng(2).random((2000, 1, 16, 16), dtype=np.float32)
    y = np.arange(2000) % 10
    split = make_splits(x, y, x[:10], y[:10], input_shape=(1, 16, 16), num_classes=10).train

    def kill_child(done, total):  # once the child has marked a chunk done, of 125
        for child in multiprocessing.active_children():
            if child.name == "eecc-features" and done >= 1:
                os.kill(child.pid, signal.SIGKILL)

    cache = FeatureCache(tmp_path / "aside", plan.graph, plan.design.heads, chunk_rows=16, threads=1)
    code = fill_aside(cache, {"train": split}, {"train": split.fingerprint()}, {"train": kill_child}, module="json")
    assert code == -signal.SIGKILL
    feats = cache.fill(split)
    assert 1 <= cache.computed_chunks <= 124  # what the child had not marked done; its finished chunks stay
    clean = FeatureCache(tmp_path / "clean", plan.graph, plan.design.heads, chunk_rows=16).fill(split)
    _same(feats, clean, plan)


def _can_fork_in_a_daemon(out) -> None:
    out.put(can_fork())


def test_a_pool_worker_fills_the_cache_itself():
    """Daemonic processes (a pool's workers) may have no children: run_exits inside one fills in-process."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    worker = ctx.Process(target=_can_fork_in_a_daemon, args=(out,), daemon=True)
    worker.start()
    assert out.get(timeout=60) is False and can_fork()
    worker.join()
