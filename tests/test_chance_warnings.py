"""A model or a chosen exit no better than chance on the validation split is said in a warning (a new user's finding:
a digits CNN given labels that do not match its outputs built a bundle whose exits "beat" a 0 % original, silently).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from eecc.cli import main
from eecc.examples import datasets
from eecc.search.chance import below_chance
from eecc.search.synthetic import synthetic_logits

CNN = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"


def test_below_chance_names_the_model_and_each_chosen_exit_at_or_below_chance():
    lg = synthetic_logits(k=3, n_val=600, n_test=600, seed=3)
    assert below_chance(lg, lg.tensors) == []  # every row beats always answering the commonest class
    y = lg.y_val
    chance = np.bincount(y).max() / len(y)
    wrong = np.zeros_like(lg.final_val_logits)
    wrong[np.arange(len(y)), (y + 1) % wrong.shape[1]] = 1.0  # always a wrong class: 0 %
    val = lg.val_logits.copy()
    val[1] = wrong
    broken = replace(lg, final_val_logits=wrong, val_logits=val)
    notes = below_chance(broken, [lg.tensors[0], lg.tensors[1]], "int8")
    assert len(notes) == 2, notes
    assert notes[0].startswith("the model itself (int8) is no better than chance") and "0.0 %" in notes[0]
    assert f"{100 * chance:.1f} %" in notes[0]
    assert notes[1].startswith(f"the chosen exit at '{lg.tensors[1]}' (int8) is no better than chance")
    assert below_chance(broken, [lg.tensors[0]])[1:] == []  # exit 1 not chosen: no word on it


def test_compile_with_labels_that_do_not_match_the_model_warns(tmp_path, capsys):
    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    data = {k: (v + 1) % 10 if k.startswith("y_") else v for k, v in datasets.load("digits").items()}
    np.savez(tmp_path / "shifted.npz", **data)
    capsys.readouterr()
    code = main(["compile", str(CNN), "--data", str(tmp_path / "shifted.npz"), "--no-codegen", "--no-report",
                 "--quiet", "--objective", "macs", "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    assert code == 0, err
    warnings = json.loads((tmp_path / "o" / "manifest.json").read_text())["search"]["warnings"]
    (note,) = [w for w in warnings if "no better than chance" in w]
    assert note.startswith("the model itself is no better than chance on the validation split (0.0 %")
    assert "warning: the model itself is no better than chance" in out
