"""The `eecc compile` flow: model + data + platform -> search -> stages -> a verified, deployable bundle."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from eecc import ir
from eecc.bundle_writer import SINGLE_FILE, build_manifest, make_stages, open_bundle, single_file_model
from eecc.data import Splits, load_npz, make_splits
from eecc.errors import EeccError
from eecc.exits import ExitsRun, Plan, plan_exits, run_exits
from eecc.passes.insert_exits import insert_exits
from eecc.runtime.bundle import MANIFEST
from eecc.runtime.cascade import Cascade
from eecc.search.placement import ModelCost, Placement, enumerate_placements, surviving_candidates
from eecc.search.search import SearchOptions, SearchResult, search
from eecc.targets.platform import Platform, load_platform


@dataclass
class SearchRun:
    plan: Plan
    platform: Platform
    placements: list[Placement]
    exits: ExitsRun
    result: SearchResult
    splits: Splits
    timings: dict[str, float] = field(default_factory=dict)


def search_model(model, data, platform: Platform, *, options: SearchOptions, full_search: bool = True,
                 max_latency_s: float | None = None, input_shape: Sequence[int] | None = None,
                 scale: float | None = None, cache_dir: str | os.PathLike | None = None,
                 progress: bool = False, strict: bool = True) -> SearchRun:
    """Prune placements on cost alone, train only the heads that survive, then search thresholds.

    Without `full_search` only the default placement (`default_placement`) is trained and tuned.
    """
    t0 = time.perf_counter()
    plan = model if isinstance(model, Plan) else plan_exits(model, input_shape=input_shape)
    data = as_splits(data, plan, scale)
    placements = enumerate_placements(platform, plan.costs, ModelCost.from_blocks(plan.blocks),
                                      max_latency_s=max_latency_s)
    if not any(p.fits for p in placements):
        why = placements[0].reasons[0] if placements else (
            f"platform '{platform.name}' has {len(platform.processors)} processor(s); eecc needs at least 2")
        raise EeccError(f"no feasible placement before training ({why}); relax the platform limits")
    if not full_search:
        placements = [default_placement(placements, plan)]
    survivors = surviving_candidates(placements, plan.costs)
    t1 = time.perf_counter()
    exits = run_exits(plan, data, candidates=survivors, cache_dir=cache_dir, progress=progress)
    t2 = time.perf_counter()
    result = search(exits.logits, placements=placements, options=options, strict=strict)
    timings = {"placements_s": t1 - t0, "exits_s": t2 - t1, "search_s": time.perf_counter() - t2}
    return SearchRun(plan, platform, placements, exits, result, data, timings)


def as_splits(data, plan: Plan, scale: float | None = None) -> Splits:
    """An .npz path, a dict of x_/y_ arrays, or Splits, validated against the model."""
    if isinstance(data, Splits):
        return data
    kw = dict(input_shape=plan.input_shape, num_classes=plan.num_classes, scale=scale)
    return make_splits(**data, **kw) if isinstance(data, dict) else load_npz(data, **kw)


def default_placement(placements: list[Placement], plan: Plan) -> Placement:
    """Without --search: the feasible placement whose stages split the backbone MACs most evenly."""
    total = plan.blocks.total_macs
    cum = {c.tensor: c.backbone_macs for c in plan.costs}

    def unevenness(p: Placement) -> float:
        n = len(p.exits) + 1
        return sum(abs(cum[t] / total - (i + 1) / n) for i, t in enumerate(p.exits))

    fits = [p for p in placements if p.fits]
    longest = max(len(p.exits) for p in fits)
    return min((p for p in fits if len(p.exits) == longest), key=unevenness)


@dataclass
class CompileOptions:
    target: str
    out: Path
    search: bool = False
    search_options: SearchOptions = field(default_factory=SearchOptions)
    max_latency_s: float | None = None
    input_shape: Sequence[int] | None = None
    scale: float | None = None
    cache_dir: str | None = None
    force: bool = False
    single_file: bool = False
    codegen: bool = True
    emulate: bool = False
    progress: bool = True
    protect: Sequence[str | os.PathLike] = ()


def compile_model(model: str | os.PathLike, data, options: CompileOptions) -> dict:
    """Writes the bundle at options.out (all or nothing) and returns its manifest."""
    t0 = time.perf_counter()
    platform = load_platform(options.target)
    plan = plan_exits(model, input_shape=options.input_shape)
    splits = as_splits(data, plan, options.scale)
    test = _test_split(splits)  # before any training: fail early
    run = search_model(plan, splits, platform, options=options.search_options, full_search=options.search,
                       max_latency_s=options.max_latency_s, cache_dir=options.cache_dir,
                       progress=options.progress)
    chosen = run.result.best
    heads = {h.spec.tensor: h for h in run.exits.heads()}
    graph = insert_exits(run.plan.graph, heads=[heads[t] for t in chosen.exits])
    metric = options.search_options.metric
    stages = make_stages(graph, cuts=chosen.exits, processors=chosen.processors, thresholds=chosen.thresholds,
                         metric=metric, platform=platform)
    search_json = run.result.to_json()
    manifest = build_manifest(
        stages, platform=platform, thresholds=chosen.thresholds, metric=metric,
        placement_metrics={"search": search_json["chosen"]}, pareto=search_json["pareto"] or None,
        extra={"model": Path(model).name, "original": search_json["original"],
               "search": {k: search_json[k] for k in ("placements", "pruned", "baselines", "warnings", "options")},
               "mode": "search" if options.search else "default-placement"})
    protect = [model, *([data] if isinstance(data, (str, os.PathLike)) else []), *options.protect]
    with open_bundle(options.out, force=options.force, protect=protect) as tmp:
        models = [ir.to_model(s) for s in stages]
        for entry, stage_model in zip(manifest["stages"], models):
            ir.save(stage_model, tmp / entry["file"])
        if options.single_file:
            ir.save(single_file_model(models), tmp / SINGLE_FILE)
            manifest["single_file"] = SINGLE_FILE
        _write(tmp, manifest)
        manifest["placement"]["metrics"]["measured"] = verify_bundle(tmp, test, run, chosen)
        if options.codegen:
            _codegen(tmp, models, manifest, platform, test if options.emulate else None)
        manifest["timings"] = {**run.timings, **run.exits.timings, "total_s": time.perf_counter() - t0}
        _write(tmp, manifest)
    return manifest


def verify_bundle(path: Path, test, run: SearchRun, chosen) -> dict:
    """Run the written cascade on the test split: the figures a user gets, and agreement with the search."""
    x, y = test
    t0 = time.perf_counter()
    res = Cascade(path).run(x)
    wall = time.perf_counter() - t0
    stages = json.loads((path / MANIFEST).read_text())["stages"]
    rates = np.bincount(res.exit_stage, minlength=len(stages)) / max(len(y), 1)
    simulated = chosen.test
    return {
        "split": "test", "samples": int(len(y)),
        "accuracy": float((res.predictions == y).mean()),
        "original_accuracy": float(run.result.original["accuracy"]),
        "mean_macs": float(res.macs.mean()), "original_macs": int(run.exits.logits.final_macs),
        "exit_rates": [float(r) for r in rates],
        "mean_latency_s": float(sum(r * s["exit_latency_s"] for r, s in zip(rates, stages))),
        "mean_energy_j": float(sum(r * s["exit_energy_j"] for r, s in zip(rates, stages))),
        # The search scores heads on cached fp16 features; the cascade runs them in fp32 on the real graph.
        "agreement_with_search": float((res.exit_stage == simulated.exit_index).mean()),
        "host_wall_s": wall,
    }


def _test_split(splits: Splits) -> tuple[np.ndarray, np.ndarray]:
    if splits.test is None:
        raise EeccError("compile: the data has no test split (x_test, y_test); eecc reports the cascade's "
                        "accuracy on held-out test data only: add x_test and y_test")
    return splits.test.rows(0, len(splits.test)), np.asarray(splits.test.y)


def _codegen(tmp: Path, models, manifest: dict, platform: Platform, test) -> None:
    from eecc.targets.codegen import compile_stages

    inputs = None if test is None else test[0]
    updates = compile_stages(models, manifest, platform, tmp, emulate_inputs=inputs)
    for entry, update in zip(manifest["stages"], updates.get("stages", [])):
        entry.update(update)
    manifest.update({k: v for k, v in updates.items() if k != "stages"})


def _write(tmp: Path, manifest: dict) -> None:
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=ir.json_default) + "\n")
