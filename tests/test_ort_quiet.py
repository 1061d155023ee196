"""onnxruntime's own warnings stay off stderr: nu9 saw ~420 "Removing initializer … It is not used by any node"
lines under --quiet from an int8 compile (every eecc session now takes runtime/sessions.py's options)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from eecc.runtime.sessions import session_options

ROOT = Path(__file__).resolve().parents[1]


def _with_unused_initializer() -> bytes:
    """y = Relu(x), plus an initializer no node reads: onnxruntime warns when it removes it."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [onnx.numpy_helper.from_array(np.ones(3, np.float32), "unused_clip_min")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_eecc_sessions_log_no_warnings(capfd):
    model = _with_unused_initializer()
    ort.InferenceSession(model, ort.SessionOptions(), providers=["CPUExecutionProvider"])
    assert "Removing initializer 'unused_clip_min'" in capfd.readouterr().err  # what nu9 saw, 420 times
    sess = ort.InferenceSession(model, session_options(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"x": -np.ones((1, 4), np.float32)})[0], np.zeros((1, 4)))
    assert capfd.readouterr().err == ""


def test_every_session_eecc_makes_takes_the_quiet_options():
    """A new InferenceSession without them would bring the warnings back."""
    calls = []
    for path in [*ROOT.glob("eecc/**/*.py"), *ROOT.glob("runtime/*.py"), *ROOT.glob("targets/*.py"),
                 *ROOT.glob("passes/*.py")]:
        text = path.read_text()
        assert "ort.SessionOptions()" not in text or path.name == "sessions.py", path
        calls += [(path.name, m.group(0)) for m in re.finditer(r"InferenceSession\([^\n]*", text)]
    assert len(calls) >= 7
    for name, call in calls:
        assert "session_options(" in call or re.search(r"\bopts\b", call), (name, call)
