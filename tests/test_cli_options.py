"""Option mistakes found by a new user: each is one line, exit 2, naming the bad value, with advice that works."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from eecc.cli import main
from eecc.examples import datasets

CNN = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"


@pytest.fixture(scope="module")
def digits(digits_folder):
    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    return digits_folder


def _compile(capsys, d: Path, out: Path, *extra: str):
    capsys.readouterr()
    try:
        code = main(["compile", str(CNN), "--data", str(d / "d.npz"), "--target", "psoc6", "--no-codegen",
                     "--no-report", "--quiet", "--cache-dir", str(d / "cache"), "-o", str(out), *extra])
    except SystemExit as exc:
        code = exc.code
    out_text, err = capsys.readouterr()
    return code, out_text, err


def _one_line(code, out, err, *words):
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize("flag", ["--w-eff", "--w-acc"])
def test_negative_objective_weight_is_refused(digits, tmp_path, capsys, flag):
    _one_line(*_compile(capsys, digits, tmp_path / "o", flag, "-1"), flag, ">= 0")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("shape, token", [("1,x,8", "'x'"), ("1,,8", "empty entry"), ("a,b", "'a'")])
def test_input_shape_names_the_bad_token(digits, tmp_path, capsys, shape, token):
    _one_line(*_compile(capsys, digits, tmp_path / "o", "--input-shape", shape), f"--input-shape '{shape}'", token)


def test_max_macs_below_the_default_placement_suggests_search_and_search_meets_it(digits, tmp_path, capsys):
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--max-macs", "1")
    _one_line(code, out, err, "--max-macs", "--search")
    default = float(re.search(r"cheapest possible \(([\d,]+\d)", err).group(1).replace(",", ""))
    cheapest = float(re.search(r"exits from ([\d,]+\d) MACs", err).group(1).replace(",", ""))
    assert cheapest < default
    limit = str(int((cheapest + default) / 2))
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--max-macs", limit)
    _one_line(code, out, err, "add --search")
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--max-macs", limit, "--search", "--max-acc-drop", "inf")
    assert code == 0, err
    code, out, err = _compile(capsys, digits, tmp_path / "o2", "--max-macs", "1", "--search")
    assert code == 2 and "--search" not in err.split("raise --max-macs")[-1], err  # already searching


def test_max_macs_refusal_after_training_names_a_limit_that_works(digits, tmp_path, capsys):
    """nu11 F9: following the first error's advice (the search's cheapest first exit) gave a second error listing
    each placement's violation and "relax the constraint named", with no number that works; passing the number the
    second error now gives compiles, and the chosen cascade keeps to it (on validation)."""
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--max-macs", "1")
    cheapest = re.search(r"exits from ([\d,]+\d) MACs", err).group(1).replace(",", "")
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--max-macs", cheapest, "--search")
    _one_line(code, out, err, "raise --max-macs to ")
    works = re.search(r"raise --max-macs to ([\d.e+]+)", err).group(1)
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--max-macs", works, "--search")
    assert code == 0, err
    chosen = json.loads((tmp_path / "o" / "manifest.json").read_text())["placement"]
    found = chosen["metrics"]["search"]  # the limit is judged on the validation split
    assert chosen["cuts"] and found["feasible"] and not found["reasons"], found


def test_default_mode_verdict_names_the_one_placement_and_search_tries_the_ones_it_counts(digits, tmp_path, capsys):
    """nu11 F10: without --search the summary said "no early-exit network beats the original model" after trying
    one placement; it now names that placement and advises --search, which scores the placements it counted."""
    code, out, err = _compile(capsys, digits, tmp_path / "o")
    assert code == 0, err
    line = json.loads((tmp_path / "o" / "manifest.json").read_text())["deployment"]["line"]
    assert "no early-exit network beats" not in line, line
    found = re.search(r"the default placement \(exit at (\S+) on (.+?)\) does not beat .*compile with --search to "
                      r"try all (\d+) placements", line)
    assert found, line
    code, out, err = _compile(capsys, digits, tmp_path / "s", "--search")
    assert code == 0, err
    search = json.loads((tmp_path / "s" / "manifest.json").read_text())["search"]
    tried = {(tuple(p["exits"]), tuple(p["processors"])) for p in search["placements"] if p["exits"]}
    assert len(tried) == int(found.group(3))
    assert ((found.group(1),), tuple(found.group(2).split(" → "))) in tried


def test_correction_without_training_calibration_is_refused_and_the_advice_works(digits, tmp_path, capsys):
    """nu9: --correction was silently ignored without --calibrate-on train (and -2 gave negative thresholds)."""
    _one_line(*_compile(capsys, digits, tmp_path / "o", "--correction", "0.9"), "add --calibrate-on train")
    assert not (tmp_path / "o").exists()
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--correction", "0.9", "--calibrate-on", "train")
    assert code == 0, err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert all(p["method"].endswith("+correction0.9") for p in manifest["search"]["placements"] if p["exits"])


def test_aep_prune_without_an_ensemble_is_refused_and_with_one_it_is_recorded(digits, tmp_path, capsys):
    """nu10: --aep-prune was accepted with the default single decision, did nothing there, and the manifest gave
    no sign of it; with --decision ensemble the option and the sub-ensemble ranking are in manifest.json."""
    _one_line(*_compile(capsys, digits, tmp_path / "o", "--aep-prune"), "--aep-prune", "add --decision ensemble")
    assert not (tmp_path / "o").exists()
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--aep-prune", "--decision", "ensemble",
                              "--objective", "macs")
    assert code == 0, err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["search"]["options"]["prune"] is True and manifest["decision"] == "ensemble"
    chosen = manifest["placement"]["metrics"]["search"]
    assert chosen["exits"] and len(chosen["aep"]) == 2 ** len(chosen["exits"]) - 1  # every sub-ensemble ranked


def test_negative_scale_is_refused_and_the_advised_scale_works(digits, tmp_path, capsys):
    """nu9: --scale -1 built a bundle at chance accuracy with no word; the advice's example factor works."""
    u8 = {k: (np.round(v * 255).astype(np.uint8) if k.startswith("x_") else v)
          for k, v in datasets.load("digits").items()}
    np.savez(tmp_path / "u8.npz", **u8)
    capsys.readouterr()
    argv = ["compile", str(CNN), "--data", str(tmp_path / "u8.npz"), "--no-codegen", "--no-report", "--quiet",
            "--cache-dir", str(digits / "cache"), "-o", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--scale=-1"])
    out, err = capsys.readouterr()
    _one_line(exc.value.code, out, err, "--scale", "negative")
    assert not (tmp_path / "o").exists()
    advised = re.search(r"e\.g\. ([0-9.]+)", err).group(1)
    assert main([*argv, "--scale", advised]) == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["input"]["scale"] == pytest.approx(1 / 255)
    assert manifest["placement"]["metrics"]["measured"]["accuracy"] > 0.5  # -1 gave chance accuracy


def test_cache_dir_at_a_file_is_refused_and_the_advised_folder_works(digits, tmp_path, capsys):
    """nu9: --cache-dir naming a file gave a NotADirectoryError traceback (rc 1) after the model and data were read."""
    (tmp_path / "notes.txt").write_text("x")
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--cache-dir", str(tmp_path / "notes.txt"))
    _one_line(code, out, err, "--cache-dir", "notes.txt' is a file", "give a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    advised = re.search(r"e\.g\. --cache-dir (\S+)$", err.strip()).group(1)
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--cache-dir", advised, "--heads", "blueprint")
    assert code == 0, err
    assert Path(advised).is_dir() and (tmp_path / "o" / "manifest.json").exists()


def test_finetune_on_an_op_it_cannot_run_is_refused_before_training(digits, tmp_path, capsys):
    """nu10: --finetune-epochs on a LeakyRelu model was refused only after features, heads and the search."""
    import onnx

    m = onnx.load(str(CNN))
    next(n for n in m.graph.node if n.op_type == "Relu").op_type = "LeakyRelu"
    onnx.save(m, str(tmp_path / "leaky.onnx"))
    capsys.readouterr()
    code = main(["compile", str(tmp_path / "leaky.onnx"), "--data", str(digits / "d.npz"), "--no-codegen", "--quiet",
                 "--finetune-epochs", "1", "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    _one_line(code, out, err, "op LeakyRelu", "drop --finetune-epochs")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "o").exists()  # nothing was computed
    # the advice followed (nu14 F6): without --finetune-epochs the same model compiles
    assert main(["compile", str(tmp_path / "leaky.onnx"), "--data", str(digits / "d.npz"), "--no-codegen", "--quiet",
                 "--no-report", "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.parametrize("given, words", [("m0plus,m5", ["no processor 'm5'"]),
                                           ("m4,m0plus", ["platform order"]),
                                           ("m4", ["names one stage"]),
                                           ("m0plus,,m4", ["empty entry"])])
def test_a_bad_placement_names_the_processors_and_the_advised_one_is_searched(digits, tmp_path, capsys, given, words):
    """--placement (the processor of each stage): a name the platform lacks, stages out of platform order or one stage
    alone is one line naming psoc6's processors; the advised placement is the only one searched with an exit."""
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--placement", given, "--heads", "blueprint")
    _one_line(code, out, err, "--placement", *words)
    assert not (tmp_path / "o").exists()
    if given == "m0plus,,m4":  # argparse's own message: its example
        return
    assert "m0plus, m4, in that order" in err, err
    advised = re.search(r"e\.g\. --placement (\S+)\)", err).group(1)
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--placement", advised, "--heads", "blueprint",
                              "--search", "--objective", "macs", "--max-acc-drop", "inf")
    assert code == 0, err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    scored = manifest["search"]["placements"]
    assert {tuple(p["processors"]) for p in scored if p["exits"]} == {("m0plus", "m4")}
    from eecc.exits.run import plan_exits

    assert len([p for p in scored if p["exits"]]) == len(plan_exits(str(CNN)).costs)  # each candidate once
    assert manifest["search"]["options"]["placement"] == ["m0plus", "m4"]
    assert manifest["placement"]["processors"] == ["m0plus", "m4"]  # MACs: a cascade beats the original alone


def test_placement_with_exits_per_processor_is_refused_and_dropping_it_works(digits, tmp_path, capsys):
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--placement", "m4,m4", "--exits-per-processor", "2")
    _one_line(code, out, err, "drop --exits-per-processor 2")
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--placement", "m4,m4", "--heads", "blueprint")
    assert code == 0, err
    scored = json.loads((tmp_path / "o" / "manifest.json").read_text())["search"]["placements"]
    assert {tuple(p["processors"]) for p in scored if p["exits"]} == {("m4", "m4")}


def test_search_defaults_to_psoc6_as_compile_does(digits, capsys):
    """`eecc search MODEL --data D` without --target searched nothing (argparse: --target required) while
    `eecc compile` defaulted to psoc6 (nu12)."""
    capsys.readouterr()
    code = main(["search", str(CNN), "--data", str(digits / "d.npz"), "--json", "--quiet", "--heads", "blueprint",
                 "--cache-dir", str(digits / "cache")])
    out, err = capsys.readouterr()
    assert code == 0, err
    found = json.loads(out)
    assert found["options"]["target"] == "psoc6"
    assert {tuple(p["processors"]) for p in found["placements"] if not p["exits"]} == {("m0plus",), ("m4",)}


def test_compile_prints_a_model_warning_once(tmp_path):
    """nu12: compile printed skl2onnx's "outputs dropped" warning twice (the CLI and compile_model each load the
    model, and an import between them reset Python's once-per-location registry). A real interpreter: pytest
    records warnings instead of printing them, and its earlier imports would hide the reset."""
    import os
    import subprocess
    import sys

    import onnx

    from bad_models import sklearn_like

    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    onnx.save(sklearn_like(onnx.load(str(CNN))), str(tmp_path / "skl.onnx"))
    datasets.save_npz(datasets.load("digits"), tmp_path / "d.npz")
    proc = subprocess.run([sys.executable, "-m", "eecc", "compile", str(tmp_path / "skl.onnx"), "--data",
                           str(tmp_path / "d.npz"), "--heads", "blueprint", "--no-codegen", "--no-report", "--quiet",
                           "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "out")],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "scikit-learn export" in line]
    assert len(lines) == 1 and lines[0].startswith("eecc compile: warning: "), proc.stderr


def test_max_exits_without_pareto_is_refused_and_with_it_bounds_the_solutions(digits, tmp_path, capsys):
    """`--max-exits K` ("with --pareto: most exits per solution") was accepted without --pareto and did nothing:
    the searched placements take their exits from the processors."""
    _one_line(*_compile(capsys, digits, tmp_path / "o", "--max-exits", "1"), "--max-exits 1", "add --pareto")
    assert not (tmp_path / "o").exists()
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--max-exits", "1", "--pareto")
    assert code == 0, err
    pareto = json.loads((tmp_path / "o" / "manifest.json").read_text())["pareto"]
    assert pareto and all(len(p["exits"]) == 1 for p in pareto)


def test_emulate_without_codegen_is_refused_and_the_advice_builds(digits, tmp_path, capsys):
    """`--emulate --no-codegen` built the bundle, emulated nothing and said nothing of it (no stage was compiled)."""
    _one_line(*_compile(capsys, digits, tmp_path / "o", "--emulate"), "--emulate",
              "drop --no-codegen, or drop --emulate")
    assert not (tmp_path / "o").exists()
    code, out, err = _compile(capsys, digits, tmp_path / "o")  # --no-codegen kept, --emulate dropped
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["stages"]


def test_calibrate_on_val_without_x_val_is_the_held_out_share_the_help_names(digits, tmp_path, capsys):
    """The help said "'train' when there is no validation data", but without x_val eecc holds out a share of the
    training samples and `val` works there with no warning; `train` calibrates on the training samples, warned."""
    from eecc.data.splits import make_splits

    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    share = float(re.search(r"without them, the (\d+)% of the training samples eecc holds out", text).group(1))
    data = {k: v for k, v in np.load(digits / "d.npz").items() if not k.endswith("_val")}
    splits = make_splits(*(data.get(k) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")),
                         input_shape=(1, 8, 8), num_classes=10)
    assert len(splits.val) == pytest.approx(share / 100 * len(data["y_train"]), abs=10)  # stratified rounding
    np.savez(tmp_path / "noval.npz", **data)
    warned = {}
    for on in ("val", "train"):
        capsys.readouterr()
        assert main(["search", str(CNN), "--data", str(tmp_path / "noval.npz"), "--json", "--quiet", "--heads",
                     "blueprint", "--calibrate-on", on, "--cache-dir", str(digits / "cache")]) == 0
        warned[on] = any("optimistic" in w for w in json.loads(capsys.readouterr().out)["warnings"])
    assert warned == {"val": False, "train": True}


def test_ensemble_weights_without_an_ensemble_are_refused_and_with_one_they_weigh_it(digits, tmp_path, capsys):
    """`--ensemble-weights asc` ("with --decision ensemble: member weights") was accepted with the default single
    decision and did nothing; with --decision ensemble the bundle's ensemble stages use the mode asked for."""
    _one_line(*_compile(capsys, digits, tmp_path / "o", "--ensemble-weights", "asc"), "--ensemble-weights asc",
              "add --decision ensemble")
    assert not (tmp_path / "o").exists()
    code, out, err = _compile(capsys, digits, tmp_path / "o", "--ensemble-weights", "asc", "--decision", "ensemble",
                              "--objective", "macs")
    assert code == 0, err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    modes = {s["ensemble_weights"]["mode"] for s in manifest["stages"] if s.get("ensemble_weights")}
    assert manifest["decision"] == "ensemble" and modes == {"asc"}


def test_exits_seed_help_names_what_it_seeds_and_the_held_out_share_follows_it(capsys):
    """fx16's help walk: `exits --seed` had no help text. It seeds the heads' training (TrainConfig.seed, 0 as in
    search and compile) and the validation share held out of the training samples when there is no x_val."""
    from eecc.data.splits import make_splits
    from eecc.exits.heads import TrainConfig

    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["exits", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ("--seed SEED seed of the heads' initial weights and batch order, and of the validation share held out "
            "of the training samples when the data have no x_val (default 0, the seed search and compile use)") in text
    assert TrainConfig().seed == 0
    data = {k: v for k, v in datasets.load("digits").items() if not k.endswith("_val")}
    kw = dict(input_shape=data["x_train"].shape[1:], num_classes=10)
    held = [make_splits(**data, **kw, seed=seed).val.index for seed in (0, 0, 1)]
    assert np.array_equal(held[0], held[1]) and not np.array_equal(held[0], held[2])
