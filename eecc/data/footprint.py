"""What the feature pass costs the machine: CPU seconds (the forked head trainers and the feature pass included),
peak resident memory, and the plain model's own pass over the same data as the yardstick (eecc/exits/run.py's
timings, bench/exits.py)."""

from __future__ import annotations

import resource
import time

import onnx_graphsurgeon as gs

from eecc.data.cache import session


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) and of its children that have ended and been
    waited for (the forked head trainers): on a shared machine a step's CPU time means more than its wall time."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size, MB to 0.1, of this process or its largest child that has ended (the forked feature
    pass, a head trainer): Linux's ru_maxrss, in KiB."""
    kib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return round(kib / 1024, 1)


def reference_pass(graph: gs.Graph, splits, chunk_rows: int, threads, bar) -> tuple[float, float]:
    """Wall and CPU seconds (`cpu_seconds`) of the plain model over train + val (`splits`:
    eecc.data.splits.Splits), in chunks of `chunk_rows`, with the feature pass's runtime settings; `bar` is an
    eecc.progress bar factory."""
    sess, out = session(graph, threads)
    name = sess.get_inputs()[0].name
    task = bar("reference pass")
    total = sum(-(-len(s) // chunk_rows) for s in (splits.train, splits.val))
    done, t0, cpu0 = 0, time.perf_counter(), cpu_seconds()
    for split in (splits.train, splits.val):
        for _, x in split.chunks(chunk_rows):
            sess.run([out], {name: x})
            done += 1
            task(done, total)
    return time.perf_counter() - t0, cpu_seconds() - cpu0
