"""`eecc inspect`: the JSON contract and one-line errors with exit code 2 for bad models."""

import json
import subprocess
import sys

import onnx
import pytest

from golden import parse
from test_fuse_blocks import NO_HEAD, RESIDUAL

TWO_INPUTS = RESIDUAL.replace("(float[N, 3, 8, 8] input)", "(float[N, 3, 8, 8] input, float[N, 3, 8, 8] other)")


def eecc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "eecc", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_json_contract(tmp_path):
    path = tmp_path / "residual.onnx"
    onnx.save(parse(RESIDUAL), str(path))
    proc = eecc("inspect", path, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"model", "total_macs", "total_params", "blocks", "head", "output_kind", "normalized",
                         "head_budget", "head_budget_advice"}
    assert set(data["head"]) == {"ops", "input", "macs"}
    keys = {"index", "ops", "output", "shape", "macs", "cumulative_macs", "params", "activation_bytes",
            "candidate_exit", "head_fits", "no_head"}
    assert all(set(b) == keys for b in data["blocks"])
    cum = [b["cumulative_macs"] for b in data["blocks"]]
    assert cum == sorted(cum) and cum[-1] == data["total_macs"]
    assert sum(b["macs"] for b in data["blocks"]) == data["total_macs"]
    assert sum(b["params"] for b in data["blocks"]) == data["total_params"]
    assert [b["output"] for b in data["blocks"] if b["candidate_exit"]] == ["r0", "r2", "mp"]


def test_table_output(tmp_path):
    path = tmp_path / "residual.onnx"
    onnx.save(parse(RESIDUAL), str(path))
    proc = eecc("inspect", path)
    assert proc.returncode == 0, proc.stderr
    assert "3 candidate exits" in proc.stdout and "head blueprint: GlobalAveragePool → Flatten → Gemm" in proc.stdout


def _write(tmp_path, kind):
    path = tmp_path / f"{kind}.onnx"
    if kind == "text":
        path.write_text("graph { not onnx }\n")
    elif kind == "truncated":
        data = parse(RESIDUAL).SerializeToString()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "two_inputs":
        onnx.save(parse(TWO_INPUTS.replace("c0 = Conv<pads = [1, 1, 1, 1]>(input, w0)",
                                           "sum = Add(input, other)\n    c0 = Conv<pads = [1, 1, 1, 1]>(sum, w0)")),
                  str(path))
    elif kind == "no_head":
        onnx.save(parse(NO_HEAD), str(path))
    elif kind == "missing":
        pass
    return path


@pytest.mark.parametrize("kind, words", [
    ("text", "not a readable ONNX model"),
    ("truncated", "truncated"),
    ("two_inputs", "2 graph inputs"),
    ("no_head", "no classifier head"),
    ("missing", "does not exist"),
])
def test_bad_models_give_one_line_and_exit_2(tmp_path, kind, words):
    path = _write(tmp_path, kind)
    proc = eecc("inspect", path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_bad_input_shape_option(tmp_path):
    path = tmp_path / "residual.onnx"
    onnx.save(parse(RESIDUAL), str(path))
    proc = eecc("inspect", path, "--input-shape", "3,eight,8")
    assert proc.returncode == 2 and "--input-shape" in proc.stderr
