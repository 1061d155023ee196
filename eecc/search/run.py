"""Prune placements on cost alone, train only the surviving exit heads, search thresholds (eecc search/compile)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

from eecc.data.splits import Splits
from eecc.errors import EeccError
from eecc.exits.run import ExitsRun, Plan, plan_exits, run_exits
from eecc.exits.family import searched_heads
from eecc.progress import progress as show_progress
from eecc.search.chance import below_chance
from eecc.search.checks import (check_all_heads, check_default_heads, check_macs_floor, check_placement,
                                check_search_size, checked_splits, validation_resolution)
from eecc.search.limits import Pruned, exit_latency_advice, no_fit_message
from eecc.search.memory import StageMemory, plan_costs
from eecc.search.placement import (MAX_HEAD_COMBOS, MAX_SCORED, Placement, enumerate_placements,
                                   head_combos_within, keep_int8_off, surviving_candidates, with_heads,
                                   MCU_INT8_UNLOWERED, MCU_KINDS)
from eecc.search.search import SearchOptions, SearchResult, search
from eecc.search.types import ExitLogits, pair_name
from eecc.targets.codegen import NO_INT8, NO_INT8_KINDS
from eecc.targets.platform import Platform


@dataclass
class SearchRun:
    plan: Plan
    platform: Platform
    placements: list[Placement]   # as searched: one per (placement, head design at each exit)
    exits: ExitsRun               # its heads and logits: the chosen placement's designs at its exits
    result: SearchResult
    splits: Splits
    timings: dict[str, float] = field(default_factory=dict)
    device: object = None  # eecc.cost.segments.DeviceCost: what each stage costs on each processor
    logits: ExitLogits | None = None  # what the search chose among: rows "<tensor>|<design>" (ExitsRun.pairs)
    numeric: str = "fp32"  # the numerics of `logits`: "int8" = the int8 model's (eecc/exits/int8.py)

    def chosen_logits(self) -> ExitLogits:
        """The logits the chosen placement's thresholds were searched on, one row per exit tensor (the
        chosen head design's): the int8 model's after an int8 search, else the trained heads' float ones."""
        best = self.result.best
        if self.numeric == "fp32" or best is None or not best.exits:
            return self.exits.logits
        row = {t: k for k, t in enumerate(self.logits.tensors)}
        names = [pair_name(t, d) for t, d in zip(best.exits, best.heads)] if best.heads else list(best.exits)
        return self.logits.take([row[n] for n in names], tensors=list(best.exits))


