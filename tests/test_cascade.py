"""The bundle (atomic writer, manifest, single-file export) and the onnxruntime Cascade with per-sample routing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from eecc.model import ir
from eecc.bundle.manifest import Manifest
from eecc.bundle.writer import open_bundle, write_bundle
from eecc.driver.pipeline import make_stages
from eecc.cli import main
from eecc.errors import EeccError
from eecc.runtime.bundle import BundleError, load_bundle
from eecc.runtime.cascade import Cascade
from eecc.search.confidence import confidence
from eecc.targets.platform import load_platform
from golden import run as golden_run
from test_assign_split import MODEL, WEIGHTS, model_with_exits, parse

PLATFORM = load_platform("rk3588-cuda")
PROCS = ["cpu", "gpu", "cuda"]
X = np.random.default_rng(7).normal(size=(96, 1, 8, 8)).astype(np.float32) * 2


def whole_outputs(x: np.ndarray) -> dict[str, np.ndarray]:
    return golden_run(ir.to_model(model_with_exits()), {"x": x})


def mixed_thresholds() -> list[float]:
    """Thresholds at which every stage receives some of X: about 40 % leave at each exit."""
    out = whole_outputs(X)
    c0, c1 = confidence(out["r1.exit0.logits"]), confidence(out["a2.exit1.logits"])
    t0 = float(np.quantile(c0, 0.6))
    return [t0, float(np.quantile(c1[c0 < t0], 0.4))]


def bundle(path, thresholds, *, single_file=False, force=False):
    stages = make_stages(model_with_exits(), cuts=["r1", "a2"], processors=PROCS, thresholds=thresholds,
                         platform=PLATFORM)
    manifest = Manifest.build(stages, platform=PLATFORM, thresholds=thresholds,
                              placement_metrics={"accuracy": 0.5}, pareto=[{"mean_macs": 1.0}])
    return write_bundle(path, stages, manifest, single_file=single_file, force=force)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return bundle(tmp_path_factory.mktemp("b") / "out", mixed_thresholds(), single_file=True)


def test_batch_routing_equals_samples_one_by_one(mixed):
    cascade = Cascade(mixed, optimize=False)
    batch = cascade.run(X)
    assert (np.bincount(batch.exit_stage, minlength=3) > 0).all()  # every stage took some samples
    alone = [cascade.run(X[i:i + 1]) for i in range(len(X))]
    np.testing.assert_array_equal(batch.exit_stage, [a.exit_stage[0] for a in alone])
    np.testing.assert_array_equal(batch.macs, [a.macs[0] for a in alone])
    np.testing.assert_allclose(batch.logits, np.concatenate([a.logits for a in alone]), atol=1e-6, rtol=0)


def test_one_unbatched_sample_is_one_line_and_the_advice_works(mixed):
    """nu12: Cascade(b).run(x[0]) ended in onnxruntime's INVALID_ARGUMENT traceback; now one line naming x[None],
    which gives the batch of one's result."""
    cascade = Cascade(mixed, optimize=False)
    with pytest.raises(ValueError, match=r"x has shape \[1, 8, 8\] but the bundle takes a batch \[N, 1, 8, 8\]; "
                                         r"for one sample pass x\[None\]") as info:
        cascade.run(X[0])
    assert "\n" not in str(info.value)
    alone, first = cascade.run(X[0][None]), cascade.run(X[:1])
    np.testing.assert_array_equal(alone.exit_stage, first.exit_stage)
    np.testing.assert_array_equal(alone.logits, first.logits)
    with pytest.raises(ValueError, match=r"x has shape \[96, 8, 8\] .* give x of shape \[N, 1, 8, 8\]"):
        cascade.run(X[:, 0])


def test_each_sample_gets_the_logits_of_the_exit_it_took(mixed):
    batch = Cascade(mixed, optimize=False).run(X)
    whole = whole_outputs(X)
    for k, name in enumerate(["r1.exit0.logits", "a2.exit1.logits", "y"]):
        took = batch.exit_stage == k
        np.testing.assert_allclose(batch.logits[took], whole[name][took], atol=1e-5, rtol=0)
    manifest = json.loads((mixed / "manifest.json").read_text())
    # MACs: stage 0 = conv 1→4 + head; each later exit adds its backbone part and its own head
    exit_macs = [2304 + 20, 2304 + 20 + 9216 + 20, 2304 + 20 + 9216 + 20 + 4608 + 40]
    assert [s["exit_macs"] for s in manifest["stages"]] == exit_macs
    np.testing.assert_array_equal(batch.macs, np.array(exit_macs)[batch.exit_stage])


