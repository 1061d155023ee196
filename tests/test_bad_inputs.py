"""Bad-input catalogue (issue 7): every user mistake is ONE line on stderr naming the problem and the fix,
exit code 2, no traceback, and nothing left behind (no output folder, no stray file).

Each case builds its inputs in a fresh folder, runs the real CLI (`eecc.cli.main`) in-process, and
compares the folder's contents before and after. Cases fail before training where the flow allows it;
the few that must train share one feature cache outside the compared folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from bad_models import (CNN, leaky, one_value, signal_1d, sklearn_estimator, sklearn_like, symbolic_hw, tiny, tokens,
                        without_data)
from eecc.examples import datasets
from eecc.cli import main
from eecc.errors import EeccError

PLATFORM = """name = "board"
shared_memory = false
[[processors]]
name = "mcu"
kind = "cortex-m4"
macs_per_s = 75e6
ram_bytes = 1048576
storage_bytes = 2097152
active_power_w = 0.03
idle_power_w = 0.001
[[processors]]
name = "cpu"
kind = "cortex-a"
macs_per_s = 1e9
ram_bytes = 1073741824
storage_bytes = 1073741824
active_power_w = 1.0
idle_power_w = 0.1
[[links]]
src = "mcu"
dst = "cpu"
bandwidth_bps = 1e6
latency_s = 0.001
"""


@pytest.fixture(scope="module")
def digits():
    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    return datasets.load("digits")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


# --- helpers that write inputs into the case folder ---------------------------------------------

def npz(d: Path, name="data.npz", drop=(), **changes) -> str:
    data = {k: v for k, v in datasets.load("digits").items() if k not in drop}
    data.update(changes)
    np.savez(d / name, **data)
    return name


def toml(d: Path, text: str, name="board.toml") -> str:
    (d / name).write_text(text)
    return name


def model(d: Path, proto: onnx.ModelProto, name="bad.onnx") -> str:
    onnx.save(proto, str(d / name))
    return name


def cnn(d: Path, name="cnn.onnx") -> str:
    shutil.copy(CNN, d / name)
    return name


def compile_args(d: Path, m: str, data: str, *extra: str, target: str = "psoc6", out: str = "out") -> list[str]:
    return ["compile", m, "--data", data, "--target", target, "-o", out, "--no-codegen", "--no-report", *extra]


# --- the catalogue: id -> (argv builder, words the one-line message must contain) ---------------

CASES = {
    # model file
    "model-missing": (lambda d: compile_args(d, "nothere.onnx", npz(d)), ["nothere.onnx", "does not exist"]),
    "model-not-onnx": (lambda d: compile_args(d, (d / "m.onnx").write_text("hello") and "m.onnx", npz(d)),
                       ["m.onnx", "not a readable ONNX", "re-export"]),
    "model-empty-file": (lambda d: compile_args(d, (d / "e.onnx").write_bytes(b"") or "e.onnx", npz(d)),
                         ["e.onnx"]),
    "model-is-directory": (lambda d: compile_args(d, (d / "m").mkdir() or "m", npz(d)), ["directory"]),
    "model-two-inputs": (lambda d: compile_args(d, model(d, tiny(inputs=2)), npz(d)), ["2 graph inputs", "single-input"]),
    "model-two-outputs": (lambda d: compile_args(d, model(d, tiny(outputs=2)), npz(d)),
                          ["2 graph outputs (logits, r)", "onnx.utils.extract_model(", "['x'], ['logits'])"]),
    "model-no-classifier": (lambda d: compile_args(d, model(d, tiny(head=False)), npz(d)),
                            ["no classifier head", "class scores"]),
    "model-external-data-missing": (lambda d: compile_args(d, without_data(d), npz(d)),
                                    ["moved/cnn.onnx", "external data file 'cnn.onnx.data'", "missing",
                                     "copy it beside the model"]),
    "model-one-output-value": (lambda d: compile_args(d, model(d, one_value()), npz(d)),
                               ["no classifier head", "one value per sample", "[N, classes]", "both logits"]),
    "model-integer-input": (lambda d: compile_args(d, model(d, tokens()), npz(d)),
                            ["input 'ids' is int64", "token ids", "export the network from its first float tensor"]),
    # scikit-learn exports whose ai.onnx.ml ops are more than the label/ZipMap outputs eecc drops (nu11: a
    # 108-line traceback): one line naming the op and the way out, in every command that reads a model
    "sklearn-scaler-pipeline": (lambda d: compile_args(d, model(d, sklearn_like(tiny(), pre="Scaler")), npz(d)),
                                ["ai.onnx.ml.Scaler", "preprocessing", "apply it to the data", "pipeline[-1]"]),
    "sklearn-normalizer-inspect": (lambda d: ["inspect", model(d, sklearn_like(tiny(), pre="Normalizer"))],
                                   ["ai.onnx.ml.Normalizer", "apply it to the data"]),
    "sklearn-tree-ensemble-exits": (lambda d: ["exits", model(d, sklearn_estimator("TreeEnsembleClassifier")), "--data",
                                               npz(d)], ["ai.onnx.ml.TreeEnsembleClassifier", "neural network"]),
    "sklearn-linear-search": (lambda d: ["search", model(d, sklearn_estimator("LinearClassifier")), "--data", npz(d),
                                         "--target", "psoc6"], ["ai.onnx.ml.LinearClassifier", "neural network"]),
    "finetune-unsupported-op": (lambda d: compile_args(d, model(d, leaky()), npz(d), "--finetune-epochs", "1"),
                                ["finetune", "op LeakyRelu", "drop --finetune-epochs"]),
    "model-old-opset": (lambda d: compile_args(d, model(d, tiny(opset=5)), npz(d)), ["opset 5", "opset_version"]),
    "model-symbolic-spatial-dims": (lambda d: compile_args(d, model(d, symbolic_hw()), npz(d)),
                                    ["pass --input-shape 1,H,W with their sizes (3 dims",
                                     "your data's samples are [1, 8, 8]: pass --input-shape 1,8,8"]),
    "input-shape-wrong-rank": (lambda d: compile_args(d, cnn(d), npz(d), "--input-shape", "1,8"), ["input"]),
    "input-shape-not-numbers": (lambda d: compile_args(d, cnn(d), npz(d), "--input-shape", "a,b"),
                                ["--input-shape 'a,b'", "e.g."]),
    # data file
    "data-missing": (lambda d: compile_args(d, cnn(d), "nodata.npz"), ["nodata.npz", "does not exist"]),
    "data-is-a-folder": (lambda d: compile_args(d, cnn(d), (d / "dd").mkdir() or npz(d, "dd/digits.npz") and "dd"),
                         ["data file 'dd' is a folder", "give one of the .npz files in it (digits.npz)"]),
    "data-not-npz": (lambda d: compile_args(d, cnn(d), (d / "d.npz").write_text("x") and "d.npz"),
                     ["d.npz", "not a readable .npz"]),
    "data-no-train-split": (lambda d: compile_args(d, cnn(d), npz(d, drop=("x_train", "y_train"))), ["x_train"]),
    "labels-beyond-classes": (lambda d: compile_args(d, cnn(d), npz(d, y_train=datasets.load("digits")["y_train"] + 5)),
                              ["label", "10 classes"]),
    "image-model-given-1d-data": (
        lambda d: compile_args(d, cnn(d), npz(d, **{k: v.reshape(len(v), -1) for k, v in datasets.load("digits").items()
                                                     if k.startswith("x_")})), ["[64]", "[1, 8, 8]"]),
    "x-y-length-mismatch": (lambda d: compile_args(d, cnn(d), npz(d, y_train=datasets.load("digits")["y_train"][:-3])),
                            ["y_train"]),
    "no-test-split": (lambda d: compile_args(d, cnn(d), npz(d, drop=("x_test", "y_test"))), ["test split", "x_test"]),
    # search reported accuracy 0.00 %, nan energy and -100 % MACs on the missing split, exit 0 (nu11)
    "search-no-test-split": (lambda d: ["search", cnn(d), "--data", npz(d, drop=("x_test", "y_test")), "--target",
                                        "psoc6"], ["no test split", "add x_test and y_test"]),
    # every head was dropped, blamed on the split's size; following the advice (x_val/y_val left out) is
    # test_one_class_validation_advice_works
    "val-one-class": (lambda d: compile_args(d, cnn(d), npz(d, x_val=datasets.load("digits")["x_val"][
        datasets.load("digits")["y_val"] == 3], y_val=np.full(int((datasets.load("digits")["y_val"] == 3).sum()), 3))),
                      ["y_val holds only class [3]", "leave x_val/y_val out"]),
    "float-labels": (lambda d: compile_args(d, cnn(d), npz(d, y_val=datasets.load("digits")["y_val"] + 0.5)),
                     ["y_val", "integers"]),
    "nan-in-data": (lambda d: compile_args(d, cnn(d), npz(d, x_test=np.full((4, 1, 8, 8), np.nan, np.float32),
                                                          y_test=np.zeros(4, np.int64))), ["NaN"]),
    "uint8-without-scale": (lambda d: compile_args(d, cnn(d), npz(d, **{k: v.astype(np.uint8) for k, v in
                                                                         datasets.load("digits").items()
                                                                         if k.startswith("x_")})), ["--scale"]),
    "unexpected-array": (lambda d: compile_args(d, cnn(d), npz(d, x_extra=np.zeros(3))), ["x_extra"]),
    "val-x-without-y": (lambda d: compile_args(d, cnn(d), npz(d, drop=("y_val",))), ["x_val", "y_val"]),
    # 2 validation samples: no head could beat chance by 3 sigma, every head would be dropped (and the message
    # would blame the labels); following the advice (the digits' own x_val/y_val) is every other compile here
    "val-split-too-small": (lambda d: compile_args(d, cnn(d), npz(d, x_val=datasets.load("digits")["x_val"][:2],
                                                                  y_val=datasets.load("digits")["y_val"][:2])),
                            ["validation split holds 2 sample(s)", "too few", "x_val/y_val"]),
    # platform file
    "unknown-target": (lambda d: compile_args(d, cnn(d), npz(d), target="stm32"), ["stm32", "built-in"]),
    "platform-bad-toml": (lambda d: compile_args(d, cnn(d), npz(d), target=toml(d, "name = ")), ["not valid TOML"]),
    "platform-zero-macs": (lambda d: compile_args(d, cnn(d), npz(d), target=toml(d, PLATFORM.replace(
        "macs_per_s = 75e6", "macs_per_s = 0"))), ["macs_per_s"]),
    "platform-unknown-kind": (lambda d: compile_args(d, cnn(d), npz(d), target=toml(d, PLATFORM.replace(
        '"cortex-a"', '"riscv"'))), ["riscv", "use one of"]),
    "platform-missing-field": (lambda d: compile_args(d, cnn(d), npz(d), target=toml(d, PLATFORM.replace(
        "ram_bytes = 1048576\n", ""))), ["ram_bytes", "add it"]),
    "platform-no-link": (lambda d: compile_args(d, cnn(d), npz(d), target=toml(d, PLATFORM.split("[[links]]")[0])),
                         ["no link", "[[links]]"]),
    "exits-per-processor-zero": (lambda d: compile_args(d, cnn(d), npz(d), "--exits-per-processor", "0"),
                                 ["--exits-per-processor"]),
    "platform-unknown-field": (lambda d: compile_args(d, cnn(d), npz(d), target=toml(d, "colour = 1\n" + PLATFORM)),
                               ["colour"]),
    "latency-nothing-can-meet": (lambda d: compile_args(d, cnn(d), npz(d), target=toml(d, "max_latency_s = 1e-9\n"
                                                                                       + PLATFORM)),
                                 ["latency limit", "pass --max-latency-ms"]),
    # CLI options
    "max-latency-option-too-small": (lambda d: compile_args(d, cnn(d), npz(d), "--max-latency-ms", "1e-9"),
                                     ["latency limit", "pass --max-latency-ms"]),
    "out-is-a-file": (lambda d: compile_args(d, cnn(d), npz(d), out=(d / "f").write_text("x") and "f"),
                      ["'f'", "not a folder"]),
    "out-under-a-file": (lambda d: compile_args(d, cnn(d), npz(d), out=npz(d, "x.npz") + "/out"),
                         ["x.npz', which is a file", "choose an output path under a folder"]),
    "out-exists-without-force": (lambda d: compile_args(d, cnn(d), npz(d), out=(d / "o").mkdir() or "o"), ["--force"]),
    "out-force-not-a-bundle": (lambda d: compile_args(d, cnn(d), npz(d), "--force", out=(d / "o").mkdir() or (
        d / "o" / "thesis.tex").write_text("x") and "o"), ["'o' is not an eecc bundle", "holds 1 entry (thesis.tex)", "another"]),
    "out-not-a-bundle-without-force": (lambda d: compile_args(d, cnn(d), npz(d), out=(d / "o").mkdir() or (
        d / "o" / "notes.txt").write_text("x") and "o"), ["not an eecc bundle", "notes.txt"]),
    "out-force-user-file-in-bundle": (lambda d: compile_args(d, cnn(d), npz(d), "--force", out=(d / "o").mkdir() or (
        d / "o" / "manifest.json").write_text('{"files": ["manifest.json"]}') and (d / "o" / "notes.txt").write_text(
        "x") and "o"), ["'o' is a bundle that also holds 1 file eecc did not write (notes.txt)", "move them out"]),
    "out-would-swallow-input": (lambda d: compile_args(d, (d / "o").mkdir() or cnn(d, "o/cnn.onnx"), npz(d),
                                                       "--force", out="o"), ["inside output folder"]),
    "max-macs-not-a-number": (lambda d: compile_args(d, cnn(d), npz(d), "--max-macs", "lots"), ["--max-macs 'lots'"]),
    "max-acc-drop-negative": (lambda d: compile_args(d, cnn(d), npz(d), "--max-acc-drop", "-1"), ["negative"]),
    # numeric options out of range (nu9): refused at parse time, before any work
    "scale-negative": (lambda d: compile_args(d, cnn(d), npz(d), "--scale", "-1"), ["--scale", "-1 is negative",
                                                                                    "> 0", "e.g. 0.0039"]),
    "scale-nan": (lambda d: compile_args(d, cnn(d), npz(d), "--scale", "nan"), ["--scale", "nan", "finite number > 0"]),
    "correction-negative": (lambda d: compile_args(d, cnn(d), npz(d), "--calibrate-on", "train", "--correction", "-2"),
                            ["--correction", "negative", "> 0"]),
    "correction-without-train-calibration": (lambda d: compile_args(d, cnn(d), npz(d), "--correction", "0.5"),
                                             ["--correction 0.5", "add --calibrate-on train", "drop --correction"]),
    "max-latency-zero": (lambda d: compile_args(d, cnn(d), npz(d), "--max-latency-ms", "0"), ["--max-latency-ms", "> 0"]),
    "max-acc-drop-nan": (lambda d: compile_args(d, cnn(d), npz(d), "--max-acc-drop", "nan"), ["--max-acc-drop", "'inf'"]),
    "w-eff-inf": (lambda d: compile_args(d, cnn(d), npz(d), "--w-eff", "inf"), ["--w-eff", ">= 0"]),
    "max-macs-negative": (lambda d: compile_args(d, cnn(d), npz(d), "--max-macs=-5%"), ["--max-macs '-5%'", "> 0"]),
    "negative-value-without-equals": (lambda d: compile_args(d, cnn(d), npz(d), "--head-budget", "-1%"),
                                      ["--head-budget: expected one argument", "--head-budget=VALUE"]),
    "finetune-epochs-negative": (lambda d: compile_args(d, cnn(d), npz(d), "--finetune-epochs", "-1"),
                                 ["--finetune-epochs", ">= 0"]),
    "finetune-with-guarantee": (lambda d: compile_args(d, cnn(d), npz(d), "--finetune-epochs", "1", "--guarantee",
                                                       "0.9", "--max-acc-drop", "1"),
                                ["--guarantee certifies", "uncertified", "drop --finetune-epochs"]),
    "max-exits-not-an-integer": (lambda d: compile_args(d, cnn(d), npz(d), "--max-exits", "2.5"),
                                 ["--max-exits", "'2.5' is not an integer"]),
    "run-threads-zero": (lambda d: ["run", "b", "--threads", "0"], ["--threads", ">= 1"]),
    "exits-epochs-zero": (lambda d: ["exits", cnn(d), "--data", npz(d), "--epochs", "0"], ["--epochs", ">= 1"]),
    "unknown-metric": (lambda d: compile_args(d, cnn(d), npz(d), "--metric", "vibes"), ["--metric", "vibes"]),
    "no-data-option": (lambda d: ["compile", cnn(d), "--no-codegen"], ["--data"]),
    "example-with-model": (lambda d: ["compile", cnn(d), "--example", "kws"], ["--example"]),
    "max-macs-below-cheapest": (lambda d: compile_args(d, cnn(d), npz(d), "--search", "--max-macs", "1"),
                                ["--max-macs"]),
    "run-not-a-bundle": (lambda d: ["run", (d / "b").mkdir() or "b", "--data", npz(d)], ["not an eecc bundle"]),
    "report-not-a-bundle": (lambda d: ["report", (d / "b").mkdir() or "b"], ["not an eecc bundle", "eecc compile"]),
    "inspect-png-missing-folder": (lambda d: ["inspect", cnn(d), "--png", "nofolder/x.png"], ["nofolder"]),
}


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, digits, cache, tmp_path, monkeypatch, capsys):
    build, words = CASES[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EECC_CACHE_DIR", cache)
    argv = build(tmp_path)
    if argv[0] in ("compile", "search", "exits"):
        argv += ["--cache-dir", cache]
    before = _tree(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors exit through OneLineParser
        code = exc.code
    out, err = capsys.readouterr()
    lines = err.strip("\n").split("\n")
    assert code == 2, f"exit code {code}; stderr:\n{err}"
    assert len(lines) == 1, f"want one line on stderr, got {len(lines)}:\n{err}"
    assert "Traceback" not in err and err.startswith("eecc")
    assert not err.startswith(f"eecc {argv[0]}: error: {argv[0]}:"), f"the prefix is doubled: {err}"
    for word in words:
        assert word in err, f"{word!r} not in the message: {err}"
    assert out == "", f"stdout should be empty on error, got {out[:200]!r}"
    assert _tree(tmp_path) == before, "the failed command left files behind"


def test_catalogue_is_large_enough():
    assert len(CASES) >= 25


def test_real_entry_point_prints_one_line(tmp_path):
    """The same contract through a fresh interpreter: import-time warnings would break the one line."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "eecc", "compile", "nothere.onnx", "--data", "d.npz", "-o", "o"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "nothere.onnx" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []


