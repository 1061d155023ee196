"""`eecc compile` end to end on real trained fixtures, and the cascade invariants of issue 5.

Invariants, on every fixture:
  1. thresholds that let no sample exit -> the cascade equals the original model within 1e-5;
  2. the cascade routes and predicts exactly as the search's policy evaluation does on the logits of
     the very graph that was split;
  3. a Cascade on the bundle reproduces `eecc run`'s figures.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from eecc.examples import datasets
from eecc.driver.compile import CompileOptions, compile_model
from eecc.report.page import FIGURES, stage_costs_caption
from eecc.search.search import SearchOptions
from eecc.runtime.cascade import Cascade
from bundle_policy import assert_routes_as_policy
from golden import run

MODELS = Path(__file__).parent / "fixtures" / "models"
# name -> training samples kept (the full sets make the test slow; the heads still learn on these)
FIXTURES = {"cnn": None, "cnn1d": None, "resnet": 6000, "dscnn": 4000}


def _fixture(name: str):
    path = MODELS / f"{name}.onnx"
    assert path.exists(), f"fixture {name} missing: run python tests/fixtures/make_fixtures.py"
    meta = json.loads((MODELS / f"{name}.json").read_text())
    data = datasets.load(meta["dataset"], limit_train=FIXTURES[name])
    if FIXTURES[name]:
        data = {k: (v[:2000] if k.endswith(("_val", "_test")) else v) for k, v in data.items()}
    return path, data


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def compiled(request, tmp_path_factory):
    path, data = _fixture(request.param)
    root = tmp_path_factory.mktemp(request.param)
    # objective macs: these are the early-exit invariants (on energy the M4F alone wins in fp32)
    options = CompileOptions(target="psoc6", out=root / "bundle", search=True, cache_dir=str(root / "cache"),
                             search_options=SearchOptions(objective="macs"),
                             codegen=False, progress=False)
    manifest = compile_model(path, data, options)
    return request.param, path, data, options, manifest


def test_bundle_is_complete_and_numbers_are_measured(compiled):
    name, path, data, options, manifest = compiled
    files = sorted(p.name for p in options.out.iterdir())
    assert files == sorted(["manifest.json"] + [s["file"] for s in manifest["stages"]])
    # Objective macs does not see processors: among the placements of the chosen one's validation cost the least
    # energy wins (nu12 F7: the first listed, m0plus -> m4, was chosen); here the M4F's alone
    assert [s["target"] for s in manifest["stages"]] == ["m4", "m4"]
    chosen = manifest["placement"]["metrics"]["search"]
    ties = [p for p in manifest["search"]["placements"] if p["feasible"] and p["val_cost"] == chosen["val_cost"]]
    assert any(p["processors"] == ["m0plus", "m4"] for p in ties)
    assert chosen["val_mean_energy_j"] == min(p["val_mean_energy_j"] for p in ties)
    measured = manifest["placement"]["metrics"]["measured"]
    assert measured["samples"] == len(data["y_test"])
    res = Cascade(options.out).run(data["x_test"])
    assert measured["accuracy"] == pytest.approx(float((res.predictions == data["y_test"]).mean()))
    assert measured["mean_macs"] == pytest.approx(float(res.macs.mean()))
    assert measured["mean_macs"] < measured["original_macs"]          # something really exits early
    assert measured["accuracy"] >= measured["original_accuracy"] - 0.05
    assert measured["agreement_with_search"] >= 0.98                   # fp16 cache vs fp32 graph
    lo, hi = measured["intervals"]["accuracy"]
    assert lo <= measured["accuracy"] <= hi and measured["intervals"]["level"] == 0.95
    # the chosen head's design is in the manifest and on the exit's nodes in the stage graph
    (head,) = manifest["heads"]
    assert head["kind"] in ("gap", "flat", "mlp") and head["tensor"] == manifest["placement"]["cuts"][0]
    assert manifest["placement"]["metrics"]["search"]["heads"] == [head["design"]]  # the design the search chose
    stage0 = onnx.load(str(options.out / manifest["stages"][0]["file"]))
    designs = {p.value for n in stage0.graph.node for p in n.metadata_props if p.key == "pkg.eecc.head"}
    assert designs == {json.dumps(head["design"])}


def test_report_caption_names_the_measured_cost_model(compiled):
    """psoc6 stages are priced by the measured cost model, and the report's stage-cost caption says so."""
    manifest = compiled[-1]
    caption = stage_costs_caption(manifest, dict((n, c) for n, _, c in FIGURES)["stage_costs"])
    assert "measured cost model" in caption and "on m4" in caption and "nominal" not in caption


def test_no_exit_thresholds_reproduce_the_original_model(compiled, tmp_path):
    name, path, data, options, manifest = compiled
    never = tmp_path / "never"
    shutil.copytree(options.out, never)
    stage0 = onnx.load(str(never / manifest["stages"][0]["file"]))
    (threshold,) = [t for t in stage0.graph.initializer if t.name.endswith("threshold")]
    threshold.CopyFrom(onnx.numpy_helper.from_array(np.array(2.0, np.float32), threshold.name))
    onnx.save(stage0, str(never / manifest["stages"][0]["file"]))
    res = Cascade(never, optimize=False).run(data["x_test"])
    original = run(onnx.load(str(path)), {"input": data["x_test"]})["logits"]
    assert (res.exit_stage == 1).all()
    np.testing.assert_allclose(res.logits, original, atol=1e-5, rtol=0)


def test_cascade_routes_exactly_as_the_policy_evaluation(compiled):
    name, path, data, options, manifest = compiled
    assert_routes_as_policy(options.out, manifest, data["x_test"], data["y_test"])


def test_eecc_run_reports_what_the_cascade_computes(compiled, tmp_path):
    name, path, data, options, manifest = compiled
    npz = datasets.save_npz(data, tmp_path / "d.npz")
    proc = subprocess.run([sys.executable, "-m", "eecc", "run", str(options.out), "--data", str(npz), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    res = Cascade(options.out).run(data["x_test"])
    assert report["accuracy"] == pytest.approx(float((res.predictions == data["y_test"]).mean()))
    assert report["mean_macs"] == pytest.approx(float(res.macs.mean()))
    measured = manifest["placement"]["metrics"]["measured"]
    assert report["accuracy"] == pytest.approx(measured["accuracy"])


def test_default_compile_generates_target_code_without_emulation(tmp_path):
    # The CLI default: TVM code for every stage, no QEMU run, so no calibrated figures are claimed.
    path, data = _fixture("cnn")
    options = CompileOptions(target="psoc6", out=tmp_path / "b", cache_dir=str(tmp_path / "c"), progress=False,
                             search_options=SearchOptions(objective="macs"))
    manifest = compile_model(path, data, options)
    for stage in manifest["stages"]:
        assert stage["codegen"]["flash_bytes"] > 0 and (options.out / stage["target"]).is_dir()
        assert "skipped" in stage["emulation"]
    assert "mean_latency_calibrated_s" not in manifest["placement"]["metrics"]["measured"]
