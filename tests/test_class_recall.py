"""Per-class recall beside accuracy on a skewed test split (nu14 F5): a rare-class detector's cascade kept the
original's accuracy (98.00 % vs 98.00 %) while the positives' recall fell 0.866 -> 0.814, and nothing printed it.
Golden figures on hand-made predictions, then a compiled detector whose record matches a recount from its files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from eecc.bundle.verify import per_class
from eecc.cli import main
from eecc.examples import datasets
from eecc.report.classes import recall_line, recall_warning
from eecc.runtime.cascade import Cascade
from test_finetune_ops import CNN, binary_detector


def _detector_case():
    """1000 samples, 97 positives (9.7 %, nu14's split): the original finds 84 of them, the cascade 79, and both
    raises 3 false alarms where the cascade raises none: accuracy 98.2 % vs 98.4 %, the positives 81.4 % vs 86.6 %."""
    y = np.r_[np.zeros(903, np.int64), np.ones(97, np.int64)]
    original = y.copy()
    original[903 + 84:] = 0          # 13 positives missed
    original[:3] = 1                 # 3 false alarms
    cascade = y.copy()
    cascade[903 + 79:] = 0           # 18 positives missed
    return y, cascade, original


def test_golden_recall_and_balanced_accuracy():
    y, cascade, original = _detector_case()
    assert (cascade == y).mean() == pytest.approx(0.982) and (original == y).mean() == pytest.approx(0.984)
    pc = per_class(cascade, original, y)
    assert pc["skewed"] and pc["classes"] == [0, 1] and pc["samples"] == [903, 97]
    assert pc["recall"] == pytest.approx([1.0, 79 / 97]) and pc["original_recall"] == pytest.approx([900 / 903, 84 / 97])
    assert pc["balanced_accuracy"] == pytest.approx((1 + 79 / 97) / 2)
    assert pc["original_balanced_accuracy"] == pytest.approx((900 / 903 + 84 / 97) / 2)
    line = recall_line(pc)
    assert line == ("recall per class (the test split is 90 % class 0): class 0 100.0 % (original 99.7 %, +0.3 pt), "
                    "class 1 81.4 % (original 86.6 %, -5.2 pt); balanced accuracy 90.72 % (original 93.13 %, -2.41 pt)")
    assert recall_warning(pc, 0.01).startswith("class 1's recall falls 5.2 pt (97 test samples), more than the 1.00 pt")
    assert recall_warning(pc, 0.06) is None


def test_a_balanced_split_prints_nothing_and_many_classes_print_the_worst():
    y = np.repeat(np.arange(4), 25)
    assert recall_line(per_class(y, y, y)) is None and recall_warning(per_class(y, y, y), 0.01) is None
    y = np.r_[np.zeros(80, np.int64), np.repeat(np.arange(1, 5), 5)]  # 80 % class 0 of 5: skewed
    pred = y.copy()
    pred[-2:] = 0                                                     # class 4 loses 2 of its 5
    line = recall_line(per_class(pred, y, y))
    assert line.startswith("recall of the class that loses most (the test split is 80 % class 0): class 4 60.0 % "
                           "(original 100.0 %, -40.0 pt)"), line


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """The digits CNN as a "0 vs rest" detector (about 10 % positives), compiled with the CLI; its summary."""
    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    d = tmp_path_factory.mktemp("detector")
    onnx.save(binary_detector(onnx.load(str(CNN))), str(d / "zero.onnx"))
    data = {k: ((v == 0).astype(np.int64) if k.startswith("y_") else v) for k, v in datasets.load("digits").items()}
    np.savez(d / "zero.npz", **data)
    return d, data


def test_compile_records_and_prints_the_recall_the_bundle_gives(detector, capsys):
    d, data = detector
    capsys.readouterr()
    assert main(["compile", str(d / "zero.onnx"), "--data", str(d / "zero.npz"), "--search", "--no-codegen",
                 "--cache-dir", str(d / "cache"), "-o", str(d / "b")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    measured = json.loads((d / "b" / "manifest.json").read_text())["placement"]["metrics"]["measured"]
    x, y = data["x_test"], data["y_test"]
    pred = Cascade(d / "b", optimize=False).run(x).predictions
    sess = ort.InferenceSession(str(d / "zero.onnx"), providers=["CPUExecutionProvider"])
    original = sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(1)
    pc = measured["per_class"]
    assert pc["skewed"] and pc["samples"] == np.bincount(y).tolist()
    assert pc["recall"] == pytest.approx([(pred[y == c] == c).mean() for c in (0, 1)])
    assert pc["original_recall"] == pytest.approx([(original[y == c] == c).mean() for c in (0, 1)])
    assert recall_line(pc) in out  # in the summary, beside the accuracy
    report = (d / "b" / "report.html").read_text()
    assert "per-class recall" in report and f"balanced accuracy {100 * pc['balanced_accuracy']:.2f} %" in report
