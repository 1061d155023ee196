"""Joint fine-tuning (issue 10): the ONNX→torch interpreter, write-back by name, and `compile --finetune-epochs`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from eecc.examples import datasets
from eecc.model import ir
from eecc.driver.compile import CompileOptions, compile_model
from eecc.search.search import SearchOptions
from eecc.errors import EeccError
from eecc.runtime.cascade import Cascade
from eecc.passes.normalize_output import normalize_output
from eecc.train.finetune import OnnxModule, check_supported, finetune_graph, write_weights

MODELS = Path(__file__).parent / "fixtures" / "models"
FIXTURES = sorted(p.stem for p in MODELS.glob("*.onnx"))


def _ort(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _sample(graph: gs.Graph, n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, *graph.inputs[0].shape[1:])).astype(np.float32)


def test_every_fixture_is_covered():
    assert {"cnn", "cnn_dynamo", "resnet", "resnet_dynamo", "cnn1d_dynamo"} <= set(FIXTURES)


@pytest.mark.parametrize("name", FIXTURES)
def test_interpreter_reproduces_onnxruntime(name):
    graph = ir.load(MODELS / f"{name}.onnx")
    x = _sample(graph)
    ref = _ort(onnx.load(str(MODELS / f"{name}.onnx")), x)
    with torch.no_grad():
        out = OnnxModule(graph)(torch.from_numpy(x))
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        np.testing.assert_allclose(o.numpy(), r, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", FIXTURES)
def test_gradients_reach_every_initializer(name):
    graph = ir.load(MODELS / f"{name}.onnx")
    module = OnnxModule(graph)
    floats = {t.name for t in graph.tensors().values()
              if isinstance(t, gs.Constant) and t.values.dtype.kind == "f"}
    assert set(module.keys) == floats
    logits = module(torch.from_numpy(_sample(graph, 16)))[0]
    torch.nn.functional.cross_entropy(logits, torch.arange(16) % logits.shape[1]).backward()
    for name_, key in module.keys.items():
        grad = module.params[key].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name_


def _constant_weight_model() -> onnx.ModelProto:
    """Gemm whose weight is a Constant node (what onnx2torch cannot train), then a Clip."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w_value"), name="const_w"),
             helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, name="gemm"),
             helper.make_node("Clip", ["h", "lo", "hi"], ["logits"], name="clip")]
    inits = [numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b"),
             numpy_helper.from_array(np.array(-1.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(1.5, np.float32), "hi")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_constant_node_weights_are_trained_and_written_back():
    model = _constant_weight_model()
    graph = gs.import_onnx(model)
    x = np.random.default_rng(2).standard_normal((64, 4)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(OnnxModule(graph)(torch.from_numpy(x))[0].numpy(), _ort(model, x)[0], atol=1e-5)
    y = np.random.default_rng(3).integers(0, 3, 64)
    tuned, info = finetune_graph(graph, x, y, epochs=2, lr=1e-2, batch_size=16)
    tuned_model = gs.export_onnx(tuned)
    onnx.checker.check_model(tuned_model, full_check=True)
    const = next(n for n in tuned_model.graph.node if n.op_type == "Constant")
    old = numpy_helper.to_array(model.graph.node[0].attribute[0].t)
    assert not np.allclose(numpy_helper.to_array(const.attribute[0].t), old)  # the Constant node itself moved
    bounds = {t.name: float(numpy_helper.to_array(t)) for t in tuned_model.graph.initializer if t.name in ("lo", "hi")}
    assert bounds == {"lo": -1.0, "hi": 1.5}  # Clip bounds are not weights
    with torch.no_grad():
        np.testing.assert_allclose(OnnxModule(tuned)(torch.from_numpy(x))[0].numpy(), _ort(tuned_model, x)[0],
                                   atol=1e-5)
    assert len(info["loss_per_epoch"]) == 2


def test_write_weights_rejects_a_wrong_shape_and_leaves_the_input_alone():
    graph = ir.load(MODELS / "cnn.onnx")
    name = next(t.name for t in graph.tensors().values() if isinstance(t, gs.Constant))
    before = graph.tensors()[name].values.copy()
    with pytest.raises(EeccError, match=name):
        write_weights(graph, {name: np.zeros((1, 2, 3), np.float32)})
    new = write_weights(graph, {name: before + 1})
    np.testing.assert_array_equal(graph.tensors()[name].values, before)
    np.testing.assert_array_equal(new.tensors()[name].values, before + 1)


def test_unsupported_op_names_the_node():
    g = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"], name="the_hardmax")], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])])
    with pytest.raises(EeccError, match="the_hardmax.*Hardmax"):
        OnnxModule(gs.import_onnx(helper.make_model(g)))


def test_negative_epochs_fail_before_any_work(tmp_path):
    options = CompileOptions(target="psoc6", out=tmp_path / "b", codegen=False, progress=False, finetune_epochs=-1)
    with pytest.raises(EeccError, match="finetune-epochs"):
        compile_model(MODELS / "cnn.onnx", {}, options)
    assert not (tmp_path / "b").exists()


# ---- compile --finetune-epochs 1 on the digits CNN --------------------------------------------------

@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    data = datasets.load("digits")
    options = CompileOptions(target="psoc6", out=root / "bundle", search=True, cache_dir=str(root / "cache"),
                             search_options=SearchOptions(objective="macs"),
                             codegen=False, progress=False, finetune_epochs=1)
    return data, options, compile_model(MODELS / "cnn.onnx", data, options)


def test_one_epoch_keeps_or_improves_the_exits(tuned):
    data, options, manifest = tuned
    info = manifest["finetune"]
    before, after = info["val_accuracy_before"], info["val_accuracy_after"]
    assert len(before) == len(after) == len(manifest["stages"])  # chosen exits + the final classifier
    assert all(a >= b for a, b in zip(after[:-1], before[:-1])), (before, after)
    assert info["epochs"] == 1 and info["grid_size"] > 13  # a finer grid than the search's 13 thresholds
    assert manifest["placement"]["thresholds"] == info["thresholds_after"]
    measured = manifest["placement"]["metrics"]["measured"]
    assert measured["accuracy"] == pytest.approx(info["cascade_after"]["accuracy"])
    assert measured["agreement_with_search"] == 1.0  # the re-search ran on the fine-tuned graph's own logits


@pytest.fixture(scope="module")
def tuned_energy(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune_energy")
    options = CompileOptions(target="psoc6", out=root / "bundle", search=True, cache_dir=str(root / "cache"),
                             codegen=False, progress=False, finetune_epochs=1)  # objective energy (the default)
    return compile_model(MODELS / "cnn.onnx", datasets.load("digits"), options)


def test_the_search_prediction_is_the_one_of_what_is_built(tuned_energy):
    """nu13 F9: after --finetune-epochs the summary's "search's prediction (cost model)" line was the search
    before fine-tuning (0.029 mJ beside 0.131 mJ built, thresholds 0.212 vs 0.458), unlabelled."""
    manifest = tuned_energy
    info, dep = manifest["finetune"], manifest["deployment"]
    assert info["thresholds_before"] != info["thresholds_after"]  # else the old figures would be the new ones
    assert dep["chosen"]["thresholds"] == manifest["placement"]["thresholds"] == info["thresholds_after"]
    measured = manifest["placement"]["metrics"]["measured"]  # fp32: cost model at the measured exit rates
    assert measured["agreement_with_search"] == 1.0
    assert dep["chosen"]["mean_energy_j"] == pytest.approx(measured["mean_energy_j"], rel=1e-6)
    assert dep["chosen"]["mean_latency_s"] == pytest.approx(measured["mean_latency_s"], rel=1e-6)
    assert dep["chosen"]["accuracy"] == pytest.approx(measured["accuracy"])
    assert manifest["placement"]["metrics"]["search"]["mean_energy_j"] == dep["chosen"]["mean_energy_j"]
    assert "thresholds re-searched after fine-tuning" in dep["predicted_line"]


def test_no_fine_skips_the_second_pass_of_the_re_search_after_fine_tuning(tuned, tmp_path, capsys):
    """fx16's help walk: --no-fine ("skip the finer second threshold pass") was overridden after --finetune-epochs,
    whose re-search always ran that pass (method '...+fine+grid26+finetune'); it still searches the 26-point grid."""
    from eecc.cli import main

    data, options, manifest = tuned  # without --no-fine: the second pass ran
    assert manifest["placement"]["metrics"]["search"]["method"] == "exact+fine+grid26+finetune"
    np.savez(tmp_path / "digits.npz", **data)
    capsys.readouterr()
    assert main(["compile", str(MODELS / "cnn.onnx"), "--data", str(tmp_path / "digits.npz"), "--target", "psoc6",
                 "--search", "--objective", "macs", "--finetune-epochs", "1", "--no-fine", "--no-codegen",
                 "--no-report", "--quiet", "--cache-dir", options.cache_dir, "-o", str(tmp_path / "b")]) == 0
    built = json.loads((tmp_path / "b" / "manifest.json").read_text())
    method = built["placement"]["metrics"]["search"]["method"]
    assert method == "exact+grid26+finetune", method  # no "+fine" between the method and the grid
    assert built["finetune"]["grid_size"] == 26
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    assert "also in the re-search after --finetune-epochs" in " ".join(capsys.readouterr().out.split())


def test_written_graphs_pass_the_checker_and_hold_new_weights(tuned):
    data, options, manifest = tuned
    tuned_model = onnx.load(str(options.out / manifest["finetune"]["model"]))
    onnx.checker.check_model(tuned_model, full_check=True)
    for entry in manifest["stages"]:
        onnx.checker.check_model(onnx.load(str(options.out / entry["file"])), full_check=True)
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(MODELS / "cnn.onnx")).graph.initializer}
    moved = [n for n, t in ((t.name, numpy_helper.to_array(t)) for t in tuned_model.graph.initializer)
             if n in original and not np.array_equal(t, original[n])]
    assert len(moved) == len(original)  # every backbone weight was fine-tuned


def test_no_exit_thresholds_reproduce_the_finetuned_model(tuned, tmp_path):
    data, options, manifest = tuned
    never = tmp_path / "never"
    shutil.copytree(options.out, never)
    for entry in manifest["stages"][:-1]:
        stage = onnx.load(str(never / entry["file"]))
        (threshold,) = [t for t in stage.graph.initializer if t.name.endswith("threshold")]
        threshold.CopyFrom(numpy_helper.from_array(np.array(2.0, np.float32), threshold.name))
        onnx.save(stage, str(never / entry["file"]))
    res = Cascade(never, optimize=False).run(data["x_test"])
    finetuned = _ort(onnx.load(str(never / manifest["finetune"]["model"])), data["x_test"])[0]
    original = _ort(onnx.load(str(MODELS / "cnn.onnx")), data["x_test"])[0]
    assert (res.exit_stage == len(manifest["stages"]) - 1).all()
    np.testing.assert_allclose(res.logits, finetuned, atol=1e-5, rtol=0)
    assert np.abs(finetuned - original).max() > 1e-3  # the invariant is about the fine-tuned weights
    assert json.loads((options.out / "manifest.json").read_text())["finetune"]["model"] == "finetuned.onnx"


def test_read_only_rows_from_a_memory_mapped_npz_raise_no_torch_warning(tmp_path):
    """`compile --finetune-epochs N --quiet` printed torch's "The given NumPy array is not writable" UserWarning:
    an uncompressed .npz is memory-mapped read-only. torch warns once per process, so a fresh one checks it."""
    import subprocess
    import sys

    data = datasets.load("digits")
    np.savez(tmp_path / "d.npz", x_train=data["x_train"][:64], y_train=data["y_train"][:64],  # with x_val: the
             x_val=data["x_val"][:20], y_val=data["y_val"][:20])  # train rows are slices of the memmap, not copies
    script = f"""
import warnings
from eecc.data.splits import load_npz
from eecc.model import ir
from eecc.train.finetune import finetune_graph
warnings.simplefilter("always")
split = load_npz({str(tmp_path / "d.npz")!r}, input_shape=(1, 8, 8), num_classes=10).train
assert not split.rows(0, 8).flags.writeable  # what the compile step hands finetune_graph
finetune_graph(ir.load({str(MODELS / "cnn.onnx")!r}), split.rows, split.y, epochs=1, batch_size=32)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert "not writable" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr


def test_a_softmax_output_model_is_interpreted_after_its_load_rewrite(tmp_path):
    """nu12 F8: a model exported with a Softmax output is loaded with that Softmax as LogSoftmax (README
    "Probabilities vs logits"); --finetune-epochs refused it naming LogSoftmax, an op the user's model lacks."""
    model = onnx.load(str(MODELS / "cnn.onnx"))
    out = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Softmax", [out], ["probs"], name="/Softmax", axis=-1))
    model.graph.output[0].name = "probs"
    onnx.save(model, tmp_path / "softmax.onnx")
    graph = normalize_output(ir.load(tmp_path / "softmax.onnx"))  # as the analysis pipeline loads it
    assert "LogSoftmax" in {n.op for n in graph.nodes}
    check_supported(graph)
    x = _sample(graph)
    with torch.no_grad():
        (got,) = OnnxModule(graph)(torch.from_numpy(x))
    np.testing.assert_allclose(np.exp(got.numpy()), _ort(model, x)[0], atol=1e-5, rtol=0)
