"""Stop signals (Ctrl-C's SIGINT, SIGTERM) of one command, remembered so that no library can turn them into errors.

A handler raises KeyboardInterrupt (SIGINT) or Terminated (SIGTERM) in the main thread, so every `finally` and
staging folder cleans up. A library that calls Python back from C++ can swallow that exception: TVM's FFI turns
a KeyboardInterrupt raised inside a pattern-rewrite callback into a bare `RuntimeError` (nu8: Ctrl-C during
codegen came out as "TVM failed", exit code 2). The handlers therefore record the signal; `reraise()` raises
it again where such errors are caught, and the CLI checks `arrived()` before it reports any error.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_arrived: list[int] = []  # signal numbers received by this process during the current command


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every `finally` and staging folder cleans up as on Ctrl-C
    (Python's default SIGTERM action ends the process without unwinding: it left `.OUT.*.partial/` behind)."""


def install() -> dict[int, object]:
    """Recording handlers for SIGTERM and, unless it is ignored (a background job), SIGINT; returns the previous
    handlers for `restore`. Main thread only (signal.signal's rule)."""
    _arrived.clear()
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _handler(os.getpid()))}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _handler(os.getpid()))
    return previous


def restore(previous: dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def arrived() -> int | None:
    """The first stop signal this command received, or None."""
    return _arrived[0] if _arrived else None


def reraise() -> None:
    """Raise the stop signal's exception again if one arrived (call it where a library's errors are caught)."""
    signum = arrived()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    if signum == signal.SIGTERM:
        raise Terminated


@contextmanager
def held() -> Iterator[None]:
    """SIGINT and SIGTERM wait while the block runs and are delivered, to the handlers they had, when it ends:
    a folder created or moved inside is created or moved whole, and the signal's exception comes after, where
    the caller's cleanup sees it (open the caller's `try` before the block). Python-level, because the kernel
    hands a process's signal to any thread that does not block it (onnxruntime's, torch's): a thread's
    pthread_sigmask would not hold it. Outside the main thread (where handlers cannot be set) nothing waits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in (signal.SIGINT,
                                                                                          signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(caught):
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)  # the CLI's: records it and raises KeyboardInterrupt / Terminated
            elif handler in (signal.SIG_DFL, None):
                os.kill(os.getpid(), signum)  # the default action, now that it is back


def _handler(pid: int):
    """Raises KeyboardInterrupt / Terminated in process `pid`; a worker forked from it that inherited the handler
    acts as it would without it: KeyboardInterrupt on SIGINT, death by the signal on SIGTERM (what a pool
    stopping it expects)."""

    def handler(signum, frame):
        if os.getpid() != pid:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _arrived.append(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated

    return handler
