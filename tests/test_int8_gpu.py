"""No int8 stage on a GPU (targets/codegen.py NO_INT8_KINDS): TVM's GPU code computes a QDQ stage in float and does
not reproduce onnxruntime's int8 stage, so the search keeps int8 stages off the Mali / CUDA processors, a platform
that leaves nothing else is refused in one line with the way out, and codegen refuses an int8 GPU stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eecc.cli import main
from eecc.errors import EeccError
from eecc.examples import datasets
from eecc.exits.run import plan_exits
from eecc.search.run import _feasible_placements, device_cost
from eecc.targets import quantize
from eecc.targets.codegen import compile_stages
from eecc.targets.platform import load_platform
from test_int8 import residual_stage

CNN = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"
RK3588 = Path(__file__).parents[1] / "targets" / "platforms" / "rk3588.toml"


def gpu_only(folder: Path) -> Path:
    """rk3588's Mali alone (its [[processors]] entry as shipped)."""
    text = RK3588.read_text()
    gpu = "[[processors]]" + text.split("[[processors]]")[2].split("[[links]]")[0]
    path = folder / "gpu.toml"
    path.write_text('name = "mali-alone"\nshared_memory = true\n' + gpu)
    return path


@pytest.fixture(scope="module")
def cnn_plan():
    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    return plan_exits(CNN)


@pytest.mark.parametrize("target", ["rk3588", "rk3588-cuda"])
def test_the_int8_search_places_no_stage_on_a_gpu(cnn_plan, target):
    platform = load_platform(target)
    gpus = {p.name for p in platform.processors if p.kind in ("mali", "cuda")}

    def placements(fmt):
        return _feasible_placements(cnn_plan, platform, device_cost(cnn_plan, platform, fmt), None, None, fmt)

    fp32, int8 = placements("fp32"), placements("int8")
    on_gpu = [p for p in fp32 if gpus & set(p.processors)]
    assert on_gpu and all(p.fits for p in on_gpu)  # fp32 stages may run there
    assert any(p.fits for p in int8)
    for p in int8:
        if gpus & set(p.processors):
            assert not p.fits and any("int8 stage on" in r and "no int8 GPU stages" in r for r in p.reasons), p
        else:
            assert p.fits == next(q.fits for q in fp32 if (q.exits, q.processors) == (p.exits, p.processors))


def test_int8_on_a_gpu_only_platform_is_refused_in_one_line_and_the_advice_works(tmp_path, capsys):
    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    datasets.save_npz(datasets.load("digits"), tmp_path / "d.npz")
    target = gpu_only(tmp_path)

    def compile_(*extra):
        capsys.readouterr()
        code = main(["compile", str(CNN), "--data", str(tmp_path / "d.npz"), "--target", str(target), "--quiet",
                     "--no-report", "--no-codegen", "--heads", "blueprint", "--cache-dir", str(tmp_path / "c"), *extra])
        return code, capsys.readouterr().err

    code, err = compile_("--quantize", "int8", "-o", str(tmp_path / "int8"))
    assert code == 2 and err.count("\n") == 1, err
    assert "'gpu' (mali)" in err and "compile without --quantize int8" in err, err
    assert not (tmp_path / "int8").exists()
    code, err = compile_("-o", str(tmp_path / "fp32"))  # the advice, followed
    assert code == 0, err
    stages = json.loads((tmp_path / "fp32" / "manifest.json").read_text())["stages"]
    assert {s["target"] for s in stages} == {"gpu"}


def test_codegen_refuses_an_int8_stage_for_a_gpu(tmp_path):
    x = np.random.default_rng(1).standard_normal((32, 3, 16, 16)).astype(np.float32)
    model = quantize.quantize_stage(residual_stage(), {"x": x})
    manifest = {"stages": [{"index": 0, "target": "gpu", "macs": 1, "outputs": {}}]}
    with pytest.raises(EeccError, match=r"stage 0 on 'gpu' is int8.*without --quantize int8"):
        compile_stages([model], manifest, "rk3588", tmp_path / "out")
    assert not (tmp_path / "out" / "gpu").exists()


def test_int8_of_a_gelu_model_on_a_cortex_m_is_refused_before_training(tmp_path, capsys):
    """nu10: a GELU (Erf) model with --quantize int8 on a Cortex-M crashed in TVM's host JIT ("Symbols not found:
    eecc_quantize_s8", SIGSEGV, rc 139) and left its staging folder behind; now one line, rc 2, before training, and
    the advice (fp32) builds."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("Gemm", ["x", "w1", "b1"], ["h"], transB=1), n("Div", ["h", "r2"], ["d"]), n("Erf", ["d"], ["e"]),
             n("Add", ["e", "one"], ["a"]), n("Mul", ["h", "a"], ["m"]), n("Mul", ["m", "half"], ["g"]),
             n("Gemm", ["g", "w2", "b2"], ["h2"], transB=1), n("Relu", ["h2"], ["r"]),
             n("Gemm", ["r", "w3", "b3"], ["y"], transB=1)]
    inits = {"w1": rng.normal(0, .3, (32, 64)), "b1": np.zeros(32), "w2": rng.normal(0, .3, (32, 32)),
             "b2": np.zeros(32), "w3": rng.normal(0, .3, (10, 32)), "b3": np.zeros(10), "r2": np.array(1.4142135),
             "one": np.array(1.0), "half": np.array(0.5)}
    graph = helper.make_graph(nodes, "gelu_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    import onnx

    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "gelu.onnx")
    data = datasets.load("digits")
    np.savez(tmp_path / "d.npz", **{k: (v.reshape(len(v), -1) if k.startswith("x") else v) for k, v in data.items()})

    def compile_(*extra):
        capsys.readouterr()
        code = main(["compile", str(tmp_path / "gelu.onnx"), "--data", str(tmp_path / "d.npz"), "--quiet",
                     "--no-report", "--heads", "blueprint", "--head-budget", "50%", "--cache-dir", str(tmp_path / "c"),
                     *extra])
        return code, capsys.readouterr().err

    code, err = compile_("--quantize", "int8", "--no-codegen", "-o", str(tmp_path / "int8"))  # refused in the search
    assert code == 2 and err.count("\n") == 1, err
    assert "cannot lower Erf (GELU)" in err and "compile without --quantize int8" in err, err
    assert not list(tmp_path.glob("*int8*")) and not list(tmp_path.glob(".*partial"))
    code, err = compile_("--no-codegen", "-o", str(tmp_path / "fp32"))
    assert code == 0, err
