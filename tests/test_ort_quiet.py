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
    noisy = ort.SessionOptions()
    noisy.log_severity_level = 2  # onnxruntime's default, unless `eecc` ran in this process (it quiets the default)
    ort.InferenceSession(model, noisy, providers=["CPUExecutionProvider"])
    assert "Removing initializer 'unused_clip_min'" in capfd.readouterr().err  # what nu9 saw, 420 times
    sess = ort.InferenceSession(model, session_options(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"x": -np.ones((1, 4), np.float32)})[0], np.zeros((1, 4)))
    assert capfd.readouterr().err == ""


def test_every_session_eecc_makes_takes_the_quiet_options():
    """A new InferenceSession without them would bring the warnings back. Files the cost model hashes
    (kernels_files: a change there means a refit) rely on the command line's default logger instead."""
    from eecc.cost.measure import kernels_files

    hashed = {p.resolve() for p in kernels_files()}
    calls = []
    for path in [*ROOT.glob("eecc/**/*.py"), *ROOT.glob("runtime/*.py"), *ROOT.glob("targets/*.py"),
                 *ROOT.glob("passes/*.py")]:
        if path.resolve() in hashed:
            continue
        text = path.read_text()
        assert "ort.SessionOptions()" not in text or path.name == "sessions.py", path
        calls += [(path.name, m.group(0)) for m in re.finditer(r"InferenceSession\([^\n]*", text)]
    assert len(calls) >= 6
    for name, call in calls:
        assert "session_options(" in call or re.search(r"\bopts\b", call), (name, call)


def test_the_command_line_quiets_onnxruntimes_default_logger(tmp_path):
    """Sessions made with default options (onnxruntime's quantiser, targets/tvm_import.py) follow the default
    logger, which `eecc` sets to ERROR: run in a fresh interpreter, the same model that warns above stays quiet."""
    import subprocess
    import sys

    (tmp_path / "m.onnx").write_bytes(_with_unused_initializer())
    code = ("import onnxruntime as ort, sys; from eecc.cli import main; main(['targets']); "
            "ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.onnx")], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "Removing initializer" not in proc.stderr, proc.stderr
    plain = subprocess.run([sys.executable, "-c", code.replace("main(['targets']); ", ""), str(tmp_path / "m.onnx")],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "Removing initializer 'unused_clip_min'" in plain.stderr
