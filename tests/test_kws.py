"""The SYNTHETIC keyword data (espeak-ng + numpy front end) and the built-in `kws` example model."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest

from eecc.examples import kws
from eecc.errors import EeccError
from eecc.examples import example, info

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed (apt-get install espeak-ng)")


def tone(freq: float, seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)


# Hand-checked band numbers: 42 mel points from mel(20 Hz) = 31.75 to mel(4000 Hz) = 2146.06, step
# 51.57 mel. 1000 Hz = 1000 mel sits between band 17 (centre 960 mel = 941 Hz) and band 18 (1011.6 mel
# = 1017.5 Hz), weights 0.23 / 0.77 -> band 18. 300 Hz = 402 mel lies between band 6 (291.8 Hz) and
# band 7 (338.3 Hz), weights 0.82 / 0.18 -> band 6.
@pytest.mark.parametrize("freq, band", [(1000.0, 18), (300.0, 6)])
def test_pure_tone_lands_in_its_mel_band(freq, band):
    lm = kws.log_mel(tone(freq)[None])[0]
    assert lm.shape == (49, 40)
    energy = lm.mean(axis=0)
    assert int(energy.argmax()) == band
    neighbours = np.delete(energy, [band - 1, band, band + 1])
    assert energy[band] > neighbours.max() + 5  # natural log: > 100x the power of any non-neighbour


def test_filterbank_covers_its_range_and_dct_is_orthonormal():
    fb = kws.mel_filterbank()
    assert fb.shape == (40, 513)
    freqs = np.arange(513) * 16000 / 1024
    assert np.all(fb.sum(axis=1) > 0)  # no empty band at the low end
    assert np.all(fb[:, (freqs < 20) | (freqs > 4000)] == 0)
    d = kws.dct_matrix(40, 40)
    np.testing.assert_allclose(d @ d.T, np.eye(40), atol=1e-12)


def test_feature_shape_and_flat_spectrum_only_has_c0():
    spec = kws.SPEC
    assert (spec.frames, spec.shape) == (49, (1, 49, 10))
    x = kws.features(np.zeros((3, 16000)))
    assert x.shape == (3, 1, 49, 10) and x.dtype == np.float32
    # silence -> a constant log-mel row -> all energy in c0 = sqrt(40) * log(1e-6)
    np.testing.assert_allclose(x[..., 0], np.sqrt(40) * np.log(1e-6), rtol=1e-6)
    np.testing.assert_allclose(x[..., 1:], 0, atol=1e-4)
    with pytest.raises(ValueError, match="16000 samples"):
        kws.features(np.zeros((1, 8000)))


def test_resample_keeps_a_tone_frequency():
    y = kws.resample(tone(440.0, rate=22050), 16000)
    assert len(y) == 16000
    spectrum = np.abs(np.fft.rfft(y[2000:14000] * np.hanning(12000)))
    assert abs(np.argmax(spectrum) * 16000 / 12000 - 440.0) < 2.0


def test_splits_use_disjoint_voices():
    voices = kws.voices_by_split()
    sets = [set(voices[s]) for s in kws.SPLITS]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert set.union(*sets) == set(kws.VARIANTS)
    for split in kws.SPLITS:
        used = {c.voice.split("+")[1] for c in kws.plan(split, 20)}
        assert used <= set(voices[split])


def test_plan_is_deterministic_and_seeded():
    assert kws.plan("val", 5, seed=3) == kws.plan("val", 5, seed=3)
    assert kws.plan("val", 5, seed=3) != kws.plan("val", 5, seed=4)
    clips = kws.plan("train", 4)
    assert [c.label for c in clips] == [i // 4 for i in range(4 * len(kws.CLASSES))]
    assert all(c.word is None for c in clips if kws.CLASSES[c.label] == "silence")
    assert all(c.word in kws.UNKNOWN_WORDS for c in clips if kws.CLASSES[c.label] == "unknown")
    assert all(c.word == kws.CLASSES[c.label] for c in clips if c.label >= 2)


@needs_espeak
def test_small_synthesis_run_is_deterministic():
    words = {0: (), 2: ("yes",), 3: ("no",)}
    x, y = kws.make_split("test", 3, words=words)
    assert x.shape == (9, 1, 49, 10) and x.dtype == np.float32 and np.isfinite(x).all()
    assert y.tolist() == [0, 0, 0, 2, 2, 2, 3, 3, 3]
    # c0 tracks loudness: silence clips are far quieter than spoken ones
    assert x[:3, 0, :, 0].mean() < x[3:, 0, :, 0].mean() - 20
    x2, y2 = kws.make_split("test", 3, words=words)
    np.testing.assert_array_equal(x, x2)

    speech = kws.synthesize("yes", voice="en-us+m3", speed=160)
    assert 2000 < len(speech) < 16000 and np.abs(speech).max() > 0.1


@needs_espeak
def test_load_caches_per_split(tmp_path):
    first = kws.load(sizes={"val": 1}, splits=("val",), root=tmp_path)
    assert sorted(first) == ["x_val", "y_val"] and first["x_val"].shape == (12, 1, 49, 10)
    files = list((tmp_path / "kws").glob("*.npz"))
    assert len(files) == 1 and "-val.npz" in files[0].name
    again = kws.load(sizes={"val": 1}, splits=("val",), root=tmp_path)
    np.testing.assert_array_equal(first["x_val"], again["x_val"])


def test_missing_espeak_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EeccError, match=r"espeak-ng.*apt-get install espeak-ng"):
        kws.load(root=tmp_path)
    with pytest.raises(EeccError, match="apt-get install espeak-ng"):
        kws.make_split("val", 1)


def test_unknown_example_names_the_choices():
    with pytest.raises(EeccError, match="built-in examples: kws"):
        example("mnist")


def test_example_metadata_says_synthetic():
    meta = info("kws")
    assert meta["synthetic"] is True and "SYNTHETIC" in meta["description"]
    assert meta["classes"] == list(kws.CLASSES)
    assert meta["input_shape"] == list(kws.SPEC.shape)
    assert meta["data"]["generator_version"] == kws.GENERATOR_VERSION


@needs_espeak
def test_example_model_reaches_its_recorded_accuracy_on_unseen_voices():
    """Regenerates (or reads the cached) data through the same path `eecc compile --example kws` takes."""
    path, data = example("kws")
    assert path.stat().st_size < 1 << 20
    assert sorted(data) == sorted(f"{p}_{s}" for s in kws.SPLITS for p in "xy")
    meta = info("kws")
    assert {s: len(data[f"y_{s}"]) for s in kws.SPLITS} == meta["data"]["samples"]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    # same espeak-ng version: identical audio, so only last-bit float differences between CPUs can
    # flip a borderline sample; another espeak-ng version speaks slightly differently
    tol = 0.01 if meta["data"]["espeak_ng_version"] == kws.espeak_version() else 0.05
    for split in ("val", "test"):
        logits = sess.run(["logits"], {"input": data[f"x_{split}"]})[0]
        acc = float((logits.argmax(1) == data[f"y_{split}"]).mean())
        assert acc == pytest.approx(meta[f"{split}_accuracy"], abs=tol)
    assert acc > 0.5  # 12 classes: chance is 1/12