def test_thresholds_above_one_give_the_original_model(tmp_path):
    cascade = Cascade(bundle(tmp_path / "out", [1.5, 1.5]), optimize=False)
    result = cascade.run(X)
    original = golden_run(parse(MODEL, WEIGHTS), {"x": X})["y"]
    np.testing.assert_allclose(result.logits, original, atol=1e-5, rtol=0)
    assert (result.exit_stage == 2).all() and (result.macs == cascade.exit_macs[-1]).all()


def test_threshold_zero_stops_everything_at_the_first_exit(tmp_path):
    result = Cascade(bundle(tmp_path / "out", [0.0, 0.5])).run(X)
    assert (result.exit_stage == 0).all()
    np.testing.assert_allclose(result.logits, whole_outputs(X)["r1.exit0.logits"], atol=1e-5, rtol=0)
    assert Cascade(tmp_path / "out").run(X[:0]).logits.shape[0] == 0


def test_single_file_if_model_matches_the_cascade(mixed):
    b = load_bundle(mixed)
    assert b.single_file is not None and b.single_file.is_file()
    sess = ort.InferenceSession(str(b.single_file), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 1, 8, 8]  # declares the batch of 1 it runs (If needs one condition)
    ref = Cascade(mixed).run(X[:24])
    for i in range(24):
        logits, stage = sess.run(["logits", "exit_stage"], {"x": X[i:i + 1]})
        assert stage.tolist() == [ref.exit_stage[i]]
        np.testing.assert_allclose(logits[0], ref.logits[i], atol=1e-5, rtol=0)


def test_manifest_describes_stages_placement_and_versions(mixed):
    m = json.loads((mixed / "manifest.json").read_text())
    assert m["format"] == "eecc-bundle" and m["version"] == 1
    assert m["input"] == {"name": "x", "shape": ["N", 1, 8, 8], "dtype": "float32"}
    assert [s["file"] for s in m["stages"]] == ["stage0.cpu.onnx", "stage1.gpu.onnx", "stage2.cuda.onnx"]
    assert all((mixed / s["file"]).is_file() for s in m["stages"])
    s0, s1, s2 = m["stages"]
    assert s0["outputs"] == {"handoff": "r1", "logits": "exit0.logits", "exit": "exit0.exit",
                             "confidence": "exit0.confidence"}
    assert s2["outputs"]["logits"] == "y" and s2["threshold"] is None and s2["handoff_bytes"] == 0
    assert s0["exit_latency_s"] < s1["exit_latency_s"] < s2["exit_latency_s"]
    assert s2["exit_latency_s"] > PLATFORM.link("gpu", "cuda").latency_s  # the 50 Mbit/s hop is paid
    assert m["placement"]["processors"] == PROCS and m["placement"]["cuts"] == ["r1", "a2"]
    assert m["placement"]["metrics"] == {"accuracy": 0.5} and m["pareto"] == [{"mean_macs": 1.0}]
    assert m["original_macs"] == 2304 + 9216 + 4608 + 40
    assert m["versions"]["onnxruntime"] == ort.__version__ and m["platform"]["name"] == "rk3588-cuda"
    assert m["single_file"] == "cascade.single.onnx"


