"""Cortex-M stages of the kws and ResNet cascades under QEMU: instructions per MAC, flash, RAM and
agreement with onnxruntime, for eecc's int8 and fp32 builds and for a peer ONNX->C generator
(emx-onnx-cgen, see bench/mcu_peer.py) built with the same gcc flags and counted in the same harness.

Run from the repository root:
    python bench/mcu.py [--models kws,resnet] [--samples 200] [--peer-samples 20] [--out bench/results/mcu.json]
    python bench/mcu.py --search --out bench/results/mcu_search.json   # the cascades `eecc search` builds
    python bench/mcu.py --markdown bench/results/mcu.json [bench/results/mcu_before.json]   # BENCHMARKS.md table

Every stage of each psoc6 cascade is compiled for both cores (as bench/int8.py does). Instructions are
per inference (QEMU -icount, SysTick), divided by the stage's MACs. "exact" = share of samples whose every
int8-derived output (logits, hand-off, exit flag) equals onnxruntime's int8 stage bit for bit, against two
references: "qdq" = the QDQ graph with ORT_DISABLE_ALL (float convolutions between Q/DQ, sums in float32),
"ort" = the session eecc's own runtime opens (runtime/cascade.Cascade: default ORT_ENABLE_ALL, which fuses
the QDQ islands into onnxruntime's integer kernels). Flash: the whole ELF run under QEMU (with the
semihosting harness) and the stage alone (kernels + weights + driver, bench/mcu_flash.py).
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
import mcu_flash  # noqa: E402
import mcu_peer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CPUS = ("cortex-m4", "cortex-m0plus")


def cascade(name: str, cache: Path, out: Path, search: bool = False) -> tuple[dict, list, list, np.ndarray]:
    """(manifest, float stages, int8 stages, test inputs) of the psoc6 int8 cascade of a fixture
    (`search`: as `eecc search` places it, which keeps exits where `compile` may not)."""
    if name == "kws":
        path, data = example("kws")
    else:
        path, data = int8_bench.MODELS / f"{name}.onnx", int8_bench.load(name)
    manifest = compile_model(path, data, CompileOptions(target="psoc6", out=out, cache_dir=str(cache), codegen=False,
                                                        progress=False, quantize="int8", search=search))
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


def fused_runs(models: list, runs: list) -> list[dict]:
    """Outputs of each stage in the onnxruntime session eecc's runtime opens (default optimisation level,
    i.e. onnxruntime's fused integer kernels), on the same stage inputs as the QDQ reference `runs`."""
    import onnxruntime as ort

    outs = []
    for model, (inputs, _) in zip(models, runs):
        sess = ort.InferenceSession(model.SerializeToString(), ort.SessionOptions(), providers=["CPUExecutionProvider"])
        outs.append(dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs))))
    return outs


