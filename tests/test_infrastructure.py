"""The shared helpers: atomic writes, progress bars, the Pareto filter, the threshold re-search."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from eecc.bundle.writer import open_bundle
from eecc.files import replacing, umask
from eecc.progress import progress
from eecc.search.pareto import non_dominated
from eecc.search.policy import Objective, evaluate_policy, make_split, position_costs
from eecc.search.search import SearchOptions
from eecc.search.synthetic import synthetic_logits
from eecc.search.thresholds import NEVER, retune, search_thresholds


def test_replacing_writes_whole_files_or_nothing(tmp_path):
    target = tmp_path / "sub" / "a.npz"
    with replacing(target) as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == target.parent
        np.savez(tmp, x=np.arange(3))  # numpy appends nothing: the suffix is already .npz
    with np.load(target) as z:
        assert z["x"].tolist() == [0, 1, 2]
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    with np.load(target) as z:  # the old file, and no temporary file left beside it
        assert z["x"].tolist() == [0, 1, 2]
    assert [p.name for p in target.parent.iterdir()] == ["a.npz"]


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_bundle_folder_and_files_get_the_users_umask(tmp_path, mask):
    """A bundle and the files eecc writes get the modes a plain mkdir / open give under the user's umask, as any
    other tool's output (nu11: mkdtemp made every bundle 0700, unreadable to anyone else on a shared box)."""
    import os
    import stat

    old = os.umask(mask)
    try:
        assert umask() == mask
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain.txt").write_text("x")
        with open_bundle(tmp_path / "out") as staging:
            (staging / "manifest.json").write_text("{}")
        with replacing(tmp_path / "cache.npz") as tmp:
            np.savez(tmp, x=np.arange(3))
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "out") == mode(tmp_path / "plain") == 0o777 & ~mask
    assert mode(tmp_path / "cache.npz") == mode(tmp_path / "plain.txt") == 0o666 & ~mask


def test_progress_draws_on_stderr_only(capsys):
    with progress(True) as bar:
        task = bar("work", total=4)
        task(2, 4)
        task.advance(2, note="done")
    with progress(False) as bar:
        bar("silent", total=1).advance()
    out = capsys.readouterr()
    assert out.out == "" and "work" in out.err and "silent" not in out.err


def test_pareto_filter_keeps_non_dominated_points_cheapest_first():
    points = [(10, 0.5), (20, 0.7), (15, 0.4), (30, 0.7), (25, 0.9), (5, 0.1), (20, 0.7)]
    assert non_dominated(points, key=lambda p: p) == [(5, 0.1), (10, 0.5), (20, 0.7), (20, 0.7), (25, 0.9)]
    assert non_dominated([], key=lambda p: p) == []


@pytest.mark.parametrize("calibrate_on, correction", [("val", 1.0), ("train", 1.2)])
def test_retune_is_the_search_plus_the_training_split_correction(calibrate_on, correction):
    lg = synthetic_logits(k=3, n_val=600, n_test=600, seed=3)
    lg = replace(lg, train_logits=lg.val_logits, final_train_logits=lg.final_val_logits, y_train=lg.y_val)
    o = SearchOptions(calibrate_on=calibrate_on, correction=correction)
    calib, test = make_split(lg, calibrate_on), make_split(lg, "test")
    exits, costs = (0, 2), position_costs(lg, (0, 2))
    objective = Objective(lg.final_macs, calib.final_accuracy, max_accuracy_drop=0.01)
    rt = retune(calib, exits, costs, objective, o, test=test)
    plain = search_thresholds(calib, exits, costs, objective)
    want = tuple(min(t * correction, NEVER) if t < NEVER else t for t in plain.thresholds)
    assert rt.thresholds == want and rt.cost == plain.cost
    assert rt.method == plain.method + ("+correction1.2" if correction != 1.0 else "")
    for got, split in ((rt.test, test), (rt.selected, calib)):
        again = evaluate_policy(split, exits, want, costs)
        assert (got.accuracy, got.mean_macs) == (again.accuracy, again.mean_macs)
        np.testing.assert_array_equal(got.exit_index, again.exit_index)
