"""`--calibrate-on train` says once, in one line, that training-set thresholds are optimistic (nu8: the note came
twice, once as a raw UserWarning with its source line on stderr)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eecc.examples import datasets

CNN = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"
ROOT = Path(__file__).resolve().parents[1]


def test_training_set_calibration_note_is_one_line_once(tmp_path):
    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    datasets.save_npz(datasets.load("digits"), tmp_path / "d.npz")
    # a real interpreter: pytest records warnings instead of printing them, which would hide the raw one
    proc = subprocess.run([sys.executable, "-m", "eecc", "search", str(CNN), "--target", "psoc6", "--data",
                           str(tmp_path / "d.npz"), "--calibrate-on", "train", "--heads", "blueprint", "--quiet", "--cache-dir",
                           str(tmp_path / "cache")], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out, err = proc.stdout, proc.stderr
    lines = [line for line in (out + err).splitlines() if "optimistic" in line]
    assert len(lines) == 1 and "UserWarning" not in out + err and "search.py" not in out + err, out + err
    assert lines[0].strip().startswith("warning: thresholds calibrated on the training set are optimistic")
