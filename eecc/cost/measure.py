"""Measurement units for the cost model: a model cut at every candidate exit (each piece with a head and a
gate, as in a bundle), compiled with TVM and run under QEMU per Cortex-M kind and numeric format.

A unit's instruction count is the mean over `SAMPLES` inferences of SysTick ticks / 0.8 (runtime/emulate.py).
Counts are cached on disk under `<cache>/cost/<kernels>/<unit hash>.<cpu>.<format>.json`, where
`kernels` hashes the code generator (every file of eecc/targets except the platform TOMLs) and the TVM
version: new kernels (a rewritten int8 lowering, another TVM) are measured afresh, never mixed.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from eecc.model import ir
from eecc.cost.features import graph_features

CPUS = ("cortex-m0plus", "cortex-m4")
FORMATS = ("fp32", "int8")
SAMPLES = 2
TARGETS = Path(__file__).resolve().parents[2] / "targets"
# Target modules that never shape a Cortex-M stage's instructions (platform files, other backends).
NOT_KERNELS = {"platform.py", "codegen.py", "cortex_a.py", "mali.py", "cuda.py", "clbuild.c", "host_main.c"}


@dataclass
class Unit:
    model: str          # the model it was cut from (the held-out group in a leave-one-out check)
    index: int          # stage index in the all-cuts split
    float_model: onnx.ModelProto


def kernels_id() -> str:
    """Hash of the code that turns a stage into Cortex-M instructions: eecc/targets sources (the Cortex-M
    backend, TVM import, int8 lowering and quantiser, C driver; new files count too) + TVM version."""
    h = hashlib.sha256()
    for path in sorted(TARGETS.rglob("*")):
        if path.is_file() and "platforms" not in path.parts and path.name not in NOT_KERNELS \
                and path.suffix in (".py", ".c", ".h", ".ld"):
            # Import lines are left out: moving a module elsewhere does not change the code it generates.
            lines = [ln for ln in path.read_text().splitlines()
                     if not ln.strip().startswith(("import ", "from "))]
            h.update(path.relative_to(TARGETS).as_posix().encode())
            h.update("\n".join(lines).encode())
    try:
        from importlib.metadata import version
        h.update(version("apache-tvm").encode())
    except Exception:  # no TVM: nothing can be measured anyway
        h.update(b"no-tvm")
    return h.hexdigest()[:16]


def dummy_heads(specs, seed: int = 0):
    """Heads with random weights: cost depends on the head's shapes, not on its values."""
    from eecc.exits.heads import ExitHead, HeadWeights

    rng = np.random.default_rng(seed)
    out = []
    for s in specs:
        rank = len(s.in_shape) - 1
        conv = (rng.normal(size=(s.width, s.channels, *[1] * rank)).astype(np.float32) if s.width else None)
        out.append(ExitHead(s, HeadWeights(
            fc_w=rng.normal(size=(s.num_classes, s.width or s.channels)).astype(np.float32),
            fc_b=np.zeros(s.num_classes, np.float32), conv_w=conv,
            conv_b=np.zeros(s.width, np.float32) if s.width else None)))
    return out


def all_cut_stages(plan, *, metric: str = "max_softmax"):
    """The plan's graph cut at every designed head: stage k = block(s) up to candidate k + its head + gate."""
    from eecc.driver.pipeline import make_stages
    from eecc.passes.insert_exits import insert_exits

    heads = dummy_heads(plan.design.heads)
    graph = insert_exits(plan.graph, heads=heads)
    cuts = [h.spec.tensor for h in heads]
    return cuts, make_stages(graph, cuts=cuts, processors=[f"p{k}" for k in range(len(cuts) + 1)],
                             thresholds=[0.5] * len(cuts), metric=metric)


def units_of(name: str, model_path) -> list[Unit]:
    """Every piece of the model cut at every candidate (index k), both stages of the cascade with one exit
    at candidate c (1000 + 10 c + k), and the three of the one cut at the thirds (200 + k): stages of several
    blocks, where hand-offs are rarer than blocks, must be in the fit too."""
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
    return units


def measure_units(units: list[Unit], cpu: str, fmt: str, cache: Path, *, progress=None) -> list[dict]:
    """One row per unit: {"model", "index", "cpu", "format", "features", "instructions"} (cached)."""
    from eecc.targets import cortex_m
    from eecc.targets.codegen import reference_runs
    from eecc.targets.quantize import quantize_stages
    from eecc.runtime.emulate import emulate_stage

    folder = Path(cache) / "cost" / kernels_id()
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
        for u, m, (inputs, _) in zip(group, models, feeds):
            key = hashlib.sha256(m.SerializeToString()).hexdigest()[:20]
            path = folder / f"{key}.{cpu}.{fmt}.json"
            if path.exists():
                count = json.loads(path.read_text())["instructions"]
            else:
                with tempfile.TemporaryDirectory(prefix="eecc-cost-") as tmp:
                    arts = cortex_m.compile_stage(m, cpu=cpu, out_dir=Path(tmp))
                    count = emulate_stage(arts, inputs).instructions
                path.write_text(json.dumps({"instructions": count, "model": model, "index": u.index}))
            rows.append({"model": model, "index": u.index, "cpu": cpu, "format": fmt,
                         "features": graph_features(u.float_model).tolist(), "instructions": int(count)})
            if progress:
                progress(rows[-1])
    return rows
