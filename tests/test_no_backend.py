"""A processor kind eecc has no backend for (cortex-m7, x86) is named as such: by `eecc targets` and, after
`compile --emulate`, in the summary (nu10: a cortex-m7 was accepted and --emulate then silently did nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eecc.cli import main
from eecc.examples import datasets

CNN = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"


def test_a_kind_without_a_backend_is_named_by_targets_and_by_compile_emulate(tmp_path, capsys):
    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    toml = (tmp_path / "m7.toml")
    toml.write_text('name = "m7"\n[[processors]]\nname = "hp"\nkind = "cortex-m7"\nmacs_per_s = 3e8\n'
                    'ram_bytes = 524288\nstorage_bytes = 2097152\nactive_power_w = 0.12\nidle_power_w = 0.002\n')
    capsys.readouterr()
    assert main(["targets", "--target", str(toml)]) == 0
    assert "note: hp (cortex-m7): eecc has no backend for this kind" in capsys.readouterr().out
    datasets.save_npz(datasets.load("digits"), tmp_path / "d.npz")
    code = main(["compile", str(CNN), "--data", str(tmp_path / "d.npz"), "--target", str(toml), "--emulate", "--quiet",
                 "--no-report", "--heads", "blueprint", "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert code == 0 and "warning: --emulate: stage 0 on 'hp' (cortex-m7) was neither built nor emulated" in out, out
