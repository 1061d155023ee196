"""Per-class recall beside accuracy on a skewed test split (nu14 F5): a rare-class detector's cascade kept the
original's accuracy (98.00 % vs 98.00 %) while the positives' recall fell 0.866 -> 0.814, and nothing printed it.
Golden figures on hand-made predictions, then a compiled detector whose record matches a recount from its files,
and `eecc run` on it: the original's figures beside the cascade's on the compile's test split only."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from eecc.bundle.verify import data_digest, per_class
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


@pytest.fixture(scope="module")
def bundle(detector):
    """The detector compiled by the CLI (--search, no codegen): (folder, data, compile's stdout one-spaced)."""
    d, data = detector
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["compile", str(d / "zero.onnx"), "--data", str(d / "zero.npz"), "--search", "--no-codegen",
                     "--cache-dir", str(d / "cache"), "-o", str(d / "b")]) == 0
    return d, data, " ".join(out.getvalue().split())


def test_compile_records_and_prints_the_recall_the_bundle_gives(bundle):
    d, data, out = bundle
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
    assert measured["test_digest"] == data_digest(x, y)


def _run(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(["run", *map(str, argv)]) == 0
    return capsys.readouterr().out


def test_run_on_the_compile_test_split_prints_the_originals_recall_beside(bundle, capsys):
    """nu14 F5's remainder: `eecc run` printed the accuracy alone. On the compile's test split it now prints the
    line compile printed: the cascade's recall per class recounted, the original's from the manifest."""
    d, data, compiled = bundle
    pc = json.loads((d / "b" / "manifest.json").read_text())["placement"]["metrics"]["measured"]["per_class"]
    s = json.loads(_run(capsys, d / "b", "--data", d / "zero.npz", "--json", "--quiet"))
    assert s["compile_test_split"] is True
    y = data["y_test"]
    pred = Cascade(d / "b", optimize=False).run(data["x_test"]).predictions
    assert s["per_class"]["recall"] == pytest.approx([(pred[y == c] == c).mean() for c in (0, 1)])
    assert s["per_class"]["original_recall"] == pc["original_recall"]
    assert s["per_class"]["balanced_accuracy"] == pytest.approx(pc["balanced_accuracy"])
    out = " ".join(_run(capsys, d / "b", "--data", d / "zero.npz", "--quiet").split())
    line = recall_line(pc)
    assert line.startswith("recall per class (the test split is 9") and line in out and line in compiled


def test_run_on_other_data_prints_the_cascades_recall_alone_and_says_why(bundle, capsys, tmp_path):
    d, data, _ = bundle
    s = json.loads(_run(capsys, d / "b", "--data", d / "zero.npz", "--split", "val", "--json", "--quiet"))
    x, y = data["x_val"], data["y_val"]
    pred = Cascade(d / "b", optimize=False).run(x).predictions
    assert s["compile_test_split"] is False and "original_recall" not in s["per_class"] and s["per_class"]["skewed"]
    assert s["per_class"]["recall"] == pytest.approx([(pred[y == c] == c).mean() for c in (0, 1)])
    out = " ".join(_run(capsys, d / "b", "--data", d / "zero.npz", "--split", "val", "--quiet").split())
    line = recall_line(s["per_class"], "val")
    assert line.startswith("recall per class (the val split is 9") and "original" not in line and line in out
    assert "this data is not that split: run the original model on it to compare" in out
    old = tmp_path / "old"  # a bundle compiled before the digest: eecc cannot tell, and says so
    shutil.copytree(d / "b", old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["placement"]["metrics"]["measured"]["test_digest"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    out = " ".join(_run(capsys, old, "--data", d / "zero.npz", "--quiet").split())
    assert "records no digest of that split (compiled by an older eecc)" in out and "(original" not in out


def test_the_digest_sees_scale_values_and_labels():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (50, 1, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 2, 50)
    scaled = codes.astype(np.float32) * np.float32(1 / 255)
    assert data_digest(codes, y, 1 / 255) == data_digest(scaled, y)
    assert data_digest(codes, y, 2 / 255) != data_digest(scaled, y)
    flipped = y.copy()
    flipped[7] ^= 1
    assert data_digest(scaled, flipped) != data_digest(scaled, y)
    assert data_digest(scaled[:-1], y[:-1]) != data_digest(scaled, y)
