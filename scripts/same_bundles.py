"""Check that two checkouts of eecc write the same bundles for the same seed.

    python scripts/same_bundles.py BEFORE_CHECKOUT AFTER_CHECKOUT [--work DIR] [--variants a,b]

Each checkout compiles the cnn fixture (tests/fixtures/models/cnn.onnx, sklearn digits) through its
own `python -m eecc compile ... --no-codegen --no-report` with a cache of its own, once per variant
(default placement, --search, ensemble + single file, int8, NACHOS, fine-tuning; `--variants emulate`
adds TVM code and QEMU runs of int8 stages). The manifests are
compared field by field, ignoring timings, package versions and every `*_s` wall-clock field; the
stage ONNX files (and any other .onnx in the bundle) are compared byte for byte. Prints one line per
variant and exits 1 on any difference. Used to check the restructure step (behaviour unchanged).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

VARIANTS = {
    "default": [],
    "search": ["--search"],
    "ensemble": ["--search", "--decision", "ensemble", "--single-file"],
    "int8": ["--search", "--quantize", "int8"],
    "nachos": ["--search", "--trainer", "nachos"],
    "finetune": ["--search", "--finetune-epochs", "1"],
    # TVM code for both Cortex-M stages, run under QEMU (slow: minutes); not in the default list
    "emulate": ["--search", "--quantize", "int8", "--emulate"],
}
DEFAULT = "default,search,ensemble,int8,nachos,finetune"
IGNORED = {"timings", "versions", "seconds", "host_wall_s"}


def data_file(work: Path, checkout: Path) -> Path:
    """The digits split of the cnn fixture as an .npz, written once with the checkout's own loader."""
    path = work / "digits.npz"
    if not path.exists():
        code = ("import sys, numpy as np; from eecc.examples import datasets; "
                "np.savez(sys.argv[1], **datasets.load('digits'))")
        subprocess.run([sys.executable, "-c", code, str(path)], check=True,
                       env={**os.environ, "PYTHONPATH": str(checkout)}, cwd=checkout)
    return path


def compile_in(checkout: Path, out: Path, data: Path, flags: list[str]) -> None:
    codegen = [] if "--emulate" in flags else ["--no-codegen"]
    cmd = [sys.executable, "-m", "eecc", "compile", str(checkout / "tests/fixtures/models/cnn.onnx"),
           "--data", str(data), "--target", "psoc6", *codegen, "--no-report", "--quiet", "--force",
           "--cache-dir", str(out.parent / "cache"), "-o", str(out), *flags]
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(checkout)}, cwd=checkout,
                   stdout=subprocess.DEVNULL)


def differences(a, b, where: str = "") -> list[str]:
    """Paths where two JSON values differ, skipping IGNORED keys and wall-clock `*_s` fields."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k in IGNORED or k.endswith("_s"):
                continue
            if k not in a or k not in b:
                out.append(f"{where}/{k}: only in {'after' if k in b else 'before'}")
            else:
                out += differences(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and np.isclose(a, b, rtol=0, atol=0):
        return []
    return [] if a == b else [f"{where}: {str(a)[:60]} != {str(b)[:60]}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/same_bundles"))
    ap.add_argument("--variants", default=DEFAULT, help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = data_file(args.work, args.after.resolve())
    failed = False
    for name in args.variants.split(","):
        outs = {}
        for side in ("before", "after"):
            outs[side] = args.work / side / name
            compile_in(getattr(args, side).resolve(), outs[side], data, VARIANTS[name])
        ma, mb = (json.loads((outs[s] / "manifest.json").read_text()) for s in ("before", "after"))
        diffs = differences(ma, mb)
        onnx_a = sorted(p.name for p in outs["before"].glob("*.onnx"))
        onnx_b = sorted(p.name for p in outs["after"].glob("*.onnx"))
        if onnx_a != onnx_b:
            diffs.append(f"onnx files differ: {onnx_a} vs {onnx_b}")
        same_bytes = [f for f in onnx_a if f in onnx_b
                      and (outs["before"] / f).read_bytes() == (outs["after"] / f).read_bytes()]
        diffs += [f"{f}: bytes differ" for f in onnx_a if f in onnx_b and f not in same_bytes]
        failed |= bool(diffs)
        print(f"{name:9s} {'SAME' if not diffs else 'DIFFERENT'}: manifest fields compared, "
              f"{len(same_bytes)}/{len(onnx_a)} .onnx files byte-identical")
        for d in diffs[:20]:
            print(f"    {d}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
