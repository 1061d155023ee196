"""The README's examples work as written: its platform TOML validates, it names every processor kind the
code accepts, and it says how to run a bundle of the kws example."""

from __future__ import annotations

import re
from pathlib import Path

from eecc.cli import main
from eecc.targets.platform import KINDS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _toml_blocks() -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```", README, flags=re.S | re.M)


def test_readme_platform_toml_validates(tmp_path, capsys):
    blocks = _toml_blocks()
    assert blocks, "README has no ```toml block"
    for k, text in enumerate(blocks):
        (tmp_path / f"readme{k}.toml").write_text(text)
        capsys.readouterr()
        assert main(["targets", "--target", str(tmp_path / f"readme{k}.toml")]) == 0, capsys.readouterr().err


def test_readme_lists_every_processor_kind():
    line = next(ln for ln in _toml_blocks()[0].splitlines() if ln.startswith("kind ="))
    listed = {k.strip() for k in line.split("#", 1)[1].split("|")}
    assert listed == set(KINDS)


def test_readme_says_how_to_run_the_kws_bundle():
    assert "eecc run OUT --example kws" in README and "kws-v1-" in README
