"""eecc/fork.py: a forked child never collects the parent's garbage, so an onnxruntime session left in a reference
cycle cannot hang it (its destructor waits on condition variables whose waiters, the session's pool threads, exist
only in the parent). Each case runs in its own interpreter: on the old code the child hangs and the timeout fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRELUDE = """
import gc, time
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper
graph = helper.make_graph([helper.make_node("MatMul", ["x", "x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 256])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 256])])
gc.disable()  # the cycle below stays uncollected in the parent until the fork, as a real one may
class Holder: pass
held = Holder()
opts = ort.SessionOptions(); opts.intra_op_num_threads = 2
held.session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                    .SerializeToString(), opts, providers=["CPUExecutionProvider"])
held.session.run(None, {"x": np.ones((256, 256), np.float32)})
time.sleep(1)  # the pool threads go from spinning to waiting on their condition variables
held.cycle = held
del held
"""


def _collect(_shared, _item):
    import gc

    return gc.collect() >= 0


CASES = {
    "Forked.map (head training's workers)": PRELUDE + """
from eecc.driver.executor import Forked
from tests.test_fork import _collect
assert Forked(2).map(_collect, [0, 1]) == [True, True]
print("ok")
""",
    "fill_aside's child (the feature pass)": PRELUDE + """
import multiprocessing
from eecc.fork import parent_heap_frozen
child = multiprocessing.get_context("fork").Process(target=gc.collect)
with parent_heap_frozen():
    child.start()
child.join(30)
assert child.exitcode == 0, child.exitcode
print("ok")
""",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_forked_child_does_not_destroy_the_parents_sessions(case):
    proc = subprocess.Popen([sys.executable, "-c", CASES[case]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # the old code: a hung child; end it and its forks, then fail
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{case}: the forked child hung (pthread_cond_destroy in the parent's garbage)")
    assert proc.returncode == 0 and out.strip().endswith("ok"), err[-2000:]
