"""onnxruntime session options for every session eecc opens, with onnxruntime's own warnings off: an int8
stage's QDQ graph makes it log one "Removing initializer '…'. It is not used by any node" line per folded
constant when the session is made (nu9: ~420 lines on stderr under --quiet for one int8 compile)."""

from __future__ import annotations

import onnxruntime as ort

ERROR = 3  # onnxruntime's log severities: 0 verbose, 1 info, 2 warning (its default), 3 error, 4 fatal


def session_options(threads: int | None = None, *, optimize: bool = True) -> ort.SessionOptions:
    """`threads`: intra-op threads (None: onnxruntime's default); `optimize` False: ORT_DISABLE_ALL (the
    references tests and checks compare with, where the runtime's fusions must not hide a bug)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = ERROR
    if threads:
        opts.intra_op_num_threads = threads
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return opts


def quiet_default_logger() -> None:
    """onnxruntime's default logger at ERROR too: the sessions of its quantiser and of code whose text is hashed
    for the cost model (targets/tvm_import.py: a change there means a refit) take their severity from it. The
    command line sets it once; a program using eecc as a library keeps its own setting."""
    ort.set_default_logger_severity(ERROR)
