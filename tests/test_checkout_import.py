"""A plain checkout imports eecc.passes/targets/runtime from its own folders, without an install."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_checkout_subpackages_resolve_to_this_checkout(tmp_path):
    code = ("import pkgutil, eecc, eecc.passes, eecc.targets, eecc.runtime\n"
            "print(eecc.passes.__file__); print(eecc.targets.__file__); print(eecc.runtime.__file__)\n"
            "print(sum(1 for _ in pkgutil.walk_packages(eecc.__path__, 'eecc.')))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert [Path(p) for p in out[:3]] == [ROOT / d / "__init__.py" for d in ("passes", "targets", "runtime")]
    assert 0 < int(out[3]) < 500   # walking the package terminates (no eecc.eecc.eecc... recursion)