def search_model(model, data, platform: Platform, *, options: SearchOptions, full_search: bool = True,
                 max_latency_s: float | None = None, input_shape: Sequence[int] | None = None,
                 scale: float | None = None, cache_dir: str | os.PathLike | None = None,
                 progress: bool = False, strict: bool = True, executor=None, numeric: str = "fp32",
                 exits_per_processor: int | None = None, head_set: str = "family") -> SearchRun:
    """Prune placements on cost alone, train only the heads that survive, then search placements x head
    designs x thresholds: every Pareto-optimal head of a location (validation accuracy vs head MACs) is a
    choice (`with_heads` bounds the combinations); `head_set="blueprint"` trains the global-pool head only.

    Stage costs come from the measured cost model for `numeric` ("fp32" | "int8") where it covers the
    processor (eecc/cost), else from nominal MAC/s. With "int8" the thresholds, accuracies and exit rates
    are those of the int8 model (eecc/exits/int8.py: the heads and backbone quantised as the bundle's
    stages are), so the search predicts the cascade `--quantize int8` builds and the accuracy limit is
    on the drop from the int8 original. Without `full_search` only the default placement
    (`default_placement`) and the single-processor baselines are trained and tuned.
    """
    t0 = time.perf_counter()
    plan = model if isinstance(model, Plan) else plan_exits(model, input_shape=input_shape)
    data = checked_splits(plan, data, scale)
    device = device_cost(plan, platform, numeric, options.metric)
    fmt = "int8" if numeric == "int8" else "fp32"
    costs, model_cost = plan_costs(plan)  # MACs and hand-offs; memory is StageMemory's
    memory = StageMemory(plan, fmt)  # weights and activations sized as the bundle is built and checked
    placements = _feasible_placements(plan, platform, device, max_latency_s, exits_per_processor, fmt, memory,
                                      options.placement)
    options = _with_objective(options, platform)
    everything = placements
    if not full_search:
        placements = [p for p in placements if not p.exits] + [default_placement(placements, plan)]
    check_macs_floor(options, placements, plan, everything)  # Fail before training when no threshold can help
    survivors = surviving_candidates(placements, plan.costs)
    t1 = time.perf_counter()
    exits = run_exits(plan, data, candidates=survivors, cache_dir=cache_dir, progress=progress, executor=executor,
                      head_set=head_set, train_logits=options.calibrate_on == "train")
    check_default_heads(exits) if not full_search else check_all_heads(exits)
    t2 = time.perf_counter()
    # The Pareto filter reads all validation data; --guarantee's fixed-sequence test must choose its candidates
    # on its ordering half only (eecc/search/guarantee.py), so there every trained head enters.
    pareto_only = options.guarantee is None
    pairs = exits.pairs(pareto_only)
    if numeric == "int8":
        from eecc.exits.int8 import int8_logits, pair_heads

        pairs = int8_logits(plan, pair_heads(exits, pairs), pairs, data)
    t3 = time.perf_counter()
    found = searched_heads(exits.tried, pareto_only, fmt)
    combos = head_combos_within(placements, found, MAX_SCORED)  # the search stays within MAX_SCORED placements
    placements = with_heads(platform, placements, costs, found, model_cost, max_latency_s=max_latency_s,
                            device=device, memory=memory, max_combos=combos)
    with show_progress(progress) as bar:  # minutes with several exits per processor (nu9): say how far it is
        result = search(pairs, placements=placements, options=options, strict=strict, executor=executor,
                        on_step=bar("search placements"))
    _add_warnings(plan, platform, device, exits, result, fmt, len(placements), combos, pairs)
    result.warnings += [w for w in [validation_resolution(data, options)] if w]
    result.default_only = None if full_search else _default_only(placements, everything)
    if result.best is not None and result.best.heads:  # compile builds the chosen designs' heads
        exits = exits.offering(dict(zip(result.best.exits, result.best.heads)))
    timings = {"placements_s": t1 - t0, "exits_s": t2 - t1, "search_s": time.perf_counter() - t3,
               **({"int8_logits_s": t3 - t2} if numeric == "int8" else {})}
    return SearchRun(plan, platform, placements, exits, result, data, timings, device, pairs, fmt)


def _default_only(placements: list[Placement], everything: list[Placement]) -> dict | None:
    """Without --search: the one early-exit placement tried and how many --search would try, so that the summary's
    verdict is on this placement, not on the model (nu11 F10); None when no placement with an exit fits."""
    default = next((p for p in placements if p.exits), None)
    if default is None:
        return None
    return {"processors": list(default.processors), "exits": list(default.exits),
            "placements_with_search": sum(1 for p in everything if p.exits and p.fits)}


def _with_objective(options: SearchOptions, platform: Platform) -> SearchOptions:
    """`options` with the default objective where none is set: energy when every processor has an active power,
    else latency."""
    if options.objective is not None:
        return options
    energy = all(p.active_power_w > 0 for p in platform.processors)
    return replace(options, objective="energy" if energy else "latency")


