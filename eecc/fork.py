"""Forking a process that holds onnxruntime sessions: the child must never run the parent's garbage collection.

A session whose intra-op threads have run keeps condition variables those threads wait on. A forked child has
none of the threads but a copy of the variables; when its garbage collector frees a session left in a reference
cycle in the parent (uncollected at the fork), onnxruntime's destructor calls pthread_cond_destroy, which waits
for the waiters that only the parent has: the child hangs for ever, and its parent with it (seen 2026-12-01: a
`bench/energy.py` run's forked feature pass, 0 CPU-s in 30 min, stack pthread_cond_destroy under
gc_collect_main; nu11 F11's 30-minute hang was likely the same). gc.freeze() right before the fork moves every
object the parent tracks to a permanent generation that no collection visits, in the child too (Python's gc
documentation recommends it before fork() for copy-on-write); the parent unfreezes after the fork.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def parent_heap_frozen() -> Iterator[None]:
    """Fork inside this block (Process.start(), a fork-context pool's first submit): the children never collect
    what the parent held then."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
