"""Executors: the same heads, placement and thresholds in-process, on a process pool and on Ray, also after a worker dies."""

from __future__ import annotations

import contextlib
import io
import json
import operator
import os
import resource
import sys
from pathlib import Path

import numpy as np
import pytest

from eecc.examples import datasets
from eecc.cli import main
from eecc.errors import EeccError
from eecc.driver.executor import Executor, Forked, InProcess, ProcessPool, chunks, make_executor
from eecc.exits.run import run_exits
from eecc.search.search import SearchOptions, search

MODEL = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"
pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="fixture models not generated (tests/fixtures/make_fixtures.py)")
try:
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install 'eecc[ray]')")


class KillOnce(Executor):
    """The real executor, except that the first `target` task to start kills its own worker process."""

    def __init__(self, inner: Executor, marker: Path, target: str):
        self.inner, self.marker, self.target = inner, marker, target
        self.workers = inner.workers

    def map(self, fn, items, shared=None):
        return self.inner.map(_die_first, items, shared=(fn, shared, str(self.marker), self.target))


def _die_first(job, item):
    fn, shared, marker, target = job
    if fn.__name__ == target:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # only one task ever wins this
            os._exit(1)  # no cleanup, no exception: as if the OOM killer took the worker
        except FileExistsError:
            pass
    return fn(shared, item)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return datasets.save_npz(datasets.load("digits"), tmp_path_factory.mktemp("data") / "digits.npz")


def _cli(*argv) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--json", "--quiet"]) == 0
    return _strip(json.loads(out.getvalue()))


def _strip(doc):
    """The result without wall-clock figures (the only thing allowed to differ between executors)."""
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items() if k not in ("timings", "peak_rss_mb", "search_s")}
    return [_strip(v) for v in doc] if isinstance(doc, list) else doc


def _run_all(npz, cache: Path, *flags) -> tuple[dict, dict, dict]:
    exits = _cli("exits", str(MODEL), "--data", str(npz), "--cache-dir", str(cache), "--epochs", "3", *flags)
    found = _cli("search", str(MODEL), "--target", "psoc6", "--data", str(npz), "--cache-dir", str(cache),
                 "--max-acc-drop", "3", *flags)
    return exits, found, _weights(cache)


def _weights(cache: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(cache.glob("*/trained-*/heads.npz")):
        with np.load(path) as z:
            out |= {f"{path.parent.name}/{k}": z[k] for k in z.files}
    return out


def _same(a, b) -> None:
    assert a[0] == b[0] and a[1] == b[1]
    assert a[1]["chosen"] is not None
    assert a[2].keys() == b[2].keys() and a[2]
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k], err_msg=k)  # bitwise: one torch thread per head


@pytest.fixture(scope="module")
def local(tmp_path_factory, npz):
    return _run_all(npz, tmp_path_factory.mktemp("local"))


def test_map_keeps_order_and_passes_shared():
    assert InProcess().map(operator.add, [1, 2, 3], shared=10) == [11, 12, 13]
    with ProcessPool(2) as pool:
        assert pool.map(operator.add, list(range(7)), shared=1) == list(range(1, 8))
    assert chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]] and chunks([1], 4) == [[1]]


def _where(parent: int, item: int) -> tuple[int, bool, int]:
    import torch

    if item == 5 and os.getpid() != parent:
        os._exit(1)  # a worker dies on item 5: its task runs again in the parent
    return item, os.getpid() != parent, torch.get_num_threads()


def test_forked_workers_keep_order_run_torch_on_one_thread_and_leave_a_dead_workers_tasks_here():
    got = Forked(2).map(_where, list(range(6)), shared=os.getpid())
    assert [item for item, _, _ in got] == list(range(6))
    assert not got[5][1]  # item 5 ran here, after its worker died
    assert any(forked for _, forked, _ in got) and all(threads == 1 for _, forked, threads in got if forked)


_STOP_SCRIPT = """
import os, sys, time
from eecc import signals
from eecc.driver.executor import Forked

def busy(_, item):
    print(os.getpid(), flush=True)
    time.sleep(600)  # a worker that never reaches a stop point (nu11: one inside MKL)

signals.install()
try:
    Forked(2).map(busy, [0, 1])
except signals.Terminated:
    print("terminated", flush=True)
"""