def test_missing_external_data_advice_works(tmp_path, capsys):
    """The advice for a model moved without its external data file, followed: copied beside it, it loads."""
    model = tmp_path / without_data(tmp_path)
    assert main(["inspect", str(model)]) == 2
    assert "external data file 'cnn.onnx.data', which is missing" in capsys.readouterr().err
    shutil.copy(tmp_path / "cnn.onnx.data", model.parent)
    assert main(["inspect", str(model)]) == 0
    assert "cnn.onnx" in capsys.readouterr().out


def test_symbolic_input_advice_is_the_datas_shape_and_it_works(tmp_path, capsys):
    """nu12 F5: a model with symbolic dims was told "--input-shape C,H,W" whatever its rank, and a wrong
    --input-shape got "give data of the shape the model was trained on". Both now name the data's own shape;
    following the advice, `eecc exits` trains the heads."""
    bad, data = model(tmp_path, symbolic_hw(), "hw.onnx"), npz(tmp_path)
    exits = ["exits", str(tmp_path / bad), "--data", str(tmp_path / data), "--heads", "blueprint", "--epochs", "1",
             "--quiet", "--json", "--cache-dir", str(tmp_path / "cache")]
    assert main(exits) == 2
    assert "pass --input-shape 1,8,8" in capsys.readouterr().err
    assert main([*exits, "--input-shape", "1,4,16"]) == 2
    assert "--input-shape 1,8,8 fits this data" in capsys.readouterr().err
    assert main([*exits, "--input-shape", "1,8,8"]) == 0
    assert '"candidates"' in capsys.readouterr().out