def _add_warnings(plan, platform: Platform, device, exits, result, fmt: str, n_placements: int, combos: int,
                  pairs: ExitLogits) -> None:
    """Adds the search's notes to `result` (and its no_candidate reason): head combinations cut to stay within
    MAX_SCORED, a model without heads, unmeasured processors, a model or chosen exit no better than chance, int8
    kept off the GPUs and off Cortex-M cores that cannot lower one of the model's ops."""
    if combos < MAX_HEAD_COMBOS:
        result.warnings.append(f"the search scored {n_placements:,} placements, each with at most {combos} of "
                               f"the {MAX_HEAD_COMBOS} combinations of its exits' head designs (the most accurate "
                               f"first), to stay within {MAX_SCORED:,}; --heads blueprint or a smaller "
                               "--exits-per-processor scores every one")
    if not plan.design.heads and plan.design.rejected:  # only the original model was searched: say why
        result.warnings.append(no_head_warning(plan.design))
    result.no_candidate = no_candidate_reason(plan, exits, result)
    best = result.best  # chance judged on the logits the search saw (`pairs`: int8 with --quantize int8)
    chosen = [] if best is None else [pair_name(t, d) for t, d in zip(best.exits, best.heads)] or list(best.exits)
    result.warnings += below_chance(pairs, chosen, fmt)
    _warn_unmeasured(plan, platform, device, result)
    if fmt == "int8" and any(p.kind in NO_INT8_KINDS for p in platform.processors):
        result.warnings.append(int8_kept_off(platform))
    unlowered = sorted(MCU_INT8_UNLOWERED[n.op] for n in plan.graph.nodes if n.op in MCU_INT8_UNLOWERED)
    if fmt == "int8" and unlowered and any(p.kind in MCU_KINDS for p in platform.processors):
        result.warnings.append(f"--quantize int8: no stage was placed on a Cortex-M: eecc's Cortex-M int8 build cannot "
                               f"lower {unlowered[0]}; compile without --quantize int8 to consider them")


def int8_kept_off(platform: Platform) -> str:
    """The search's note that int8 stages were kept off the GPUs (placement.keep_int8_off)."""
    gpus = ", ".join(f"'{p.name}' ({p.kind})" for p in platform.processors if p.kind in NO_INT8_KINDS)
    return (f"--quantize int8: no stage was placed on {gpus}: {NO_INT8}; compile without --quantize int8 to "
            "consider it")


def no_head_warning(design) -> str:
    """Why no candidate got a head, and the --head-budget that admits one where the budget was the reason."""
    advice = design.budget_advice()
    return ("no exit head fits this model (" + "; ".join(f"{t}: {why}" for t, why in design.rejected.items()) + ")"
            + (f"; {advice}" if advice else ""))


def _warn_unmeasured(plan: Plan, platform: Platform, device, result: SearchResult) -> None:
    """Ops no measured unit holds (a GRU, a LayerNormalization: eecc/cost/coverage.py) make the cost model's figure
    an estimate: say so where it priced them, and how compile measures a Cortex-M stage instead."""
    from eecc.cost.coverage import unmeasured_ops, unmeasured_warning

    ops = unmeasured_ops(plan.graph)
    if ops and any(device.measured(p) for p in platform.processors):
        result.warnings.append(unmeasured_warning(ops, [p.kind for p in platform.processors if device.measured(p)]))


def no_candidate_reason(plan: Plan, exits: ExitsRun, result: SearchResult) -> str | None:
    """Why no placement with an exit was compared with the original model (None when one was): the model has no
    candidate exit, no head fits the head budget, every head was dropped, or the platform limits pruned them."""
    if any(p.exits for p in result.placements):
        return None
    if not plan.blocks.candidates():
        return ("the model has no tensor before its classifier's input that an exit head can read (a feature map "
                "or an MLP's hidden vector, batch first, on every path to the output; eecc inspect lists the blocks)")
    design = plan.design
    if not design.heads and design.budget_advice():
        return (f"no exit head fits the head budget of {design.budget_macs:,} MACs ({design.budget:.1%} of the "
                f"model's); {design.budget_advice()}")
    if not design.heads:
        return "no exit head fits this model (" + "; ".join(f"{t}: {w}" for t, w in design.rejected.items()) + ")"
    if exits.results and all(r.dropped for r in exits.results):
        return "every exit head was dropped: none beat chance on the validation split after one epoch"
    pruned = [p for p in result.pruned if p["exits"]]
    alive = {r.spec.tensor for r in exits.results if not r.dropped}  # heads of placements pruned before training
    dead = {r.spec.tensor for r in exits.results if r.dropped} - alive  # were never trained: not dead
    timed = exit_latency_advice([Pruned(tuple(p["exits"]), tuple(p["processors"]),
                                        tuple(tuple(n) for n in p.get("needs") or ()), tuple(p["reasons"]))
                                 for p in pruned if not dead.intersection(p["exits"])])
    if timed:  # the nearest one, not the first pruned (nu12 F10 quoted a 104.6 ms placement beside a 23.86 ms one)
        return f"every placement with an exit was pruned by the worst-case latency limit; {timed}"
    reasons = [r for p in pruned for r in p["reasons"]]
    return "every placement with an exit was pruned" + (f" ({reasons[0]})" if reasons else "")


