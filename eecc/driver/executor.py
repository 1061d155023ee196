"""Where independent tasks run: in this process, on a local process pool, or on a Ray cluster.

`Executor.map(fn, items, shared=None) -> [fn(shared, item) for item in items]`, in order. `fn` is a
top-level (picklable) function; `shared` is one read-only object that every task needs (Ray puts it
in the object store once). Tasks must be pure and idempotent: a task whose worker dies is run again
(Ray's max_retries; the process pool resubmits what did not finish), and results are shared through
the content-addressed cache directory, so a rerun redoes only unfinished work. Callers see only
`workers` (how many tasks may run at once) to choose a task granularity, never which engine runs.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

from eecc.errors import EeccError, require
from eecc.fork import parent_heap_frozen

EXECUTORS = ("local", "process", "ray")
MAX_RETRIES = 3
PRELOAD = ["numpy", "onnxruntime", "eecc.data.cache", "eecc.exits.run", "eecc.train.fit", "eecc.search.search"]


class Executor:
    workers: int = 1

    def map(self, fn: Callable[[Any, Any], Any], items: Sequence, shared: Any = None) -> list:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcess(Executor):
    """The default: tasks run one after another in the calling process (they may thread inside; head
    training forks workers, `Forked`)."""

    def map(self, fn, items, shared=None) -> list:
        return [fn(shared, item) for item in items]


class Forked(Executor):
    """`workers` processes forked from this one for one `map`: for tasks of many small torch ops, which
    threads of one process run in turn on the GIL (bench/exits.py's head epochs on 2 cores, near-idle:
    2 threads 1.0-1.25x one thread's speed at 1.8x its CPU, 2 processes 1.6-1.9x; eecc.exits.run trains
    heads this way under the local executor). Fork, not `ProcessPool`'s forkserver: nothing is imported
    again, so a caller's script needs no main guard. Every worker runs torch on one thread, set before
    any op, so an OpenMP pool copied from this process is never entered. Tasks that a dead worker left
    (BrokenProcessPool) run here afterwards, in turn: tasks are idempotent.
    """

    def __init__(self, workers: int):
        self.workers = max(1, workers)

    def map(self, fn, items, shared=None) -> list:
        import multiprocessing

        items, results = list(items), {}
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_one_torch_thread)
        try:
            with parent_heap_frozen():  # the fork-context pool forks its workers in the first submit (eecc/fork.py)
                futures = {pool.submit(fn, shared, item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
        except BrokenProcessPool:
            pass
        except BaseException:
            _stop_workers(pool)  # Ctrl-C / SIGTERM: a busy worker would hold `shutdown(wait=True)` until it ends
            raise
        pool.shutdown(wait=True)
        return [results[i] if i in results else fn(shared, items[i]) for i in range(len(items))]


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End `pool` now: pending tasks cancelled, running workers killed (SIGKILL: a worker inside MKL may not
    reach Python's signal handler; nu11 saw one in head training hold the parent 60+ s after SIGTERM).
    `_processes` is the pool's own pid -> Process map (CPython 3.8-3.13; 3.14 adds `kill_workers()`)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join(5)


def _one_torch_thread() -> None:
    """A forked worker's start: torch on one thread, and the process's own stdout/stderr back (a progress
    display may have wrapped them in proxies whose lock another thread of the parent held at the fork)."""
    import sys

    import torch

    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    torch.set_num_threads(1)


class ProcessPool(Executor):
    """`workers` local processes, forked from a fork server that has imported eecc's task modules once.

    Not plain fork: a child forked from a parent whose torch/OpenMP pools are running can hang.
    """

    def __init__(self, workers: int | None = None, *, max_retries: int = MAX_RETRIES):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.max_retries = max_retries
        self._pool: ProcessPoolExecutor | None = None

    def _get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)  # torch imports once, not once per worker
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
        return self._pool

    def map(self, fn, items, shared=None) -> list:
        items = list(items)
        results: dict[int, Any] = {}
        for attempt in range(self.max_retries + 1):
            pending = [i for i in range(len(items)) if i not in results]
            if not pending:
                break
            pool = self._get()
            futures = {pool.submit(fn, shared, items[i]): i for i in pending}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
            except BrokenProcessPool:
                # A worker died (killed, out of memory): every unfinished task is lost with the pool.
                # Finished results are kept; tasks are idempotent, so the rest simply run again.
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
                for future, i in futures.items():
                    if future.done() and not future.cancelled() and future.exception() is None:
                        results[i] = future.result()
                if attempt == self.max_retries:
                    raise EeccError(f"process pool: a worker died {self.max_retries + 1} times running "
                                    f"{fn.__name__}; check memory (dmesg) or run with --workers 1") from None
        return [results[i] for i in range(len(items))]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class RayExecutor(Executor):
    """Tasks on Ray: a running cluster at `address` (or "auto"), else a local runtime with `num_cpus`.

    Data moves through the shared cache directory, so on a multi-node cluster it must be on a file
    system that every node mounts.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, *,
                 max_retries: int = MAX_RETRIES):
        ray = require("ray", "ray", "--executor ray")
        self.ray, self.max_retries, self._remote = ray, max_retries, None
        self._started = False
        if not ray.is_initialized():
            kw = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
            try:
                ray.init(log_to_driver=False, configure_logging=False, **kw)
            except ConnectionError as e:
                raise EeccError(f"--ray-address {address}: no Ray cluster there ({e}); start one with "
                                "`ray start --head` or leave out --ray-address for a local runtime") from None
            self._started = True
        total = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(num_cpus or total, total))

    def map(self, fn, items, shared=None) -> list:
        ray = self.ray
        if self._remote is None:
            self._remote = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(_apply)
        ref = ray.put(shared)
        try:
            return ray.get([self._remote.remote(fn, ref, item) for item in items])
        except ray.exceptions.WorkerCrashedError as e:
            raise EeccError(f"ray: a worker died more than {self.max_retries} times running "
                            f"{fn.__name__}: {e}") from None

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False


def _apply(fn, shared, item):
    """Any callable (builtins too) as one Ray task; Ray resolves `shared` from the object store."""
    return fn(shared, item)


def make_executor(name: str | None = "local", workers: int | None = None, address: str | None = None) -> Executor:
    """The executor a user asked for on the command line (`--executor`, `--workers`, `--ray-address`)."""
    name = name or "local"
    if workers is not None and workers < 1:
        raise EeccError(f"--workers {workers} must be at least 1")
    if address and name != "ray":
        raise EeccError(f"--ray-address is only for --executor ray (got --executor {name})")
    if name == "local":
        return InProcess()
    if name == "process":
        return ProcessPool(workers)
    if name == "ray":
        return RayExecutor(address, workers)
    raise EeccError(f"unknown executor '{name}'; choose one of {', '.join(EXECUTORS)}")


def chunks(items: Sequence, parts: int) -> list[list]:
    """`items` cut into at most `parts` contiguous, nearly equal runs (order kept)."""
    items = list(items)
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for p in range(parts):
        stop = start + size + (p < extra)
        out.append(items[start:stop])
        start = stop
    return [c for c in out if c]