def test_a_rank_one_input_shape_is_one_value(tmp_path, capsys):
    """nu12: the README and `inspect --help` wrote `--input-shape C,H,W`; the per-sample shape has the model's rank, so
    a 1-D signal read as [N, L] takes one value. The advice says so and, followed, inspect finds the exits."""
    m = tmp_path / model(tmp_path, signal_1d(), "sig.onnx")
    assert main(["inspect", str(m)]) == 2
    err = capsys.readouterr().err
    assert "pass --input-shape L with their sizes (1 dim, without" in err and err.count("\n") == 1, err
    assert main(["inspect", str(m), "--input-shape", "64"]) == 0
    out = capsys.readouterr().out
    assert "2 candidate exits" in out and "1×64" in out, out
    for command in ("inspect", "exits", "search", "compile"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--input-shape DIMS" in capsys.readouterr().out


def test_one_value_output_advice_works(tmp_path, capsys):
    """A one-value output is refused; exported as both logits, as the message advises, it is a 2-class model."""
    model(tmp_path, one_value(), "z.onnx")
    model(tmp_path, one_value(both_logits=True), "zz.onnx")
    assert main(["inspect", str(tmp_path / "z.onnx")]) == 2
    assert "one value per sample" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "zz.onnx")]) == 0
    assert "2 classes" in capsys.readouterr().out


