"""Data in: validation errors, stratified hold-out, memory-mapped .npz members, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from eecc.cli import main
from eecc.data.splits import load_npz, make_splits, stratified_holdout
from eecc.errors import EeccError

RNG = np.random.default_rng(0)
SHAPE = (1, 4, 4)


def _xy(n=100, classes=3, dtype=np.float32):
    x = RNG.random((n, *SHAPE)).astype(np.float32)
    if dtype == np.uint8:
        x = (x * 255).astype(np.uint8)
    return x, np.arange(n) % classes


def test_stratified_holdout_keeps_class_shares():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    tr, va = stratified_holdout(y, 0.2, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 100
    assert np.bincount(y[va]).tolist() == [10, 6, 4]
    assert np.array_equal(va, stratified_holdout(y, 0.2, seed=0)[1])


def test_make_splits_without_val_holds_out_20_percent():
    x, y = _xy(120)
    s = make_splits(x, y, input_shape=SHAPE, num_classes=3)
    assert len(s.train) == 96 and len(s.val) == 24 and s.test is None
    np.testing.assert_array_equal(s.val.rows(0, 24), x[s.val.index])
    np.testing.assert_array_equal(s.val.y, y[s.val.index])


def test_uint8_with_scale_and_chunks():
    x, y = _xy(10, dtype=np.uint8)
    s = make_splits(x, y, x, y, input_shape=SHAPE, num_classes=3, scale=1 / 255)
    got = np.concatenate([c for _, c in s.train.chunks(3)])
    np.testing.assert_allclose(got, x.astype(np.float32) / 255, rtol=1e-6)
    assert got.dtype == np.float32


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(x_train=d["x_train"][:, :, :3]), "samples shaped \\[1, 3, 4\\] but the model wants"),
    (lambda d: d.update(x_train=d["x_train"].astype(np.int64)), "dtype int64; store float32"),
    (lambda d: d.update(x_train=np.full(d["x_train"].shape, 1e300)), "NaN or infinite values \\(first at sample 0\\)"),
    (lambda d: d["x_train"].__setitem__((5, 0, 0, 0), np.nan), "NaN or infinite values \\(first at sample 5\\)"),
    (lambda d: d["y_train"].__setitem__(3, 7), "label 7 outside the model's 3 classes"),
    (lambda d: d.update(y_train=d["y_train"].astype(np.float32)),
     "labels must be integers \\(class indices\\): they are whole numbers: store y_train.astype\\(np.int64\\)"),
    (lambda d: d.update(y_train=d["y_train"] + 0.5),
     "labels must be integers \\(class indices\\): they are not whole numbers \\(sample 0: 0.5\\), so not class "
     "indices .*: store each sample's class index 0..K-1 as int64 in y_train$"),
    (lambda d: d.update(x_val=d["x_val"][:0], y_val=d["y_val"][:0]), "x_val is empty"),
    (lambda d: d.update(x_train=(d["x_train"] * 255).astype(np.uint8), x_val=(d["x_val"] * 255).astype(np.uint8)),
     "is uint8; pass --scale"),
    (lambda d: d.update(y_train=d["y_train"][:-1]), "y_train has shape \\[99\\], want \\[100\\]"),
    (lambda d: d.update(y_train=np.eye(3, dtype=np.float32)[d["y_train"]]), "for one-hot rows store y_train.argmax\\(1\\)"),
    (lambda d: d.update(y_train=d["y_train"][:, None]),
     "y_train has shape \\[100, 1\\], want \\[100\\] .*; for a column of labels store y_train.reshape\\(-1\\)"),
    (lambda d: d.pop("y_val"), "x_val and y_val must be given together"),
    (lambda d: d.update(y_train=np.full_like(d["y_train"], 2)), "y_train holds only class \\[2\\] of the model's 3"),
])
def test_bad_data_is_a_one_line_error(mutate, message):
    x, y = _xy(100)
    data = {"x_train": x, "y_train": y, "x_val": x[:10].copy(), "y_val": y[:10].copy()}
    mutate(data)
    with pytest.raises(EeccError, match=message) as info:
        make_splits(**data, input_shape=SHAPE, num_classes=3)
    assert "\n" not in str(info.value)


def test_scale_on_float_data_is_refused_and_the_advice_works():
    """--scale is for uint8 codes; on float32 it silently rescaled (nu8: 86.1 -> 78.0 % with --scale 0.5)."""
    x, y = _xy(100)
    with pytest.raises(EeccError, match="applies to uint8 data only; drop --scale") as info:
        make_splits(x, y, x[:10], y[:10], input_shape=SHAPE, num_classes=3, scale=0.5)
    assert "\n" not in str(info.value)
    s = make_splits(x, y, x[:10], y[:10], input_shape=SHAPE, num_classes=3)  # the advice: drop --scale
    np.testing.assert_array_equal(s.train.x, x)


@pytest.mark.parametrize("scale", [None, 1 / 255])
def test_uint8_and_float_splits_are_one_message_with_or_without_scale(scale):
    """nu12 F4: uint8 x_train with float32 x_val/x_test: "pass --scale", then with --scale "drop --scale", a circle."""
    x, y = _xy(100)
    codes = np.clip(x * 40 + 128, 0, 255).astype(np.uint8)
    with pytest.raises(EeccError, match=r"x_train is uint8 but x_val, x_test are float32: store every split in "
                                        r"one dtype") as info:
        make_splits(codes, y, x[:10], y[:10], x[:10], y[:10], input_shape=SHAPE, num_classes=3, scale=scale)
    assert "\n" not in str(info.value)
    # the advice, followed both ways: every split float32 (no --scale), or every split uint8 codes with --scale
    s = make_splits(codes.astype(np.float32), y, x[:10], y[:10], x[:10], y[:10], input_shape=SHAPE, num_classes=3)
    assert s.train.x.dtype == np.float32 and len(s.test) == 10
    s = make_splits(codes, y, codes[:10], y[:10], codes[:10], y[:10], input_shape=SHAPE, num_classes=3, scale=scale
                    or 1 / 255)
    np.testing.assert_allclose(s.val.rows(0, 10), codes[:10] / 255, rtol=1e-6)


def test_a_class_missing_from_the_training_split_is_warned_about():
    """nu12 F11: y_train without class 4 of 5 built without a word; the exit heads never predicted class 4."""
    import warnings

    from eecc.errors import EeccWarning

    x, y = _xy(100)
    keep = y != 2
    with pytest.warns(EeccWarning, match=r"y_train has no sample of class 2 of the model's 3: exit heads cannot "
                                         r"learn to predict it .*give training samples of every class"):
        make_splits(x[keep], y[keep], x[:10], y[:10], input_shape=SHAPE, num_classes=3)
    with pytest.warns(EeccWarning, match=r"no sample of classes 2, 3 of the model's 4: .* predict them"):
        make_splits(x[keep], y[keep], x[:10], y[:10], input_shape=SHAPE, num_classes=4)
    with warnings.catch_warnings():  # every class present (in y_train; y_val may lack one): no warning
        warnings.simplefilter("error")
        make_splits(x, y, x[keep][:10], y[keep][:10], input_shape=SHAPE, num_classes=3)


def test_float64_data_is_read_as_float32_with_a_one_line_warning(tmp_path, capsys):
    """numpy's default float (sklearn, pandas) is float64; the model computes in float32, so eecc converts."""
    from pathlib import Path

    from eecc.errors import EeccWarning
    from eecc.examples import datasets

    x, y = _xy(100)
    with pytest.warns(EeccWarning, match=r"x_train \(float64\) read as float32"):
        s = make_splits(x.astype(np.float64), y, input_shape=SHAPE, num_classes=3)
    np.testing.assert_array_equal(s.train.rows(0, len(s.train)), x[s.train.index])
    digits = datasets.load("digits")
    np.savez(tmp_path / "d.npz", **{k: v.astype(np.float64) if k.startswith("x_") else v for k, v in digits.items()})
    model = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"
    capsys.readouterr()
    assert main(["exits", str(model), "--data", str(tmp_path / "d.npz"), "--heads", "blueprint", "--epochs", "1",
                 "--quiet", "--json", "--cache-dir", str(tmp_path / "cache")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("eecc exits: warning: ")  # one line for the three splits
    assert ("x_train (float64), x_val (float64), x_test (float64) read as float32, the type eecc analyses the model "
            "in and writes its stages in") in err[0]


def test_npz_members_are_memory_mapped_and_fingerprints_match(tmp_path):
    x, y = _xy(64)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    np.savez_compressed(tmp_path / "c.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    mapped = load_npz(tmp_path / "d.npz", input_shape=SHAPE, num_classes=3)
    packed = load_npz(tmp_path / "c.npz", input_shape=SHAPE, num_classes=3)
    direct = make_splits(x, y, x_test=x[:8], y_test=y[:8], input_shape=SHAPE, num_classes=3)
    assert isinstance(mapped.train.x, np.memmap) and not isinstance(packed.train.x, np.memmap)
    for s in (mapped, packed):
        np.testing.assert_array_equal(s.train.rows(0, len(s.train)), direct.train.rows(0, len(direct.train)))
        assert s.train.fingerprint() == direct.train.fingerprint() and s.test.fingerprint() == direct.test.fingerprint()
    shifted = make_splits(x + 1, y, x_test=x[:8], y_test=y[:8], input_shape=SHAPE, num_classes=3)
    assert shifted.train.fingerprint() != direct.train.fingerprint()


def test_fingerprints_see_every_block_and_its_place():
    """Blocks of 4096 rows are hashed on their own (on all cores) and their digests in order: a change in the last
    block, or two blocks swapped, changes the fingerprint; the same rows give the same one."""
    x, y = _xy(9000)
    prints = [make_splits(v, y, x_test=x[:8], y_test=y[:8], input_shape=SHAPE, num_classes=3).train.fingerprint()
              for v in (x, x.copy(), np.concatenate([x[:8999], x[8999:] + 1]),
                        np.concatenate([x[4096:8192], x[:4096], x[8192:]]))]
    assert prints[0] == prints[1] and len(set(prints)) == 3


def test_npz_errors(tmp_path):
    x, y = _xy(20)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_extra=x)
    with pytest.raises(EeccError, match="unexpected arrays \\['x_extra'\\]"):
        load_npz(tmp_path / "d.npz", input_shape=SHAPE, num_classes=3)
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(EeccError, match="not a readable .npz"):
        load_npz(tmp_path / "bad.npz", input_shape=SHAPE, num_classes=3)


def test_cli_exits_bad_data_exits_2(tmp_path, capsys):
    from golden import parse
    from eecc.model import ir
    from test_heads import SMALL

    model = ir.save(parse(SMALL), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x_train=RNG.random((10, 1, 8, 8)).astype(np.float32), y_train=np.zeros(10, int))
    assert main(["exits", str(model), "--data", str(tmp_path / "d.npz"), "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "samples shaped [1, 8, 8] but the model wants [1, 16, 16]" in err


def test_one_normaliser_rejects_unknown_keys_in_one_line(tmp_path):
    """A dict with a misspelt key is a one-line user error from every entry point, not a TypeError."""
    from pathlib import Path

    from eecc.data.splits import normalise
    from eecc.driver.compile import CompileOptions, compile_model

    x, y = _xy(20)
    data = {"x_train": x, "y_train": y, "x_tset": x}
    with pytest.raises(EeccError) as exc:
        normalise(data, input_shape=SHAPE, num_classes=3)
    assert "x_tset" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(EeccError, match="not list"):
        normalise([x, y], input_shape=SHAPE, num_classes=3)
    cnn = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"
    with pytest.raises(EeccError, match=r"unexpected arrays \['x_tset'\]"):
        compile_model(cnn, {"x_train": x, "y_train": y, "x_tset": x},
                      CompileOptions(target="psoc6", out=tmp_path / "out", codegen=False, progress=False))
    assert not (tmp_path / "out").exists()


def test_column_labels_advice_works():
    """nu12: y of shape [N, 1] got no advice (the one-hot case did); y.reshape(-1), as advised, gives the labels."""
    x, y = _xy(100)
    with pytest.raises(EeccError, match=r"store y_train.reshape\(-1\)"):
        make_splits(x, y[:, None], x[:10], y[:10], input_shape=SHAPE, num_classes=3)
    s = make_splits(x, y[:, None].reshape(-1), x[:10], y[:10], input_shape=SHAPE, num_classes=3)
    np.testing.assert_array_equal(s.train.y, y)


def test_one_hot_labels_advice_works():
    """The advice of the one-hot error (store y.argmax(1)) gives labels eecc takes, equal to the class indices."""
    x, y = _xy(100)
    s = make_splits(x, np.eye(3, dtype=np.float32)[y].argmax(1), x[:10], y[:10], input_shape=SHAPE, num_classes=3)
    np.testing.assert_array_equal(s.train.y, y)


def test_label_advice_never_truncates_fractions_nor_cuts_multi_hot_rows():
    """nu13 F7: fractional labels (y + 0.5) were told `astype(np.int64)`, which truncates 2.5 to 2 and then "works";
    multi-hot rows (two classes set) were told `argmax(1)`, which keeps one of them. Neither hint is given now; the
    advice given (one class index per sample) is what compiles."""
    x, y = _xy(100)
    with pytest.raises(EeccError) as info:
        make_splits(x, y + 0.5, x[:10], y[:10], input_shape=SHAPE, num_classes=3)
    assert "astype" not in str(info.value) and "not whole numbers" in str(info.value)
    multi = np.eye(3, dtype=np.float32)[y] + np.eye(3, dtype=np.float32)[(y + 1) % 3]  # two classes per row
    multi[5] = 0  # and a row with none
    with pytest.raises(EeccError, match=r"row 0 has 2 classes set: multi-label data; eecc compiles single-label "
                                        r"classifiers .*: give one class index per sample$") as info:
        make_splits(x, multi, x[:10], y[:10], input_shape=SHAPE, num_classes=3)
    assert "argmax" not in str(info.value)
    scores = np.random.default_rng(0).dirichlet(np.ones(3), 100).astype(np.float32)  # per-class probabilities
    with pytest.raises(EeccError, match=r"store y_train.argmax\(1\)"):
        make_splits(x, scores, x[:10], y[:10], input_shape=SHAPE, num_classes=3)
    s = make_splits(x, y, x[:10], y[:10], input_shape=SHAPE, num_classes=3)  # one class index per sample
    np.testing.assert_array_equal(s.train.y, y)


def test_original_labels_of_a_class_subset_are_told_to_be_renumbered_and_the_advice_loads():
    """nu15 F3: a 7-output model with data labelled {0,2,3,5,7,8,9} (the original classes) was told 'label 9
    outside the model's 7 classes; fix the labels', not that the 7 distinct labels number 0..6 in the model's order."""
    x, y = _xy(100)
    original = np.array([0, 5, 9])[y]  # the model's classes 0, 1, 2 were the data's classes 0, 5, 9
    data = {"x_train": x, "y_train": original, "x_val": x[:10].copy(), "y_val": original[:10].copy()}
    with pytest.raises(EeccError) as info:
        make_splits(**data, input_shape=SHAPE, num_classes=3)
    message = str(info.value)
    assert "\n" not in message and ("y_train contains label 9 outside the model's 3 classes (0..2); y_train has exactly "
                                    "3 distinct labels (0, 5, 9), as many as the model's classes: if the model's output "
                                    "k is the k-th smallest of them, store every y_ split as "
                                    "np.searchsorted(np.unique(y_train), y) (0..2)") in message, message
    advised = {k: np.searchsorted(np.unique(data["y_train"]), v) if k.startswith("y_") else v for k, v in data.items()}
    s = make_splits(**advised, input_shape=SHAPE, num_classes=3)
    np.testing.assert_array_equal(s.train.y, y)
    np.testing.assert_array_equal(s.val.y, y[:10])


def test_one_based_labels_are_told_to_subtract_one_and_the_advice_loads():
    """nu15 F3 addendum: labels 1..10 for a 10-class model got 'label 10 outside the model's 10 classes (0..9); fix
    the labels or use the matching model', which sent the user looking for an 11-class model."""
    x, y = _xy(100)
    data = {"x_train": x, "y_train": y + 1, "x_val": x[:10].copy(), "y_val": y[:10] + 1}
    with pytest.raises(EeccError) as info:
        make_splits(**data, input_shape=SHAPE, num_classes=3)
    message = str(info.value)
    assert ("y_train contains label 3 outside the model's 3 classes (0..2); y_train's labels run 1..3 with no 0, as "
            "1-based class numbers do: if label k is the model's output k - 1, store every y_ split as y - 1 "
            "(0..2)") in message and "matching model" not in message, message
    s = make_splits(**{k: v - 1 if k.startswith("y_") else v for k, v in data.items()}, input_shape=SHAPE,
                    num_classes=3)
    np.testing.assert_array_equal(s.train.y, y)
