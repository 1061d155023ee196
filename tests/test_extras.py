"""Optional extras: torch is imported only where training happens, and a missing extra is one line naming it.

"Not installed" is simulated the way Python itself allows: a None entry in sys.modules makes `import torch`
raise ImportError, in a fresh interpreter so nothing already imported hides the import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eecc.errors import EeccError, MissingExtra, require

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "tests" / "fixtures" / "models" / "cnn.onnx"
WITHOUT_TORCH = "import sys; sys.modules['torch'] = None\n"


def _python(code: str, *args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=600)


def test_require_names_the_extra():
    with pytest.raises(MissingExtra) as exc:
        require("eecc_no_such_module", "train", "training exit heads")
    assert isinstance(exc.value, EeccError) and isinstance(exc.value, ImportError)
    assert str(exc.value) == ("training exit heads needs eecc_no_such_module, which is not installed; "
                              "install the 'train' extra: pip install 'eecc[train]'")


def test_cli_and_driver_import_without_torch():
    code = WITHOUT_TORCH + (
        "import eecc.cli, eecc.driver.compile, eecc.exits.run, eecc.search.run, eecc.report.page\n"
        "eecc.cli.build_parser()\n"
        "try:\n"
        "    import eecc.train.fit\n"
        "except ImportError as e:\n"
        "    print('train:', e)\n"
        "print(sorted(m for m in sys.modules if m.startswith('torch') and sys.modules[m] is not None))\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == ("train: training exit heads (eecc.train) needs torch, which is not installed; "
                        "install the 'train' extra: pip install 'eecc[train]'")
    assert lines[1] == "[]"


@pytest.fixture(scope="module")
def digits(digits_folder):
    return digits_folder / "d.npz"


def _compile(digits, out, cache, torch: bool) -> subprocess.CompletedProcess:
    code = ("" if torch else WITHOUT_TORCH) + "import sys\nfrom eecc.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return _python(code, "compile", CNN, "--data", digits, "--target", "psoc6", "--no-codegen", "--no-report",
                   "--quiet", "--json", "--cache-dir", cache, "-o", out, "--objective", "macs")


def test_compile_without_torch_is_one_line_and_then_runs_from_cached_heads(digits, tmp_path):
    cache = tmp_path / "cache"
    cold = _compile(digits, tmp_path / "cold", cache, torch=False)
    assert cold.returncode == 2
    assert cold.stderr.strip().splitlines() == [
        "eecc compile: error: training exit heads (eecc.train) needs torch, which is not installed; "
        "install the 'train' extra: pip install 'eecc[train]'"]
    assert not (tmp_path / "cold").exists()
    with_torch = _compile(digits, tmp_path / "a", cache, torch=True)
    assert with_torch.returncode == 0, with_torch.stderr
    warm = _compile(digits, tmp_path / "b", cache, torch=False)  # heads come from the cache: no training
    assert warm.returncode == 0, warm.stderr
    a, b = json.loads(with_torch.stdout), json.loads(warm.stdout)
    assert a["placement"]["thresholds"] == b["placement"]["thresholds"]
    assert a["placement"]["metrics"]["measured"]["accuracy"] == b["placement"]["metrics"]["measured"]["accuracy"]
