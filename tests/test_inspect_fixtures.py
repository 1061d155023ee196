"""Every fixture model, from both torch exporters: MAC totals agree with fvcore, blocks are sane."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).parent / "fixtures" / "models"
INDEX = MODELS / "index.json"
ENTRIES = json.loads(INDEX.read_text())["fixtures"]
RESIDUAL_BLOCKS = {"resnet": 8}  # residual blocks built by make_fixtures.py


def test_the_zoo_is_complete():
    names = {e["name"] for e in ENTRIES}
    for model in ("cnn", "resnet", "dscnn", "cnn1d"):
        assert {model, f"{model}_dynamo"} <= names, f"run tests/fixtures/make_fixtures.py ({model} missing)"


@pytest.fixture(scope="module", params=[e["name"] for e in ENTRIES])
def inspected(request):
    meta = json.loads((MODELS / f"{request.param}.json").read_text())
    proc = subprocess.run([sys.executable, "-m", "eecc", "inspect", str(MODELS / meta["file"]), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return meta, json.loads(proc.stdout)


def test_macs_match_fvcore_within_one_percent(inspected):
    meta, data = inspected
    assert data["total_macs"] == pytest.approx(meta["macs"], rel=0.01)


def test_cumulative_macs_end_at_the_total(inspected):
    _, data = inspected
    cum = [b["cumulative_macs"] for b in data["blocks"]]
    assert cum == sorted(cum) and cum[-1] == data["total_macs"]
    assert data["total_params"] == pytest.approx(sum(b["params"] for b in data["blocks"]))


def test_candidates_and_head(inspected):
    meta, data = inspected
    candidates = [b for b in data["blocks"] if b["candidate_exit"]]
    assert len(candidates) >= RESIDUAL_BLOCKS.get(meta["model"], 2)
    assert any(op in ("Gemm", "MatMul") for op in data["head"]["ops"])
    if meta["model"] in RESIDUAL_BLOCKS:
        # no exit inside a residual block: every residual block is one block ending in its merge
        residual = [b for b in data["blocks"] if "Add" in b["ops"]]
        assert len(residual) == RESIDUAL_BLOCKS[meta["model"]]
        assert all(b["ops"][-2:] == ["Add", "Relu"] for b in residual)


@pytest.mark.parametrize("base", ["cnn", "cnn1d", "dscnn", "resnet"])
def test_both_exporters_offer_the_same_candidates(base):
    """dynamo writes cnn1d's last MaxPool1d as Unsqueeze/MaxPool/Squeeze and leaves a no-op block in front of the
    head: the block before it holds 99.9 % of the MACs, and an exit there (costing the whole model plus its head)
    is not offered. Both exports of a network get exits at the same MAC counts."""
    from eecc.driver.pipeline import analyse

    offered = []
    for name in (base, f"{base}_dynamo"):
        _, blocks = analyse(MODELS / f"{name}.onnx")
        offered.append([b.cumulative_macs for b in blocks.candidates()])
        assert all(c < 0.99 * blocks.total_macs for c in offered[-1])
    assert offered[0] == offered[1]
