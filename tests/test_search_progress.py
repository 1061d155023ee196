"""The placement search reports how far it is (nu9: `--exits-per-processor 2` on a 10-candidate model scored 2,865
placements for minutes with nothing on stderr), and its result does not depend on how it was cut into steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eecc.cli import main
from eecc.examples import datasets
from eecc.search.search import STEPS, SearchOptions, search
from eecc.search.synthetic import synthetic_logits

CNN = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"


def test_search_steps_count_every_placement_once_and_change_nothing():
    lg = synthetic_logits(k=6, n_val=600, n_test=600, seed=3)
    options = SearchOptions(max_exits=3, intervals=False)
    steps = []
    res = search(lg, options=options, on_step=lambda done, total: steps.append((done, total)))
    total = len(res.placements)
    assert total == 6 + 15 + 20 and steps[-1] == (total, total) and len(steps) == STEPS
    assert all(b[0] > a[0] for a, b in zip(steps, steps[1:])) and {t for _, t in steps} == {total}
    plain = search(lg, options=options)
    assert [p.thresholds for p in plain.placements] == [p.thresholds for p in res.placements]
    assert [p.extra["ece"] for p in plain.placements] == [p.extra["ece"] for p in res.placements]
    assert np.isclose(plain.best.val_cost, res.best.val_cost) and plain.chosen == res.chosen


def test_search_cli_shows_the_placement_search_progress(tmp_path, capsys):
    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    datasets.save_npz(datasets.load("digits"), tmp_path / "d.npz")
    capsys.readouterr()
    code = main(["search", str(CNN), "--target", "psoc6", "--data", str(tmp_path / "d.npz"), "--heads", "blueprint",
                 "--exits-per-processor", "2", "--cache-dir", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert code == 0, err
    line = next((x for x in err.splitlines() if "search placements" in x), None)
    assert line is not None, err
    done, total = line.split("search placements")[1].split()[1].split("/")
    assert done == total and int(total) > 20


@pytest.fixture(scope="module")
def digits(digits_folder):
    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    return digits_folder


def _search(d: Path, capsys, *extra: str):
    capsys.readouterr()
    code = main(["search", str(CNN), "--target", "psoc6", "--data", str(d / "d.npz"), "--json", "--quiet",
                 "--cache-dir", str(d / "cache"), *extra])
    return code, *capsys.readouterr()


def test_too_many_placements_are_refused_before_training_and_the_advised_k_works(digits, capsys, monkeypatch):
    """At MAX_SCORED = 100 (5,000 in use; the fixture cnn has 6 candidates: K = 2 on psoc6 gives 135 placements,
    K = 1 gives 35) the search is refused in one line before any head is trained, naming the K that fits."""
    import eecc.search.checks as checks
    import eecc.search.run as run

    monkeypatch.setattr(checks, "MAX_SCORED", 100)  # the refusal (checks.check_search_size)
    monkeypatch.setattr(run, "MAX_SCORED", 100)  # the head combinations (search_model)
    code, out, err = _search(digits, capsys, "--exits-per-processor", "2", "--heads", "blueprint")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "--exits-per-processor 2 gives 135 placements" in err and "use --exits-per-processor 1 (35" in err, err
    assert not (digits / "cache").exists()  # nothing was trained
    code, out, err = _search(digits, capsys, "--exits-per-processor", "1", "--heads", "blueprint")
    assert code == 0, err


def test_head_designs_narrow_to_stay_within_the_bound_and_say_so(digits, capsys, monkeypatch):
    import json

    import eecc.search.run as run

    code, out, _ = _search(digits, capsys, "--exits-per-processor", "1")
    every = json.loads(out)
    assert code == 0 and len(every["placements"]) + len(every["pruned"]) > 60
    monkeypatch.setattr(run, "MAX_SCORED", 60)
    code, out, err = _search(digits, capsys, "--exits-per-processor", "1")
    bounded = json.loads(out)
    assert code == 0 and len(bounded["placements"]) + len(bounded["pruned"]) <= 60, err
    assert any("head designs" in w and "--heads blueprint" in w for w in bounded["warnings"]), bounded["warnings"]