def eecc_row(model, feed, want, gate, cpu, tmp, fused: dict | None = None) -> dict:
    arts = cortex_m.compile_stage(model, cpu=cpu, out_dir=tmp)
    res = emulate_stage(arts, feed, timeout_s=7200)
    exact, err = agreement(res.outputs, want, gate)
    row = {"instructions": res.instructions, "flash_B": arts.flash_bytes, "ram_B": arts.ram_bytes,
           "stack_used_B": res.stack_used, "exact": exact, "max_abs_err": err, "samples": res.samples,
           "stage_flash": mcu_flash.stage_flash(tmp, arts.cpu)}
    if fused is not None:
        row["exact_ort"] = agreement(res.outputs, fused, gate)[0]
    return row


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
    manifest, f_stages, q_stages, x = cascade(name, args.cache_dir, tmp / f"{name}_bundle", args.search)
    q_runs = reference_runs(q_stages, x[:args.samples])
    q_fused = fused_runs(q_stages, q_runs)
    f_runs = reference_runs(f_stages, x[:args.float_samples])
    p_runs = reference_runs(q_stages, x[:args.peer_samples])
    rows = []
    for k, entry in enumerate(manifest["stages"]):
        gate = (entry.get("outputs") or {}).get("confidence")
        for cpu in CPUS:
            row = {"model": name + (" (search)" if args.search else ""), "stage": k, "deployed_on": entry["target"], "cpu": cpu, "macs": entry["macs"],
                   "ort_vs_qdq_exact": agreement(q_fused[k], q_runs[k][1], gate)[0]}
            row["int8"] = eecc_row(q_stages[k], *q_runs[k], gate, cpu, tmp / f"{name}{k}{cpu}q", q_fused[k])
            if cpu in args.float_cpus.split(","):
                row["float"] = eecc_row(f_stages[k], *f_runs[k], gate, cpu, tmp / f"{name}{k}{cpu}f")
            if not args.no_peer:
                row["peer"] = peer_row(q_stages[k], *p_runs[k], gate, cpu, tmp / f"{name}{k}{cpu}p")
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def cells(r: dict, b: dict | None = None) -> dict[str, str]:
    """Column -> text of one result row (b: the same stage in an earlier run, for the "before" columns)."""
    q, f, p, b = r["int8"], r.get("float"), r.get("peer") or {}, b or {}
    ipm = lambda d, macs=r["macs"]: f"{d['instructions'] / macs:.2f}" if d and "instructions" in d else "-"  # noqa: E731
    kb = lambda d, k: f"{d[k] / 1024:.1f}" if d and k in d else "-"  # noqa: E731
    pct = lambda v: "-" if v is None else f"{100 * v:.1f} %".replace(".0 %", " %")  # noqa: E731 (99.5 % stays 99.5)
    own = lambda d: (d or {}).get("stage_flash", {}).get("stage_B")  # noqa: E731
    mark = f" (of {b['macs']:,} MACs)" if b and b["macs"] != r["macs"] else ""  # the cascade itself changed
    return {
        "model": r["model"], "stage": str(r["stage"]), "core": r["cpu"].replace("cortex-", ""), "MACs": f"{r['macs']:,}",
        "int8 i/MAC before": ipm(b.get("int8"), b.get("macs")) + mark if b else "-", "int8 i/MAC": ipm(q),
        f"{PEER_NAME} i/MAC": ipm(p),
        "fp32 i/MAC before": ipm(b["float"], b["macs"]) + mark if b.get("float") else "-", "fp32 i/MAC": ipm(f),
        "flash KB int8: stage alone / whole ELF": f"{own(q) / 1024:.1f} / {q['flash_B'] / 1024:.1f}" if own(q) else kb(q, "flash_B"),
        "flash int8/fp32: stage alone / whole ELF":
            f"{own(q) / own(f):.2f} / {q['flash_B'] / f['flash_B']:.2f}" if f and own(q) and own(f) else "-",
        "flash KB peer (whole ELF)": kb(p, "flash_B"), "RAM KB eecc / peer": f"{kb(q, 'ram_B')} / {kb(p, 'ram_B')}",
        "int8 bit-exact vs ORT QDQ / vs ORT fused (eecc)": f"{pct(q['exact'])} / {pct(q.get('exact_ort'))} of {q['samples']}",
        "ORT fused = ORT QDQ": pct(r.get("ort_vs_qdq_exact")),
        "peer bit-exact vs ORT QDQ": f"{pct(p['exact'])} of {p['samples']}" if "exact" in p else "-",
        "fp32 max abs err vs ORT": f"{f['max_abs_err']:.1e}" if f else "-",
    }


PEER_NAME = mcu_peer.PEER


def table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Cortex-M stages under QEMU: instructions per MAC, eecc int8 vs {mcu_peer.PEER} "
                    f"{mcu_peer.peer_version()} (same gcc flags, same harness)")
    heads = list(cells(rows[0]))
    for col in heads:
        t.add_column(col, justify="left" if col in ("model", "core") else "right")
    for r in rows:
        t.add_row(*cells(r).values())
    Console(width=250).print(t)


def markdown(result: dict, before: dict | None = None) -> str:
    """The BENCHMARKS.md table from a results file (and the instructions/MAC of an earlier run, if given)."""
    old = {(r["model"], r["stage"], r["cpu"]): r for r in (before or {}).get("rows", [])}
    rows = [cells(r, old.get((r["model"], r["stage"], r["cpu"]))) for r in result["rows"]]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r.values()) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="kws,resnet")
    parser.add_argument("--samples", type=int, default=200, help="int8 samples (bit-exactness)")
    parser.add_argument("--float-samples", type=int, default=20)
    parser.add_argument("--peer-samples", type=int, default=20)
    parser.add_argument("--float-cpus", default="cortex-m4", help="fp32 on the M0+ is soft float and slow")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--search", action="store_true", help="the cascades `eecc search` builds (with exits)")
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
