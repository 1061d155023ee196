"""Cortex-M stages of the kws and ResNet cascades under QEMU: instructions per MAC, flash, RAM and
agreement with onnxruntime, for eecc's int8 and fp32 builds and for a peer ONNX->C generator
(emx-onnx-cgen, see bench/mcu_peer.py) built with the same gcc flags and counted in the same harness.

Run from the repository root:
    python bench/mcu.py [--models kws,resnet] [--samples 200] [--peer-samples 20] [--out bench/results/mcu.json]
    python bench/mcu.py --markdown bench/results/mcu.json [bench/results/mcu_before.json]   # BENCHMARKS.md table

Both stages of each psoc6 cascade are compiled for both cores (as bench/int8.py does). Instructions are
per inference (QEMU -icount, SysTick), divided by the stage's MACs. "exact" = share of samples whose every
int8-derived output (logits, hand-off, exit flag) equals onnxruntime's int8 stage bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from eecc.driver.compile import CompileOptions, compile_model
from eecc.examples import example
from eecc.runtime.emulate import emulate_stage
from eecc.targets import cortex_m
from eecc.targets.codegen import reference_runs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import int8 as int8_bench  # noqa: E402  (bench/int8.py: fixture data loading)
import mcu_peer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CPUS = ("cortex-m4", "cortex-m0plus")


def cascade(name: str, cache: Path, out: Path) -> tuple[dict, list, list, np.ndarray]:
    """(manifest, float stages, int8 stages, test inputs) of the psoc6 int8 cascade of a fixture."""
    if name == "kws":
        path, data = example("kws")
    else:
        path, data = int8_bench.MODELS / f"{name}.onnx", int8_bench.load(name)
    manifest = compile_model(path, data, CompileOptions(target="psoc6", out=out, cache_dir=str(cache), codegen=False,
                                                        progress=False, quantize="int8"))
    stages = manifest["stages"]
    return (manifest, [onnx.load(str(out / e["float_file"])) for e in stages],
            [onnx.load(str(out / e["file"])) for e in stages], np.asarray(data["x_test"], dtype=np.float32))


def agreement(got: dict, want: dict, gate: str | None) -> tuple[float, float]:
    """(share of samples bit-exact on every output but the float gate confidence, max |error| overall)."""
    n = len(next(iter(want.values())))
    exact, err = np.ones(n, bool), 0.0
    for name, ref in want.items():
        ref = np.asarray(ref).reshape(n, -1)
        mine = np.asarray(got[name]).reshape(n, -1)
        err = max(err, float(np.abs(mine.astype(np.float64) - ref.astype(np.float64)).max()))
        if name != gate:
            exact &= np.all(mine == ref, axis=1)
    return float(exact.mean()), err


def eecc_row(model, feed, want, gate, cpu, tmp) -> dict:
    arts = cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp)
    res = emulate_stage(arts, feed, timeout_s=7200)
    exact, err = agreement(res.outputs, want, gate)
    return {"instructions": res.instructions, "flash_B": arts.flash_bytes, "ram_B": arts.ram_bytes,
            "stack_used_B": res.stack_used, "exact": exact, "max_abs_err": err, "samples": res.samples}


def peer_row(model, feed, want, gate, cpu, tmp) -> dict:
    try:
        info = mcu_peer.compile_peer(model, cpu=cpu, out_dir=tmp)
        res = emulate_stage(tmp, feed, timeout_s=7200)
    except Exception as exc:  # the peer is somebody else's compiler: report what broke, keep benchmarking
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    exact, err = agreement(res.outputs, want, gate)
    return {"instructions": res.instructions, "flash_B": info["flash_bytes"],
            "ram_B": info["static_ram_bytes"] + res.stack_used, "exact": exact, "max_abs_err": err,
            "samples": res.samples}


def bench(name: str, args, tmp: Path) -> list[dict]:
    manifest, f_stages, q_stages, x = cascade(name, args.cache_dir, tmp / f"{name}_bundle")
    q_runs = reference_runs(q_stages, x[:args.samples])
    f_runs = reference_runs(f_stages, x[:args.float_samples])
    p_runs = reference_runs(q_stages, x[:args.peer_samples])
    rows = []
    for k, entry in enumerate(manifest["stages"]):
        gate = (entry.get("outputs") or {}).get("confidence")
        for cpu in CPUS:
            row = {"model": name, "stage": k, "deployed_on": entry["target"], "cpu": cpu, "macs": entry["macs"]}
            row["int8"] = eecc_row(q_stages[k], *q_runs[k], gate, cpu, tmp / f"{name}{k}{cpu}q")
            if cpu in args.float_cpus.split(","):
                row["float"] = eecc_row(f_stages[k], *f_runs[k], gate, cpu, tmp / f"{name}{k}{cpu}f")
            if not args.no_peer:
                row["peer"] = peer_row(q_stages[k], *p_runs[k], gate, cpu, tmp / f"{name}{k}{cpu}p")
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Cortex-M stages under QEMU: instructions per MAC, eecc int8 vs {mcu_peer.PEER} "
                    f"{mcu_peer.peer_version()} (same gcc flags, same harness)")
    for col in ("model", "stage", "cpu", "MACs", "eecc int8 i/MAC", "peer i/MAC", "peer/eecc", "eecc fp32 i/MAC",
                "flash int8/fp32", "flash KB eecc|peer", "RAM KB eecc|peer", "exact eecc|peer", "max|err| fp32"):
        t.add_column(col, justify="left" if col in ("model", "cpu") else "right")
    for r in rows:
        q, f, p = r["int8"], r.get("float"), r.get("peer") or {}
        ipm = lambda d: d["instructions"] / r["macs"]  # noqa: E731
        t.add_row(r["model"], str(r["stage"]), r["cpu"].replace("cortex-", ""), f"{r['macs']:,}", f"{ipm(q):.2f}",
                  f"{ipm(p):.2f}" if "instructions" in p else "-",
                  f"{p['instructions'] / q['instructions']:.1f}x" if "instructions" in p else "-",
                  f"{ipm(f):.2f}" if f else "-", f"{q['flash_B'] / f['flash_B']:.2f}" if f else "-",
                  f"{q['flash_B'] / 1024:.1f} | " + (f"{p['flash_B'] / 1024:.1f}" if "flash_B" in p else "-"),
                  f"{q['ram_B'] / 1024:.1f} | " + (f"{p['ram_B'] / 1024:.1f}" if "ram_B" in p else "-"),
                  f"{100 * q['exact']:.0f}% | " + (f"{100 * p['exact']:.0f}%" if "exact" in p else "-"),
                  f"{f['max_abs_err']:.1e}" if f else "-")
    Console(width=200).print(t)


def markdown(result: dict, before: dict | None = None) -> str:
    """The BENCHMARKS.md table from a results file (and the instructions/MAC of an earlier run, if given)."""
    old = {(r["model"], r["stage"], r["cpu"]): r for r in (before or {}).get("rows", [])}
    head = ["model", "stage", "core", "MACs", "int8 i/MAC before", "int8 i/MAC", f"{result['peer']} i/MAC",
            "fp32 i/MAC before", "fp32 i/MAC", "flash int8/fp32", "flash KB eecc / peer", "RAM KB eecc / peer",
            "int8 bit-exact eecc / peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        q, f, p, b = r["int8"], r.get("float"), r.get("peer") or {}, old.get((r["model"], r["stage"], r["cpu"]), {})
        ipm = lambda d, macs=r["macs"]: f"{d['instructions'] / macs:.2f}" if d and "instructions" in d else "-"  # noqa: E731
        kb = lambda d, k: f"{d[k] / 1024:.1f}" if k in d else "-"  # noqa: E731
        pct = lambda d: f"{100 * d['exact']:.0f} % of {d['samples']}" if "exact" in d else "-"  # noqa: E731
        mark = f" (of {b['macs']:,} MACs)" if b and b["macs"] != r["macs"] else ""  # the cascade itself changed
        lines.append("| " + " | ".join([
            r["model"], str(r["stage"]), r["cpu"].replace("cortex-", ""), f"{r['macs']:,}",
            ipm(b.get("int8"), b.get("macs")) + mark, ipm(q), ipm(p), (ipm(b["float"], b["macs"]) + mark) if b.get("float") else "-", ipm(f), f"{q['flash_B'] / f['flash_B']:.2f}" if f else "-",
            f"{kb(q, 'flash_B')} / {kb(p, 'flash_B')}", f"{kb(q, 'ram_B')} / {kb(p, 'ram_B')}",
            f"{pct(q)} / {pct(p)}"]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="kws,resnet")
    parser.add_argument("--samples", type=int, default=200, help="int8 samples (bit-exactness)")
    parser.add_argument("--float-samples", type=int, default=20)
    parser.add_argument("--peer-samples", type=int, default=20)
    parser.add_argument("--float-cpus", default="cortex-m4", help="fp32 on the M0+ is soft float and slow")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".eecc-cache" / "bench-mcu")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mcu.json")
    parser.add_argument("--markdown", nargs="+", type=Path, metavar="JSON",
                        help="only print the BENCHMARKS.md table of a results file (optionally: then an earlier one)")
    args = parser.parse_args()
    if args.markdown:
        runs = [json.loads(p.read_text()) for p in args.markdown]
        print(markdown(runs[0], runs[1] if len(runs) > 1 else None))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="eecc-mcu-") as tmp:
        for name in args.models.split(","):
            rows += bench(name, args, Path(tmp))
    table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"peer": mcu_peer.PEER, "peer_version": mcu_peer.peer_version(),
                                    "load_average": os.getloadavg(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
