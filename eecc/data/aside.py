"""The feature pass in a process forked from this one, while this one imports torch for the head training.

Both ran in this process before: torch's import (~1 CPU-s, mostly Python holding the GIL) on a side thread, the
feature lanes (eecc.data.cache.FeatureCache._fill_lanes) beside it. A lane takes the GIL back ~40 times a chunk
(after each onnxruntime run and each row write) and waited for it each time: a lane chunk of ~135 ms CPU spent
~130 ms blocked while the import ran (/proc/thread-self/schedstat: wall − on-CPU − run-queue wait; 0 without
the import). In a forked process the lanes have a GIL of their own; the import here runs beside them.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from typing import Callable

from eecc.exits.train_task import import_aside
from eecc.fork import parent_heap_frozen


def can_fork() -> bool:
    """Whether this process may fork a child for the pass: the platform forks (Linux, macOS) and this is no
    daemonic process (a pool's worker: those may have no children). Otherwise the caller fills the cache itself."""
    return "fork" in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon


def fill_aside(cache, splits: dict, prints: dict[str, str], tasks: dict[str, Callable[[int, int], None]],
               module: str = "eecc.train.fit") -> int | None:
    """Fill `cache` (an eecc.data.cache.FeatureCache) for every split of `splits` (name → Split, fingerprints
    `prints`) in a forked process, importing `module` here meanwhile; `tasks[name](done, total)` shows each
    split's chunks as the child reports them. Returns the child's exit code (0: every split filled).

    Nothing depends on the child finishing: chunks are marked as they are written (eecc.data.cache), so the
    caller's own `cache.fill` afterwards computes whatever a failed or killed child left, and reports the
    errors itself. A stop signal here (Ctrl-C, SIGTERM) ends the child before it is raised on.
    """
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_fill_child, args=(cache, splits, prints, send), name="eecc-features", daemon=True)
    with parent_heap_frozen():  # eecc/fork.py: the child must not destroy this process's onnxruntime sessions
        child.start()  # before the import starts: the child never holds a half-imported module
    send.close()
    import_aside(module)
    try:
        while True:
            try:
                name, done, total = recv.recv()
            except EOFError:  # the child has ended (or died): no writer is left
                break
            tasks[name](done, total)
    except BaseException:
        child.terminate()
        raise
    finally:
        child.join()
        recv.close()
    return child.exitcode


def _fill_child(cache, splits: dict, prints: dict[str, str], send) -> None:
    """The forked process: fill every split, report chunks through `send`; exit code 1 on any error (the parent
    recomputes what is missing and reports it), without a traceback of its own."""
    lock = threading.Lock()  # lanes report from their own threads

    def report(name: str) -> Callable[[int, int], None]:
        def on_chunk(done: int, total: int) -> None:
            with lock:
                send.send((name, done, total))
        return on_chunk

    try:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # a progress display may have wrapped them
        for name, split in splits.items():
            cache.fill(split, fingerprint=prints[name], on_chunk=report(name))
        send.close()
    except BaseException:  # noqa: BLE001 - the parent's own fill redoes the work and reports the error
        os._exit(1)