def _feasible_placements(plan: Plan, platform: Platform, device, max_latency_s, exits_per_processor, fmt: str,
                         memory: StageMemory | None = None, processors: tuple[str, ...] | None = None) -> list:
    """Every placement of the platform (eecc/search/placement.py), or those on `processors` (--placement) and the
    single-processor baselines, its memory sized as `fmt` (eecc/search/memory.py); EeccError when none fits before
    training."""
    if exits_per_processor is not None and exits_per_processor < 1:
        raise EeccError(f"--exits-per-processor must be ≥ 1, got {exits_per_processor}")
    processors = None if processors is None else tuple(processors)
    check_placement(plan, platform, processors, exits_per_processor)
    check_search_size(plan, platform, exits_per_processor, processors)

    def enumerate_as(numeric: str) -> list[Placement]:
        sizes = memory if memory is not None and memory.numeric == numeric else StageMemory(plan, numeric)
        return enumerate_placements(platform, *plan_costs(plan), max_latency_s=max_latency_s,
                                    exits_per_processor=exits_per_processor, device=device, memory=sizes,
                                    processors=processors)

    placements = enumerate_as(fmt)
    ops = {n.op for n in plan.graph.nodes}
    kept = keep_int8_off(platform, placements, ops) if fmt == "int8" else placements
    if not any(p.fits for p in kept):
        if any(p.fits for p in placements):  # only the processors without an int8 build would do
            raise EeccError(no_int8_message(platform, kept))
        int8_fits = fmt == "fp32" and any(p.fits for p in keep_int8_off(platform, enumerate_as("int8"), ops))
        raise EeccError(no_fit_message(placements, platform, max_latency_s, int8_fits))
    return kept


def no_int8_message(platform: Platform, kept: list[Placement]) -> str:
    """--quantize int8 where every placement that fits needs a processor without an int8 build (of this model)."""
    why = next(r for p in kept for r in p.reasons if r.startswith("int8 stage on"))
    return (f"--quantize int8: no placement on platform '{platform.name}' can be built in int8 ({why}); compile "
            "without --quantize int8 (fp32 stages run there), or use a platform with a processor that builds it")


def device_cost(plan: Plan, platform: Platform, numeric: str, metric: str = "max_softmax"):
    """The per-stage seconds of this model on this platform (eecc.cost.segments.DeviceCost)."""
    from eecc.cost.segments import DeviceCost, SegmentTable

    gate = metric if metric in ("max_softmax", "margin", "entropy") else "max_softmax"
    return DeviceCost(platform, SegmentTable.from_plan(plan, metric=gate), fmt=numeric)


def default_placement(placements: list[Placement], plan: Plan) -> Placement:
    """Without --search: the feasible placement whose stages split the backbone MACs most evenly, of NA's
    shape where one fits (stage 0 on the first processor, one stage per processor)."""
    total = plan.blocks.total_macs
    cum = {c.tensor: c.backbone_macs for c in plan.costs}
    first = next(p.processors[0] for p in placements if not p.exits)  # the baselines come in platform order

    def unevenness(p: Placement) -> float:
        n = len(p.exits) + 1
        return sum(abs(cum[t] / total - (i + 1) / n) for i, t in enumerate(p.exits))

    def na(p: Placement) -> bool:
        return p.processors[0] == first and len(set(p.processors)) == len(p.processors)

    fits = ([p for p in placements if p.fits and p.exits and na(p)] or [p for p in placements if p.fits and p.exits]
            or [p for p in placements if p.fits])
    longest = max(len(p.exits) for p in fits)
    return min((p for p in fits if len(p.exits) == longest), key=unevenness)