def test_sigmoid_output_advice_names_its_input_and_keeps_the_model():
    """nu14 F4: a one-value Sigmoid output got the logit advice, torch.cat([-z, z], 1); applied to the output p it
    made every sample class 1 (9.70 % on a 9.7 %-positive detector). The message names the Sigmoid and its input z;
    both logits of z (the advised model) are a 2-class model whose argmax is the detector's own p > 0.5."""
    import onnxruntime as ort

    from eecc.driver.pipeline import analyse

    with pytest.raises(EeccError) as err:
        analyse(one_value(sigmoid=True))
    msg = str(err.value)
    assert "a Sigmoid's probability of one class" in msg and "both logits of the Sigmoid's input z" in msg, msg
    assert "torch.cat([-z, z], 1)" in msg and "\n" not in msg
    _, blocks = analyse(one_value(both_logits=True))
    assert blocks.candidates()
    x = datasets.load("digits")["x_test"][:200]  # the 8x8 digits cnn.onnx was made for
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for m in (one_value(sigmoid=True), one_value(both_logits=True))]
    p, both = runs
    assert both.shape == (200, 2) and 0 < (p[:, 0] > 0.5).sum() < 200  # both classes occur
    assert np.array_equal(both.argmax(axis=1), (p[:, 0] > 0.5).astype(np.int64))


