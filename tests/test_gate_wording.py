"""Every text that states an exit gate states what the gate computes (nu8: `--metric entropy` printed "exit if
entropy ≥ 0.544", but the gate compares 1 - H/log C, so a sample exits when its entropy is LOW)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eecc.cli import main
from eecc.examples import datasets
from eecc.search.confidence import confidence, exit_rule, threshold_text

CNN = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"


def test_entropy_rule_names_the_normalised_entropy_it_bounds():
    assert exit_rule("entropy", 0.544) == "exit if normalised entropy H/log C ≤ 0.456 (1 - H/log C ≥ 0.544)"
    assert exit_rule("max_softmax", 0.58) == "exit if max_softmax ≥ 0.580"
    # the rule says what the gate does: confidence ≥ t exactly when H/log C ≤ 1 - t
    logits = np.random.default_rng(0).normal(size=(2000, 10)) * 3
    conf = confidence(logits, "entropy")
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    h = -(p * np.log(p)).sum(1) / np.log(10)
    assert ((conf >= 0.544) == (h <= 1 - 0.544 + 1e-12)).all()


def test_a_threshold_near_0_or_1_is_printed_apart_from_them():
    """nu14 F12: a NACHOS threshold of 0.000298 was printed "exit if learned confidence ≥ 0.000" (an always-exit gate
    to the reader; 5 of 2000 test samples stayed). Every printed threshold reads back within a few percent of its
    distance to 0 or 1 (3 decimals where those tell it from them), never as 0 or 1 itself."""
    assert exit_rule("learned", 0.000298) == "exit if learned confidence ≥ 0.000298"
    assert exit_rule("max_softmax", 0.99996) == "exit if max_softmax ≥ 0.99996"
    assert exit_rule("entropy", 0.544) == "exit if normalised entropy H/log C ≤ 0.456 (1 - H/log C ≥ 0.544)"
    assert [threshold_text(t) for t in (0.0, 0.58, 1.0, 2.0)] == ["0.000", "0.580", "1.000", "2.000"]
    for t in (2e-9, 3.1e-6, 0.000298, 0.00049, 0.0123, 0.58, 0.9987, 0.99951, 0.99996, 1 - 3e-8):
        back = float(threshold_text(t))
        assert 0 < back < 1, (t, threshold_text(t))
        gap, printed_gap = min(t, 1 - t), min(back, 1 - back)
        # 3 decimals (±0.0005) where they tell it from 0 and 1, else within 5 % of its distance to them
        assert abs(printed_gap - gap) <= (5e-4 + 1e-12 if gap >= 5e-4 else 0.05 * gap), (t, threshold_text(t))


def test_entropy_gates_read_right_in_summary_manifest_inspect_and_report(tmp_path, capsys):
    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    datasets.save_npz(datasets.load("digits"), tmp_path / "d.npz")
    out = tmp_path / "out"
    assert main(["compile", str(CNN), "--data", str(tmp_path / "d.npz"), "--metric", "entropy", "--search", "--no-codegen",
                 "-o", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    summary = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    t = manifest["stages"][0]["threshold"]
    rule = f"exit if normalised entropy H/log C ≤ {1 - t:.3f} (1 - H/log C ≥ {t:.3f})"
    assert manifest["stages"][0]["gate"] == rule and "gate" not in manifest["stages"][-1]
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    report = (out / "report.html").read_text()
    for text in (summary, shown, report):
        assert rule in " ".join(text.split()), text[:3000]
        assert "entropy ≥" not in text
    assert "a sample exits when its entropy is low" in " ".join(report.split())
