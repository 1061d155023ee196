"""Trained foreign-style classifiers (Softmax output, all-float16, fixed batch 1 with a multi-FC head, an MLP)
go through exits, compile and run; every confidence comes from the model's own probabilities."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from eecc.cli import main
from eecc.search.calibration import ece, ece_from_confidence
from golden import run

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_foreign  # noqa: E402


@pytest.fixture(scope="session")
def foreign(tmp_path_factory):
    out = tmp_path_factory.mktemp("foreign")
    paths = make_foreign.make(out)
    return paths, out / "cache"


def _json(capsys, argv) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_softmax_output_final_ece_and_accuracy_are_the_models_own(foreign, capsys):
    paths, cache = foreign
    got = _json(capsys, ["exits", str(paths["softmax"]), "--data", str(paths["data"]), "--json", "--quiet",
                         "--cache-dir", str(cache)])
    data = np.load(paths["data"])
    import onnx
    probs = run(onnx.load(str(paths["softmax"])), {"input": data["x_test"]})["output"].astype(np.float64)
    correct = probs.argmax(1) == data["y_test"]
    assert got["output_kind"] == "softmax"
    assert abs(got["final_ece"] - ece_from_confidence(probs.max(1), correct)) < 1e-6
    assert abs(got["final_test_accuracy"] - correct.mean()) < 1e-6
    # What eecc reported before it read the output as probabilities: softmax applied to probabilities.
    assert ece(probs, data["y_test"]) > 0.3 > got["final_ece"]


@pytest.mark.parametrize("name", ["softmax", "fp16", "multifc", "keras"])
def test_compile_and_run(foreign, capsys, tmp_path, name):
    """compile with the default placement (no --search), then run the bundle."""
    paths, cache = foreign
    out = tmp_path / name
    data = paths["data_nhwc" if name == "keras" else "data"]
    manifest = _json(capsys, ["compile", str(paths[name]), "--data", str(data), "--target", "psoc6",
                              "-o", str(out), "--no-codegen", "--no-report", "--quiet", "--json",
                              "--cache-dir", str(cache)])
    chosen = manifest["placement"]["metrics"]["search"]
    ran = _json(capsys, ["run", str(out), "--data", str(data), "--json", "--quiet"])
    assert ran["samples"] == 360 and ran["accuracy"] > 0.85
    assert abs(ran["accuracy"] - chosen["accuracy"]) < 1e-9
    normalized = {"softmax": [], "fp16": ["normalize_float"], "multifc": ["unfix_batch"], "keras": []}[name]
    kind = "softmax" if name in ("softmax", "keras") else "logits"
    assert manifest["output"] == {"kind": kind, "normalized": normalized}
    if name == "softmax":  # the gates' ECE of the final stage is the model's own
        data = np.load(paths["data"])
        import onnx
        probs = run(onnx.load(str(paths["softmax"])), {"input": data["x_test"]})["output"].astype(np.float64)
        assert abs(chosen["ece"][-1] - ece_from_confidence(probs.max(1), probs.argmax(1) == data["y_test"])) < 1e-6


def test_channels_last_data_gets_transpose_advice_that_works(foreign, capsys, tmp_path):
    paths, cache = foreign
    data = dict(np.load(paths["data"]))
    nhwc = {k: (v.transpose(0, 2, 3, 1) if k.startswith("x_") else v) for k, v in data.items()}
    np.savez(tmp_path / "nhwc.npz", **nhwc)
    argv = ["exits", str(paths["softmax"]), "--json", "--quiet", "--cache-dir", str(cache), "--data"]
    capsys.readouterr()
    assert main([*argv, str(tmp_path / "nhwc.npz")]) == 2
    err = capsys.readouterr().err
    assert "channels-last (NHWC): store x.transpose(0, 3, 1, 2)" in err and "--input-shape" not in err
    fixed = {k: (v.transpose(0, 3, 1, 2) if k.startswith("x_") else v) for k, v in nhwc.items()}
    np.savez(tmp_path / "fixed.npz", **fixed)
    assert _json(capsys, [*argv, str(tmp_path / "fixed.npz")])["final_test_accuracy"] > 0.9


def test_vision_transformer_gets_exits_on_its_token_tensors(foreign, capsys):
    paths, cache = foreign
    got = _json(capsys, ["exits", str(paths["vit"]), "--data", str(paths["data"]), "--json", "--quiet",
                         "--cache-dir", str(cache)])
    tokens = [c for c in got["candidates"] if "blocks" in c["tensor"] and not c["dropped"]]
    assert tokens, got["candidates"]  # exits inside the transformer, on (tokens, dim) tensors
    assert max(c["test_accuracy"] for c in tokens) > 0.5  # chance is 0.1


def test_dropped_heads_are_named_as_the_cause_and_the_advice_leads_to_a_true_error(foreign, capsys, tmp_path):
    """Labels shuffled against the inputs: every head is at chance, and so is the model itself on them. The default
    placement names its dropped head and says that the model scores at chance on the labels (no --search advice:
    other exits cannot help, nu12 F2); --search says every head was dropped and why (not memory or latency)."""
    paths, cache = foreign
    data = dict(np.load(paths["data"]))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "noise.npz", **{k: rng.permutation(v) if k.startswith("y_") else v for k, v in data.items()})
    argv = ["compile", str(paths["softmax"]), "--data", str(tmp_path / "noise.npz"), "--target", "psoc6",
            "-o", str(tmp_path / "out"), "--no-codegen", "--no-report", "--quiet", "--cache-dir", str(cache)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "default placement's exit at" in err and "was dropped: the model itself scores" in err, err
    assert "on the validation labels" in err and "--search" not in err, err
    assert main([*argv, "--search"]) == 2
    err = capsys.readouterr().err
    assert "every exit head was dropped: the best" in err and "the model itself scores" in err, err
    assert "memory" not in err


@pytest.mark.skipif(any(shutil.which(t) is None for t in ("arm-none-eabi-gcc", "qemu-system-arm")),
                    reason="arm-none-eabi-gcc / qemu-system-arm not installed (Debian: gcc-arm-none-eabi qemu-system-arm)")
def test_an_mlp_gets_exits_after_its_hidden_layers_built_and_run_as_deployed(foreign, capsys, tmp_path):
    """Exits on the hidden vectors of a trained MLP: searched, compiled with TVM for the M4F and run under QEMU."""
    paths, cache = foreign
    exits = _json(capsys, ["exits", str(paths["mlp"]), "--data", str(paths["data"]), "--json", "--quiet",
                           "--cache-dir", str(cache)])
    hidden = [c for c in exits["candidates"] if not c["dropped"]]
    assert len({c["tensor"] for c in hidden}) == 2 and max(c["test_accuracy"] for c in hidden) > 0.85
    out = tmp_path / "mlp"
    manifest = _json(capsys, ["compile", str(paths["mlp"]), "--data", str(paths["data"]), "--search", "--emulate",
                              "-o", str(out), "--no-report", "--quiet", "--json", "--cache-dir", str(cache)])
    assert len(manifest["stages"]) >= 2 and manifest["placement"]["cuts"][0] in {c["tensor"] for c in hidden}
    (program,) = manifest["codegen"]["programs"]  # every stage on the M4F, one program
    assert program["cascade"]["exit_agreement"] == program["cascade"]["prediction_agreement"] == 1.0
    ran = _json(capsys, ["run", str(out), "--data", str(paths["data"]), "--json", "--quiet"])
    assert ran["accuracy"] > 0.9 and ran["mean_macs"] < 0.5 * manifest["original_macs"]


def test_a_narrow_mlp_is_built_alone_and_the_summary_says_no_exit_head_fits(foreign, capsys, tmp_path):
    """64-16-16-10: a linear head (160 MACs) exceeds 2 % of 1,440 MACs, so only the original model is searched."""
    import onnx

    from golden import parse

    paths, cache = foreign
    onnx.save(parse("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 1, 8, 8] input) => (float[N, 10] logits) <float[16, 64] a, float[16, 16] b, float[10, 16] c>
{
    x = Flatten(input)
    h = Gemm<transB = 1>(x, a)
    r = Relu(h)
    h2 = Gemm<transB = 1>(r, b)
    r2 = Relu(h2)
    logits = Gemm<transB = 1>(r2, c)
}
"""), str(tmp_path / "narrow.onnx"))
    capsys.readouterr()
    assert main(["compile", str(tmp_path / "narrow.onnx"), "--data", str(paths["data"]), "--search", "--no-codegen",
                 "--no-report", "--quiet", "-o", str(tmp_path / "out"), "--cache-dir", str(cache)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "no candidate exit: no exit head fits the head budget of 28 MACs (2.0% of the model's)" in out
    assert "no early-exit network beats" not in out  # nothing was compared
    assert "warning: no exit head fits this model (r: even a bare Gemm head (160 MACs) exceeds the budget of 28 MACs" in out


def test_the_head_budget_warning_names_an_option_that_gives_the_narrow_mlp_an_exit(foreign, capsys, tmp_path):
    """nu7's trained 64-128-128-128-10 MLP: a linear head (1,280 MACs) is 3.03 % of its MACs, above the default 2 %
    budget. inspect says no head fits, exits refuses in one line, compile warns; each names --head-budget, and
    the advised value gives compile an exit."""
    import re

    paths, cache = foreign
    model, data = str(paths["mlp_narrow"]), str(paths["data"])
    summary = _json(capsys, ["inspect", model, "--json"])
    candidates = [b for b in summary["blocks"] if b["candidate_exit"]]
    assert len(candidates) == 2 and not any(b["head_fits"] for b in candidates)
    assert all("exceeds the budget of 844 MACs" in b["no_head"] for b in candidates)
    assert main(["inspect", model]) == 0
    table = capsys.readouterr().out
    assert " yes " not in table and "no head" in table and "--head-budget 3.1%" in table
    assert main(["exits", model, "--data", data, "--quiet", "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "head budget of 844 MACs (2.0% of 42,240)" in err and "--head-budget 3.1%" in err
    argv = ["compile", model, "--data", data, "--search", "--no-codegen", "--no-report", "--quiet",
            "--cache-dir", str(cache)]
    assert main([*argv, "-o", str(tmp_path / "none")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    advised = re.search(r"warning: no exit head fits this model .*; pass --head-budget (\S+) to admit a head", out)
    assert advised and advised.group(1) == "3.1%"
    manifest = _json(capsys, [*argv, "-o", str(tmp_path / "exit"), "--json", "--head-budget", advised.group(1)])
    assert len(manifest["stages"]) == 2 and manifest["placement"]["cuts"][0] == candidates[0]["output"]
    fits = _json(capsys, ["inspect", model, "--json", "--head-budget", "0.031"])
    assert all(b["head_fits"] for b in fits["blocks"] if b["candidate_exit"]) and fits["head_budget_advice"] is None


@pytest.mark.parametrize("value", ["2x", "0", "150%", "-0.1"])
def test_a_bad_head_budget_is_one_line_naming_the_option(capsys, value):
    for command in (["inspect", "m.onnx"], ["exits", "m.onnx", "--data", "d.npz"],
                    ["compile", "m.onnx", "--data", "d.npz"], ["search", "m.onnx", "--target", "psoc6", "--data", "d.npz"]):
        with pytest.raises(SystemExit) as exc:  # argparse usage errors exit through OneLineParser
            main([*command, "--head-budget", value])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--head-budget" in err and "fraction such as 0.05" in err


def test_a_sklearn_zipmap_export_is_read_through_its_probability_tensor(foreign, capsys, tmp_path):
    """nu11: skl2onnx's default classifier export (label + ZipMap's sequence of maps) crashed every command with a
    108-line traceback. The trained MLP with those outputs: each command warns once, in one line, that the label
    and ZipMap outputs were dropped, and the bundle's accuracy is the model's own (argmax of its probabilities)."""
    import onnx

    from bad_models import sklearn_like

    paths, cache = foreign
    model, data = tmp_path / "skl.onnx", str(paths["data"])
    onnx.save(sklearn_like(onnx.load(str(paths["mlp"]))), str(model))
    d = np.load(data)
    labels = run(onnx.load(str(model)), {"input": d["x_test"]})["output_label"]
    own = float((labels == d["y_test"]).mean())
    warned = "outputs 'output_label', 'output_probability' dropped: eecc reads the class probabilities"
    capsys.readouterr()
    assert main(["inspect", str(model)]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and warned in err and "select_probabilities" in out
    common = ["--data", data, "--quiet", "--cache-dir", str(cache), "--json"]
    for argv in (["exits", str(model), *common], ["search", str(model), "--target", "psoc6", *common],
                 ["compile", str(model), *common, "-o", str(tmp_path / "out"), "--no-codegen", "--no-report"]):
        assert main(argv) == 0, argv[0]
        out, err = capsys.readouterr()
        assert err.count(warned) == 1 and "Traceback" not in err, err
    manifest = json.loads(out)
    assert manifest["output"] == {"kind": "softmax", "normalized": ["select_probabilities"]}
    assert abs(manifest["original"]["accuracy"] - own) < 1e-9  # the test split, through the kept probabilities
    ran = _json(capsys, ["run", str(tmp_path / "out"), "--data", data, "--json", "--quiet"])
    searched = manifest["placement"]["metrics"]["search"]["accuracy"]
    assert ran["samples"] == 360 and abs(ran["accuracy"] - searched) < 1e-9