def test_integer_input_advice_works(tmp_path, capsys):
    """The advice for a token-id model, followed: exported from the embedding's output on, eecc takes it."""
    assert main(["inspect", str(tmp_path / model(tmp_path, tokens()))]) == 2
    assert "eecc needs a float input" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / model(tmp_path, tokens(embedded=True), "embedded.onnx"))]) == 0
    assert "candidate exit" in capsys.readouterr().out


def test_uint8_image_input_cast_inside_advice_works(tmp_path, capsys):
    """nu13 F4: an image model taking uint8 pixels (Cast + Mul(1/16) inside, as TFLite / Keras conversions write it)
    was refused as "token ids into an embedding". The message now gives the cut at the Cast and --scale 1 for the
    uint8 data; followed as written, the compile works and the cascade's original is the model itself."""
    import re

    import onnxruntime as ort
    from onnx import TensorProto, helper

    m = onnx.load(str(CNN))
    name = m.graph.input[0].name
    m.graph.input[0].CopyFrom(helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["N", 1, 8, 8]))
    m.graph.initializer.append(helper.make_tensor("inv16", TensorProto.FLOAT, [], [1 / 16]))
    m.graph.node.insert(0, helper.make_node("Mul", ["pixels_f", "inv16"], [name]))
    m.graph.node.insert(0, helper.make_node("Cast", ["pixels"], ["pixels_f"], to=TensorProto.FLOAT))
    path = tmp_path / "u8.onnx"
    onnx.save(m, str(path))
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "token ids" not in err and "--scale 1" in err, err
    eval(re.search(r"(onnx\.utils\.extract_model\(.*?\]\))", err).group(1), {"onnx": onnx})  # noqa: S307
    d = datasets.load("digits")
    np.savez(tmp_path / "u8.npz", **{k: np.rint(v * 16).astype(np.uint8) if k.startswith("x_") else v
                                     for k, v in d.items()})
    out = tmp_path / "out"
    assert main(["compile", str(tmp_path / "u8.float.onnx"), "--data", str(tmp_path / "u8.npz"), "--scale", "1",
                 "--no-codegen", "--no-report", "--quiet", "--cache-dir", str(tmp_path / "cache"), "-o", str(out)]) == 0
    measured = json.loads((out / "manifest.json").read_text())["placement"]["metrics"]["measured"]
    sess = ort.InferenceSession(str(CNN), providers=["CPUExecutionProvider"])
    acc = float((sess.run(None, {name: d["x_test"]})[0].argmax(1) == d["y_test"]).mean())
    assert measured["original_accuracy"] == pytest.approx(acc)


