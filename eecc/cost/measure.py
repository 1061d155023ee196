"""Measurement units for the cost model: a model cut at every candidate exit (each piece with a head and a
gate, as in a bundle), compiled with TVM and run under QEMU per Cortex-M kind and numeric format.

A unit's instruction count is the mean over `SAMPLES` inferences of SysTick ticks / 0.8 (runtime/emulate.py).
Counts are cached on disk under `<cache>/cost/<kernels>/<unit hash>.<cpu>.<format>.json`, where
`kernels` (kernels_id) hashes what a count depends on: the Cortex-M stage compiler (targets/cortex_m.py and
every eecc.targets module it imports: TVM import, int8 lowering, eecc's kernels, the C driver emission),
the quantiser of the int8 units, the C driver files linked into the ELF, and the TVM version. The measured
region is the whole `eecc_run` (driver loop + kernels), so the driver's emission stays in; other backends,
platform files, docstrings, comments, formatting and import lines do not count. New kernels (a rewritten int8
lowering, another TVM) are measured afresh, never mixed.
"""

from __future__ import annotations

import ast
import hashlib
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from eecc.model import ir
from eecc.cost.features import block, graph_features

CPUS = ("cortex-m0plus", "cortex-m4")
FORMATS = ("fp32", "int8")
SAMPLES = 2
TARGETS = Path(__file__).resolve().parents[2] / "targets"
# What a measured count depends on: the stage's compilation (cortex_m.compile_stage) and, in int8, the
# quantiser that makes the measured QDQ models; followed through every eecc.targets module they import.
ROOTS = ("cortex_m", "quantize")
# Modules reached from the roots that never shape a Cortex-M stage's instructions (codegen: only its
# onnxruntime reference runs are used, for calibration; platform: TOML reading) and other backends.
NOT_KERNELS = {"platform", "codegen", "cortex_a", "mali", "cuda", "gpu_plan", "gpu_schedule"}
# C sources linked into a one-stage Cortex-M ELF or counting it under QEMU: not the host / OpenCL tools, not
# the several-stages-on-one-core program (built only with EECC_PROGRAM; the units are one-stage ELFs).
NOT_LINKED = {"clbuild.c", "host_main.c", "program_main.inc", "program_run.c", "eecc_program.h"}


@dataclass
class Unit:
    model: str          # the model it was cut from (the held-out group in a leave-one-out check)
    index: int          # stage index in the all-cuts split
    float_model: onnx.ModelProto