def test_sigterm_during_a_forked_map_ends_the_busy_workers_and_the_command(tmp_path):
    """nu11 F11: SIGTERM to a compile in head training waited for the busy worker (shutdown(wait=True))."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen([sys.executable, "-c", _STOP_SCRIPT], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    workers: list[int] = []
    try:
        workers = [int(proc.stdout.readline()) for _ in range(2)]
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)  # the old code: 600 s
        assert out.strip() == "terminated" and proc.returncode == 0
        for pid in workers:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:  # on failure, leave no sleeping processes behind
        proc.kill()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def test_local_head_training_forks_a_worker_per_core_and_gets_the_one_thread_result(tmp_path):
    """With the local executor on several cores heads train in forked processes (one location per task);
    the heads have the same bits as trained by one thread in this process (TrainConfig.threads=1)."""
    from dataclasses import replace

    data = datasets.load("digits")
    before = _children_cpu()
    forked = run_exits(MODEL, data, cache_dir=tmp_path / "forked", config=_config())
    assert _children_cpu() > before or (os.cpu_count() or 1) == 1
    here = run_exits(MODEL, data, cache_dir=tmp_path / "here", config=replace(_config(), threads=1))
    assert len(forked.tried) == len(here.tried) > 1
    for a, b in zip(forked.tried, here.tried):
        assert (a.spec, a.epochs, a.dropped, a.val_accuracy) == (b.spec, b.epochs, b.dropped, b.val_accuracy)
        for name, w in (vars(a.weights) if a.weights is not None else {}).items():
            if w is not None:
                np.testing.assert_array_equal(w, getattr(b.weights, name), err_msg=f"{a.spec.design}.{name}")
    np.testing.assert_array_equal(forked.logits.val_logits, here.logits.val_logits)
    # every tried head's test logits, predicted by the task that trained it (train_task.fit_group): same bits
    np.testing.assert_array_equal(forked.tried_logits().test_logits, here.tried_logits().test_logits)


def test_bad_executor_options_are_user_errors():
    with pytest.raises(EeccError, match="--workers 0"):
        make_executor("process", 0)
    with pytest.raises(EeccError, match="only for --executor ray"):
        make_executor("process", 2, "auto")
    with pytest.raises(EeccError, match="unknown executor"):
        make_executor("slurm")


def test_process_pool_gives_the_in_process_result(local, npz, tmp_path):
    _same(local, _run_all(npz, tmp_path, "--executor", "process", "--workers", "2"))


def test_process_pool_survives_a_worker_killed_while_extracting_features(local, npz, tmp_path):
    marker = tmp_path / "killed"
    with ProcessPool(2) as pool:
        run = run_exits(MODEL, datasets.load("digits"), cache_dir=tmp_path, executor=KillOnce(pool, marker, "_fill_shard"),
                        config=_config())
    assert marker.exists()  # a worker really died mid-run
    _same_heads(run, local[2])


@pytest.fixture(scope="module")
def ray_runtime():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not on the workers' path
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@needs_ray
def test_ray_gives_the_in_process_result(ray_runtime, local, npz, tmp_path):
    _same(local, _run_all(npz, tmp_path, "--executor", "ray"))


@needs_ray
def test_ray_retries_a_killed_worker_and_finishes_with_the_same_result(ray_runtime, local, tmp_path):
    marker = tmp_path / "killed"
    ex = KillOnce(make_executor("ray"), marker, "fit_group")
    run = run_exits(MODEL, datasets.load("digits"), cache_dir=tmp_path, executor=ex, config=_config())
    assert marker.exists()
    _same_heads(run, local[2])
    plain = search(run.logits, options=SearchOptions(max_exits=2))
    again = search(run.logits, options=SearchOptions(max_exits=2), executor=KillOnce(ex.inner, tmp_path / "k2", "_score_chunk"))
    assert (tmp_path / "k2").exists()
    assert [p.to_json() | {"search_s": 0} for p in again.placements] == [p.to_json() | {"search_s": 0} for p in plain.placements]


def _config():
    from eecc.exits.heads import TrainConfig

    return TrainConfig(epochs=3)


def _same_heads(run, stored: dict[str, np.ndarray]) -> None:
    """Weights of a library run equal those the in-process `eecc exits` stored (same store key)."""
    mine = {k.split("/", 1)[1]: v for k, v in _weights(Path(run.artifacts).parent.parent).items()
            if k.startswith(Path(run.artifacts).name + "/")}
    theirs = {k.split("/", 1)[1]: v for k, v in stored.items() if k.startswith(Path(run.artifacts).name + "/")}
    assert mine.keys() == theirs.keys() and mine
    for k in mine:
        np.testing.assert_array_equal(mine[k], theirs[k], err_msg=k)