def test_one_class_validation_advice_works():
    """A validation split of one class is refused; left out, as the message advises, eecc holds out a stratified
    share of the training data, which holds every class."""
    from eecc.data.splits import normalise

    d = datasets.load("digits")
    one = {**d, "x_val": d["x_val"][d["y_val"] == 3], "y_val": d["y_val"][d["y_val"] == 3]}
    with pytest.raises(EeccError, match="leave x_val/y_val out"):
        normalise(one, input_shape=(1, 8, 8), num_classes=10)
    kept = normalise({k: v for k, v in one.items() if not k.endswith("_val")}, input_shape=(1, 8, 8), num_classes=10)
    assert sorted(np.unique(kept.val.y)) == list(range(10))


def test_several_outputs_advice_works(tmp_path, capsys):
    """cnn.onnx with an inner tensor as a second output is refused; the onnx call the message gives, run as written,
    writes the model with the class scores alone, which eecc takes."""
    import re

    m = onnx.shape_inference.infer_shapes(onnx.load(str(CNN)))
    inner = next(n for n in m.graph.node if n.op_type == "Relu").output[0]
    m.graph.output.insert(0, next(vi for vi in m.graph.value_info if vi.name == inner))
    path = tmp_path / "two.onnx"
    onnx.save(m, str(path))
    assert main(["inspect", str(path)]) == 2
    call = re.search(r"(onnx\.utils\.extract_model\(.*?\]\))", capsys.readouterr().err).group(1)
    eval(call, {"onnx": onnx})  # noqa: S307 (the message's own advice, followed as a user would)
    assert main(["inspect", str(tmp_path / "two.scores.onnx")]) == 0
    assert "candidate exit" in capsys.readouterr().out