def _python_source(path: Path) -> tuple[str, set[str]]:
    """(normalised code, eecc.targets modules it imports): the AST without docstrings and import
    statements, so comments, docstrings, formatting and moved imports do not count."""
    tree = ast.parse(path.read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("eecc.targets", "targets"):
            used |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("eecc.targets.", "targets.")):
            used.add(node.module.split(".")[-1])
        elif isinstance(node, ast.Import):
            used |= {a.name.split(".")[-1] for a in node.names if a.name.startswith(("eecc.targets.", "targets."))}
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body \
                and isinstance(node.body[0], ast.Expr) and isinstance(getattr(node.body[0], "value", None), ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
    for node in ast.walk(tree):
        if hasattr(node, "body") and isinstance(node.body, list):
            node.body = [n for n in node.body if not isinstance(n, (ast.Import, ast.ImportFrom))] or [ast.Pass()]
    return ast.dump(tree), used


def _c_source(path: Path) -> str:
    """C without comments and with whitespace collapsed."""
    text = re.sub(r"/\*.*?\*/|//[^\n]*", " ", path.read_text(), flags=re.S)
    return " ".join(text.split())


def kernels_files(roots=ROOTS, not_kernels=NOT_KERNELS, linked=None) -> list[Path]:
    """The eecc/targets files a Cortex-M count depends on: the modules reached from `roots` (less `not_kernels`)
    and the C driver files (less NOT_LINKED; or only those named in `linked`)."""
    todo, seen = list(roots), set()
    while todo:
        name = todo.pop()
        if name in seen or name in not_kernels or not (TARGETS / f"{name}.py").is_file():
            continue
        seen.add(name)
        todo += sorted(_python_source(TARGETS / f"{name}.py")[1])
    c_files = [p for p in sorted((TARGETS / "cdriver").iterdir()) if p.is_file()
               and (p.name in linked if linked is not None else p.name not in NOT_LINKED)]
    return [TARGETS / f"{n}.py" for n in sorted(seen)] + c_files


def kernels_id(files: list[Path] | None = None) -> str:
    """Hash of the code that turns a stage into counted Cortex-M instructions (kernels_files, or `files`;
    normalised: docstrings, comments, formatting and import lines do not count) + the TVM version."""
    h = hashlib.sha256()
    for path in kernels_files() if files is None else files:
        h.update(path.relative_to(TARGETS).as_posix().encode())
        h.update((_python_source(path)[0] if path.suffix == ".py" else _c_source(path)).encode())
    try:
        from importlib.metadata import version
        h.update(version("apache-tvm").encode())
    except Exception:  # no TVM: nothing can be measured anyway
        h.update(b"no-tvm")
    return h.hexdigest()[:16]


def dummy_heads(specs, seed: int = 0):
    """Heads with random weights (any design: gap, flat, mlp): cost depends on the head's shapes, not on its values."""
    from eecc.exits.heads import ExitHead, HeadWeights

    rng = np.random.default_rng(seed)
    out = []
    for s in specs:
        rank, c = len(s.in_shape) - 1, s.width or s.channels
        fc_in = {"gap": c, "flat": c * s.positions, "mlp": s.hidden}[s.kind]
        w = {}  # drawn in this order (conv, then fc) so the blueprint units keep their bytes and cached counts
        if s.width:
            w |= {"conv_w": rng.normal(size=(s.width, s.channels, *[1] * rank)), "conv_b": np.zeros(s.width)}
        w |= {"fc_w": rng.normal(size=(s.num_classes, fc_in)), "fc_b": np.zeros(s.num_classes)}
        if s.kind == "mlp":
            w |= {"hid_w": rng.normal(size=(s.hidden, s.channels * s.positions)), "hid_b": np.zeros(s.hidden)}
        out.append(ExitHead(s, HeadWeights(**{k: v.astype(np.float32) for k, v in w.items()})))
    return out


def family_heads(plan, op: str, largest: bool):
    """Per candidate, the flat linear head with `op` ("avg" / "max") pooling to the largest (else smallest)
    map of eecc/exits/family.py's family of its blueprint, else the blueprint: heads the search builds too."""
    from eecc.exits.family import family

    out = []
    for bp in plan.design.heads:
        flat = [s for s in family(bp) if s.kind == "flat" and s.pool_op == op and not s.width]
        out.append((max if largest else min)(flat, key=lambda s: s.positions) if flat else bp)
    return out


def all_cut_stages(plan, *, metric: str = "max_softmax", specs=None):
    """The plan's graph cut at every designed head (or at `specs`, one head spec per candidate): stage k =
    block(s) up to candidate k + its head + gate."""
    from eecc.driver.pipeline import make_stages
    from eecc.passes.insert_exits import insert_exits

    heads = dummy_heads(plan.design.heads if specs is None else specs)
    graph = insert_exits(plan.graph, heads=heads)
    cuts = [h.spec.tensor for h in heads]
    return cuts, make_stages(graph, cuts=cuts, processors=[f"p{k}" for k in range(len(cuts) + 1)],
                             thresholds=[0.5] * len(cuts), metric=metric)


def units_of(name: str, model_path) -> list[Unit]:
    """Every piece of the model cut at every candidate (index k; with the family's flat heads, average-pooled
    to the larger map and max-pooled to the smaller, instead of the blueprints: 300 + k, 400 + k), both stages of the cascade with one exit at candidate
    c (1000 + 10 c + k), and the three of the one cut at the thirds (200 + k): stages of several blocks, where
    hand-offs are rarer than blocks, must be in the fit too."""
    from eecc.driver.pipeline import make_stages
    from eecc.exits.run import plan_exits
    from eecc.passes.insert_exits import insert_exits

    plan = plan_exits(model_path)
    _, stages = all_cut_stages(plan)
    units = [Unit(name, k, ir.to_model(s)) for k, s in enumerate(stages)]
    heads = dummy_heads(plan.design.heads)
    graph, n = insert_exits(plan.graph, heads=heads), len(heads)
    for base, picks in [(1000 + 10 * c, [c]) for c in range(n)] + [(200, [n // 3, (2 * n) // 3])]:
        cuts = [heads[i].spec.tensor for i in sorted(set(picks))]
        split = make_stages(graph, cuts=cuts, processors=[f"p{k}" for k in range(len(cuts) + 1)],
                            thresholds=[0.5] * len(cuts))
        units += [Unit(name, base + k, ir.to_model(s)) for k, s in enumerate(split)]
    for base, op, largest in ((300, "avg", True), (400, "max", False)):  # heads of the family the search builds
        _, stages = all_cut_stages(plan, specs=family_heads(plan, op, largest))  # too (last: earlier units keep
        units += [Unit(name, base + k, ir.to_model(s)) for k, s in enumerate(stages[:-1])]  # their inputs)
    return units


def measure_units(units: list[Unit], cpu: str, fmt: str, cache: Path, *, progress=None) -> list[dict]:
    """One row per unit: {"model", "index", "cpu", "format", "features", "instructions"} (cached). `cpu` a
    Cortex-M kind, or aarch64.KIND ("cortex-a": built by targets/cortex_a.py for the A76, counted under qemu-aarch64,
    cached apart under its own kernels id, features its own block only)."""
    from eecc.cost import aarch64
    from eecc.targets import cortex_a, cortex_m
    from eecc.targets.codegen import reference_runs
    from eecc.targets.quantize import quantize_stages
    from eecc.runtime.emulate import emulate_stage

    a = cpu == aarch64.KIND
    folder = Path(cache) / "cost" / (f"{aarch64.KIND}-{fmt}-{aarch64.kernels_id(fmt)}" if a else kernels_id())
    compile_stage = (lambda m, out_dir: cortex_a.compile_stage(m, cpu=aarch64.CPU, out_dir=out_dir)) if a else \
        (lambda m, out_dir: cortex_m.compile_stage(m, cpu=cpu, out_dir=out_dir))
    columns = block(cpu, fmt) if a else slice(None)
    folder.mkdir(parents=True, exist_ok=True)
    rows, by_model = [], {}
    for u in units:
        by_model.setdefault(u.model, []).append(u)
    for model, group in by_model.items():
        floats = [u.float_model for u in group]
        shape = [d.dim_value for d in floats[0].graph.input[0].type.tensor_type.shape.dim][1:]
        x = np.random.default_rng(0).normal(size=(64, *shape)).astype(np.float32)
        models = quantize_stages(floats, x) if fmt == "int8" else floats
        feeds = reference_runs(models, x[:SAMPLES])
        first = floats[0].graph.input[0].name  # the model's own input: the first unit is the all-cuts stage 0
        for u, m, (inputs, _) in zip(group, models, feeds):
            key = hashlib.sha256(m.SerializeToString()).hexdigest()[:20]
            path = folder / f"{key}.{cpu}.{fmt}.json"
            if path.exists():
                count = json.loads(path.read_text())["instructions"]
            else:
                with tempfile.TemporaryDirectory(prefix="eecc-cost-") as tmp:
                    arts = compile_stage(m, Path(tmp))
                    count = emulate_stage(arts, inputs).instructions
                tmp_path = path.with_suffix(f".{os.getpid()}.tmp")  # whole or absent for a parallel refit's readers
                tmp_path.write_text(json.dumps({"instructions": count, "model": model, "index": u.index}))
                os.replace(tmp_path, path)
            rows.append({"model": model, "index": u.index, "cpu": cpu, "format": fmt,
                         "features": [int(v) if float(v).is_integer() else round(float(v), 3)
                                      for v in graph_features(u.float_model, model_input=first)[columns]],
                         "instructions": int(count)})
            if progress:
                progress(rows[-1])
    return rows


def _show(quiet: bool, t0: float):
    def show(r):
        if not quiet:
            print(f"{r['model']:>7} unit {r['index']:>2} {r['cpu']:>13} {r['format']}: {r['instructions']:>11,} "
                  f"instructions ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return show


def _measure_group(units: list[Unit], cpu: str, fmt: str, cache: Path, quiet: bool, t0: float) -> list[dict]:
    """One (model, cpu, format) group's rows: a worker process's job (module level, so it pickles)."""
    return measure_units(units, cpu, fmt, cache, progress=_show(quiet, t0))


def measure_all(units: list[Unit], cache: Path, *, jobs: int = 1, quiet: bool = False) -> list[dict]:
    """measure_units over every format, cpu and model group, in that order; with jobs > 1 the groups run in
    `jobs` spawned processes (largest first, so no long group starts last) and the rows are put back in the
    serial order. Groups are independent: measure_units quantises and seeds each model's units on their own."""
    t0, groups = time.time(), {}
    for u in units:
        groups.setdefault(u.model, []).append(u)
    keys = [(fmt, cpu, model) for fmt in FORMATS for cpu in CPUS for model in groups]
    if jobs <= 1:
        return [r for f, c, m in keys for r in _measure_group(groups[m], c, f, cache, quiet, t0)]
    # spawn, not fork: the parent has onnxruntime's thread pools running (units_of), which a fork can deadlock
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        order = sorted(keys, key=lambda k: -len(groups[k[2]]))
        futures = {k: pool.submit(_measure_group, groups[k[2]], k[1], k[0], cache, quiet, t0) for k in order}
        return [r for k in keys for r in futures[k].result()]