def test_existing_output_needs_force_and_failures_leave_nothing(tmp_path):
    out = tmp_path / "out"
    bundle(out, [0.5, 0.5])
    first = (out / "manifest.json").read_text()
    with pytest.raises(EeccError, match="already exists; pass --force"):
        bundle(out, [0.9, 0.9])
    assert (out / "manifest.json").read_text() == first
    with pytest.raises(RuntimeError, match="boom"):
        with open_bundle(out, force=True) as tmp:
            (tmp / "half.onnx").write_bytes(b"x")
            raise RuntimeError("boom")
    assert (out / "manifest.json").read_text() == first and not (out / "half.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left behind
    bundle(out, [0.9, 0.9], force=True)
    assert json.loads((out / "manifest.json").read_text())["placement"]["thresholds"] == [0.9, 0.9]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(EeccError, match="lies inside output folder"):
        with open_bundle(out, force=True, protect=[out / "stage0.cpu.onnx"]):
            pass
    assert (out / "stage0.cpu.onnx").is_file()


def test_reader_rejects_incomplete_bundles(tmp_path, mixed):
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text((mixed / "manifest.json").read_text())
    with pytest.raises(BundleError, match="lacks 'stage0.cpu.onnx'"):
        load_bundle(tmp_path)


def test_eecc_run_reports_accuracy_exits_and_costs(tmp_path, mixed, capsys):
    y = whole_outputs(X)["y"].argmax(1)  # labels = the original model's predictions
    np.savez(tmp_path / "d.npz", x_test=X, y_test=y)
    assert main(["run", str(mixed), "--data", str(tmp_path / "d.npz"), "--batch-size", "32", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    ref = Cascade(mixed).run(X)
    assert s["samples"] == 96 and [e["count"] for e in s["exits"]] == np.bincount(ref.exit_stage).tolist()
    assert s["accuracy"] == pytest.approx(float((ref.predictions == y).mean()))
    assert s["exits"][2]["accuracy"] == 1.0  # the last stage is the original model
    assert s["mean_macs"] == pytest.approx(ref.macs.mean()) and s["worst_case_macs"] == ref.macs.max()
    m = json.loads((mixed / "manifest.json").read_text())
    lat = np.array([st["exit_latency_s"] for st in m["stages"]])
    assert s["mean_latency_s"] == pytest.approx(lat[ref.exit_stage].mean())
    assert s["host_wall_s"] > 0
    assert main(["run", str(mixed), "--data", str(tmp_path / "d.npz"), "--split", "val"]) == 2
    assert "no array 'x_val'" in capsys.readouterr().err


def test_runtime_needs_only_numpy_onnxruntime_and_the_stdlib():
    code = ("import sys; import eecc.runtime.cascade, eecc.runtime.bundle; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'onnx', 'onnx_graphsurgeon', 'torch', 'tvm', 'pymoo', 'networkx', 'rich', 'sklearn'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_force_replaces_only_the_files_eecc_wrote(tmp_path):
    """nu12 F16: --force deleted a user's notes kept inside a bundle. The manifest lists eecc's files; anything
    else (beside what `eecc report` and the bundle's Makefile make) is refused by name, and stays."""
    out = tmp_path / "out"
    bundle(out, [0.5, 0.5], single_file=True)
    listed = json.loads((out / "manifest.json").read_text())["files"]
    assert listed == sorted(["manifest.json", "cascade.single.onnx", "stage0.cpu.onnx", "stage1.gpu.onnx",
                             "stage2.cuda.onnx"])
    (out / "report.html").write_text("eecc report")            # eecc report's files and make's outputs are eecc's
    (out / "report.blocks.png").write_bytes(b"png")
    (out / "m4").mkdir()
    (out / "m4" / "mynotes.txt").write_text("mine")
    (out / "measured.csv").write_text("mine")
    with pytest.raises(EeccError, match=r"holds 2 files eecc did not write \(m4/mynotes.txt, measured.csv\); "
                                        r"--force would delete them: move them out"):
        bundle(out, [0.9, 0.9], force=True)
    assert (out / "m4" / "mynotes.txt").read_text() == "mine" and (out / "measured.csv").read_text() == "mine"
    for f in ("m4/mynotes.txt", "measured.csv"):  # the advice, followed
        (out / f).replace(tmp_path / Path(f).name)
    bundle(out, [0.9, 0.9], force=True)
    assert json.loads((out / "manifest.json").read_text())["placement"]["thresholds"] == [0.9, 0.9]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["measured.csv", "mynotes.txt", "out"]


def test_force_keeps_make_outputs_only_beside_an_eecc_makefile(tmp_path):
    out = tmp_path / "out"
    bundle(out, [0.5, 0.5])
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "m4" / "lib").mkdir(parents=True)
    for f in ("Makefile", "libeecc.a", "lib/stage.o"):
        (out / "m4" / f).write_text("x")
    (out / "lib").mkdir()
    (out / "lib" / "my.o").write_text("x")               # no eecc Makefile beside it: the user's
    manifest["files"].append("m4/Makefile")
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EeccError, match=r"holds 1 file eecc did not write \(lib/my.o\)"):
        bundle(out, [0.9, 0.9], force=True)
    (out / "lib" / "my.o").unlink()
    bundle(out, [0.9, 0.9], force=True)
    assert not (out / "m4").exists()


def test_force_refuses_a_manifest_without_its_file_list(tmp_path):
    out = tmp_path / "out"
    bundle(out, [0.5, 0.5])
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"]                               # as written before the list existed
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EeccError, match="does not list the files eecc wrote .* move what you keep, delete the folder"):
        bundle(out, [0.9, 0.9], force=True)
    assert (out / "stage0.cpu.onnx").is_file()