def test_channels_last_signal_advice_is_a_transpose_that_works():
    """nu12 F3: [N, 128, 3] signals for a [3, 128] model were told to reshape, which keeps the values' order
    and turned a model right on every sample into one at chance. The model here reads the channel with the
    largest mean (GlobalAveragePool, then the class is that channel): the advised transpose keeps it at 100 %,
    the old reshape advice gives about a third."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from eecc.data.splits import normalise

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    ncl = rng.normal(0, 1, (600, 3, 128)).astype(np.float32)
    ncl[np.arange(600), y] += 1.0  # the labelled channel's mean is the largest
    nlc = ncl.transpose(0, 2, 1)
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["p"]),
                               helper.make_node("Flatten", ["p"], ["logits"])], "argmax_channel",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 128])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])])
    sess = ort.InferenceSession(helper.make_model(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    accuracy = lambda x: float((sess.run(None, {"x": x})[0].argmax(1) == y).mean())  # noqa: E731
    data = lambda x: {"x_train": x[:400], "y_train": y[:400], "x_val": x[400:500], "y_val": y[400:500],  # noqa: E731
                      "x_test": x[500:], "y_test": y[500:]}
    with pytest.raises(EeccError, match=r"channels-last \(NLC\): store x.transpose\(0, 2, 1\)") as err:
        normalise(data(nlc), input_shape=(3, 128), num_classes=3)
    assert "reshape" not in str(err.value)
    fixed = nlc.transpose(0, 2, 1)
    assert normalise(data(fixed), input_shape=(3, 128), num_classes=3).test.x.shape == (100, 3, 128)
    assert accuracy(fixed) == 1.0 and accuracy(nlc.reshape(len(nlc), 3, 128)) < 0.5
