"""Placements of exits on a platform's processors, pruned by latency and memory before training.

A placement with E exits cuts the backbone at E candidate tensors k1 < ... < kE; stage 0 (input to
k1, plus head 1) runs on the first processor, where the data arrives, and stage i on a later
processor, in platform order; the last stage (rest of the backbone and the original classifier)
runs on the last processor chosen. Each processor runs at most K exit stages back to back
(`exits_per_processor`), the final stage may share the last exit's processor, and the cascade may start
on any processor, as the single-processor baselines do. The default is one exit per processor and at
most P - 1 exits, as in NA: NA's placements (stage 0 on the first processor, one stage per processor)
and those on a subset of the processors, e.g. one exit on the fastest core with the rest of the network
after it on that core; a one-processor platform gets K = 2. Where two placements cost the same (the
MACs objective does not see processors), NA's shape comes first and wins the tie.
E = 0 on processor P is the original model alone on P: the single-processor baselines, always
enumerated. `--placement P0,...,PE` names the processor of each stage instead: only that sequence is
enumerated beside the baselines. Stage seconds come from `device` (eecc.cost.segments.DeviceCost) when
given, else from the platform's nominal MAC/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import combinations, combinations_with_replacement, product

from eecc.search.types import CandidateCost


@dataclass(frozen=True)
class ModelCost:
    """Whole-model figures the last stage needs (the candidates only describe prefixes)."""

    total_macs: int
    weight_bytes: int
    peak_activation_bytes: int
    input_bytes: int = 0  # the model input per sample (float32): it crosses a link when stage 0 runs elsewhere
    result_bytes: int = 0  # the logits per sample (float32): they go back when a sample leaves elsewhere

    @classmethod
    def from_blocks(cls, blocks) -> "ModelCost":
        return cls(int(blocks.total_macs), 4 * int(blocks.total_params),
                   int(max(b.activation_bytes for b in blocks.blocks)))


@dataclass(frozen=True)
class Placement:
    exits: tuple[str, ...]            # candidate tensors, network order
    processors: tuple[str, ...]       # one per stage: len(exits) + 1
    stage_macs: tuple[int, ...]
    exit_latency_s: tuple[float, ...]  # latency of a sample that leaves at each position
    exit_energy_j: tuple[float, ...]
    reasons: tuple[str, ...]          # why it cannot run; empty = fits
    heads: tuple[str, ...] = ()       # head design per exit (`with_heads`); empty: the one head per location
    # per broken limit: (limit, need, have); limit "latency" (s), "storage:<processor>", "ram:<processor>",
    # "shared storage" or "shared ram" (bytes)
    needs: tuple[tuple[str, float, float], ...] = ()

    @property
    def fits(self) -> bool:
        return not self.reasons

    @property
    def latency_s(self) -> float:
        """Worst case: the sample that runs every stage."""
        return self.exit_latency_s[-1]


def _head_weight_bytes(c: CandidateCost) -> int:
    return c.head_weight_bytes if c.head_weight_bytes is not None else 4 * c.head_macs


def stage_figures(cands: list[CandidateCost], model: ModelCost):
    """Per stage: (MACs, weight bytes, peak activation bytes) and the hand-off bytes between them.

    Activation peaks are those of the whole prefix up to the cut (an upper bound for later stages:
    the candidates only record cumulative peaks).
    """
    macs, weights, peaks, prev_b, prev_w = [], [], [], 0, 0
    for c in cands:
        macs.append(c.backbone_macs - prev_b + c.head_macs)
        weights.append(c.weight_bytes_before - prev_w + _head_weight_bytes(c))
        peaks.append(c.peak_activation_bytes_before)
        prev_b, prev_w = c.backbone_macs, c.weight_bytes_before
    macs.append(model.total_macs - prev_b)
    weights.append(model.weight_bytes - prev_w)
    peaks.append(model.peak_activation_bytes)
    return macs, weights, peaks, [c.handoff_bytes for c in cands]


def place(platform, cands: list[CandidateCost], procs: tuple[str, ...], model: ModelCost,
          max_latency_s: float | None = None, device=None, heads: tuple[str, ...] | None = None,
          memory=None) -> Placement:
    """`heads`: the head design at each exit (eecc/exits/family.py's HeadSpec.design), priced by `device`
    (None: the blueprint heads). `memory` (eecc/search/memory.py's StageMemory): each stage's weights and peak
    activations as the check after the split sizes the built stage; None: `stage_figures`' block-level bounds."""
    from eecc.targets.platform import estimate_exits

    macs, weights, peaks, handoff = stage_figures(cands, model)
    if memory is not None:
        weights, peaks = memory.figures([c.tensor for c in cands], heads)
    reasons, needs = [], []
    home = platform.processors[0].name  # where the input arrives
    links_ok = all(a == b or platform.link(a, b) is not None for a, b in zip((home, *procs), procs))
    if links_ok:
        seconds = None
        if device is not None:
            bounds = [None, *(c.tensor for c in cands)]
            seconds = [device.seconds(p, bounds[k], bounds[k + 1] if k < len(cands) else None, m,
                                      head=heads[k] if heads and k < len(cands) else None)
                       for k, (p, m) in enumerate(zip(procs, macs))]
        est = estimate_exits(platform, procs, macs, handoff, compute_s=seconds, input_bytes=model.input_bytes,
                             result_bytes=model.result_bytes)
        lat = tuple(e["latency_s"] for e in est)
        energy = tuple(e["energy_j"] for e in est)
    else:
        lat = energy = tuple(float("inf") for _ in procs)
        a, b = next((a, b) for a, b in zip((home, *procs), procs) if a != b and platform.link(a, b) is None)
        reasons.append(f"no link from '{a}' to '{b}'" + ("" if a != home or procs[0] == home else
                                                         f" (the input arrives on '{a}'; a first stage elsewhere "
                                                         "needs a direct link from there)"))
    limit = platform.max_latency_s if max_latency_s is None else max_latency_s
    if limit is not None and links_ok and lat[-1] > limit:  # unreachable: 'inf ms > max' says nothing
        reasons.append(f"worst-case latency {shown_above(lat[-1] * 1e3, limit * 1e3)} ms > max {limit * 1e3:g} ms")
        needs.append(("latency", lat[-1], limit))
    for reason, need in _memory(platform, procs, weights, peaks, [model.input_bytes, *handoff]):
        reasons.append(reason)
        needs.append(need)
    return Placement(tuple(c.tensor for c in cands), procs, tuple(int(m) for m in macs), lat, energy,
                     tuple(reasons), needs=tuple(needs))


def _memory(platform, procs, weights, peaks, inputs) -> list[tuple[str, tuple[str, int, int]]]:
    """(reason, (limit, need, have)) per memory the placement overflows; each processor's need as the check after
    the split sizes it (eecc/model/stage_cost.py processor_needs: its stages' weights together, two arenas, one
    input buffer, the program's stack); `inputs`: each stage's float input bytes."""
    from eecc.model.stage_cost import processor_needs, program_bytes

    by_name, out = {p.name: p for p in platform.processors}, []
    program = program_bytes(platform)
    needs = processor_needs(procs, weights, peaks, inputs, program)
    if platform.shared_memory:
        used = [by_name[p] for p in procs]
        storage, ram = min(p.storage_bytes for p in used), min(p.ram_bytes for p in used)
        a = max(r for _, r in needs.values())
        if sum(weights) > storage:
            out.append((f"weights {sum(weights)} B > shared storage {storage} B",
                        ("shared storage", sum(weights), storage)))
        if a > ram:
            stack = " and stack" if any(program[p] for p in procs) else ""
            out.append((f"activations{stack} {a} B > shared RAM {ram} B", ("shared ram", a, ram)))
        return out
    for name, (w, a) in needs.items():  # stages on one processor share its memories
        proc = by_name[name]
        if w > proc.storage_bytes:
            out.append((f"stage on '{name}': weights {w} B > storage {proc.storage_bytes} B",
                        (f"storage:{name}", w, proc.storage_bytes)))
        if a > proc.ram_bytes:
            stack = " and stack" if program[name] else ""
            out.append((f"stage on '{name}': activations{stack} {a} B > RAM {proc.ram_bytes} B",
                        (f"ram:{name}", a, proc.ram_bytes)))
    return out


def processor_sequences(names: list[str], exits: int, per_processor: int) -> list[tuple[str, ...]]:
    """Processors of the E+1 stages: non-decreasing in platform order from any processor (the data may go
    straight to a later one, as for the single-processor baselines), at most K exit stages per processor;
    NA's shape (stage 0 on the first processor, one stage per processor) first."""
    out = []
    for seq in combinations_with_replacement(range(len(names)), exits + 1):
        counts = [seq[:exits].count(i) for i in range(len(names))]
        if max(counts, default=0) <= per_processor:
            out.append(tuple(names[i] for i in seq))
    return sorted(out, key=lambda seq: not (seq[0] == names[0] and len(set(seq)) == len(seq)))  # stable


def enumerate_placements(platform, costs: list[CandidateCost], model: ModelCost, *,
                         max_exits: int | None = None, max_latency_s: float | None = None,
                         exits_per_processor: int | None = None, device=None, memory=None,
                         processors: tuple[str, ...] | None = None) -> list[Placement]:
    """The single-processor baselines, then every placement of 1..E exits (E = K·P with exits_per_processor
    = K; by default K = 1 and E = P - 1 as in NA; fewer with max_exits), each with its feasibility.
    `processors` (--placement, checked by eecc/search/checks.py check_placement): the processor of each stage;
    only its len - 1 exits at every choice of candidates are enumerated after the baselines."""
    names = [p.name for p in platform.processors]
    out = [place(platform, [], (name,), model, max_latency_s, device, memory=memory) for name in names]
    for procs in _sequences(names, len(costs), exits_per_processor, max_exits, processors):
        for cands in combinations(costs, len(procs) - 1):
            out.append(place(platform, list(cands), procs, model, max_latency_s, device, memory=memory))
    return out


def _sequences(names: list[str], candidates: int, exits_per_processor: int | None, max_exits: int | None,
               processors: tuple[str, ...] | None) -> list[tuple[str, ...]]:
    """The processor sequences of the placements with exits: `processors` alone when given, else every one of
    `processor_sequences` for 1..E exits (at most `candidates`)."""
    if processors is not None:
        return [tuple(processors)] if 1 <= len(processors) - 1 <= candidates else []
    per = exits_per_processor if exits_per_processor is not None else (2 if len(names) == 1 else 1)
    most = len(names) - 1 if exits_per_processor is None and len(names) > 1 else per * len(names)
    most = most if max_exits is None else min(max_exits, most)
    return [procs for e in range(1, min(most, candidates) + 1) for procs in processor_sequences(names, e, per)]


# Ops eecc's Cortex-M int8 build cannot lower: the stage's Erf (GELU) stays in float and is requantised by an extern
# kernel that TVM's host JIT then cannot find (nu10: "Symbols not found: eecc_quantize_s8", a segfault, rc 139)
MCU_INT8_UNLOWERED = {"Erf": "Erf (GELU)", "Gelu": "Gelu"}
MCU_KINDS = ("cortex-m0plus", "cortex-m4")  # targets/codegen.py MCU_KINDS: the kinds eecc builds Cortex-M code for


def keep_int8_off(platform, placements: list[Placement], ops=frozenset()) -> list[Placement]:
    """int8 placements: those with a stage on a processor that gets no int8 build (targets/codegen.py NO_INT8_KINDS:
    the GPUs), or, when the model holds an op in MCU_INT8_UNLOWERED (`ops`: the model's op types), on a Cortex-M,
    marked as not fitting, with the reason."""
    from eecc.targets.codegen import NO_INT8, NO_INT8_KINDS

    bad = sorted(MCU_INT8_UNLOWERED[o] for o in set(ops) & set(MCU_INT8_UNLOWERED))
    why = {p.name: f"int8 stage on '{p.name}' ({p.kind}): {NO_INT8}" for p in platform.processors
           if p.kind in NO_INT8_KINDS}
    why |= {p.name: f"int8 stage on '{p.name}' ({p.kind}): eecc's Cortex-M int8 build cannot lower {', '.join(bad)}"
            for p in platform.processors if bad and p.kind in MCU_KINDS}
    out = []
    for p in placements:
        on = [n for n in dict.fromkeys(p.processors) if n in why]
        out.append(replace(p, reasons=p.reasons + tuple(why[n] for n in on)) if on else p)
    return out


def count_placements(platform, candidates: int, *, exits_per_processor: int | None = None,
                     max_exits: int | None = None, processors: tuple[str, ...] | None = None) -> int:
    """How many placements `enumerate_placements` gives (the single-processor baselines included), without
    making them: a search too large to score is refused before anything is sized or trained."""
    names = [p.name for p in platform.processors]
    return len(names) + sum(math.comb(candidates, len(procs) - 1)
                            for procs in _sequences(names, candidates, exits_per_processor, max_exits, processors))


def surviving_candidates(placements: list[Placement], costs: list[CandidateCost]) -> list[str]:
    """The union of candidates of placements that fit, in network order: the heads to train."""
    keep = {t for p in placements if p.fits for t in p.exits}
    return [c.tensor for c in costs if c.tensor in keep]


# Head designs per exit: at most this many (location, head) combinations per placement.
MAX_HEAD_COMBOS = 16
# Placements one search scores at most (each ~10-100 ms of a core: thresholds, intervals); kws's README job with
# --exits-per-processor 2 scores 4,002. Beyond it the head combinations narrow (`head_combos_within`), and a
# platform and K whose placements alone exceed it are refused before training (eecc/search/run.py).
MAX_SCORED = 5_000


def head_combos_within(placements: list[Placement], heads: dict, most: int) -> int:
    """The largest max_combos of `with_heads` (16, 8, 4, 2 or 1) that gives at most `most` placements (1 when
    even one head per exit gives more)."""
    combos = MAX_HEAD_COMBOS
    while combos > 1 and _with_heads_count(placements, heads, combos) > most:
        combos //= 2
    return combos


def _with_heads_count(placements: list[Placement], heads: dict, max_combos: int) -> int:
    n = 0
    for p in placements:
        if not p.exits or not p.fits or any(not heads.get(t) for t in p.exits):
            n += 1
            continue
        k = max(1, int(round(max_combos ** (1 / len(p.exits)), 9)))
        n += math.prod(min(k, len(heads[t])) for t in p.exits)
    return n


def with_heads(platform, placements: list[Placement], costs: list[CandidateCost], heads: dict, model: ModelCost,
               *, max_latency_s: float | None = None, device=None,
               max_combos: int = MAX_HEAD_COMBOS, memory=None) -> list[Placement]:
    """Every fitting placement with exits once per choice of trained head at each exit, re-placed with that
    head's MACs and weight bytes (NA's placement rule with the head as part of the stage).

    `heads`: tensor → [(design, head MACs, head weight bytes)], best first (eecc/exits/family.py: the
    Pareto heads, most accurate first). An E-exit placement takes the first floor(max_combos^(1/E)) (at
    least one) of each exit, so the search stays within `max_combos` placements per original one; any
    monotonic exit-cost order already holds for every admitted head. A placement that did not fit, or has
    an exit without a trained head, is passed on as it is (the search prunes it).
    The stage seconds of a measured cost model price each exit's own head design (eecc/cost/segments.py).
    """
    by = {c.tensor: c for c in costs}
    out = []
    for p in placements:
        if not p.exits or not p.fits or any(not heads.get(t) for t in p.exits):
            out.append(p)
            continue
        k = max(1, int(round(max_combos ** (1 / len(p.exits)), 9)))
        for combo in product(*(heads[t][:k] for t in p.exits)):
            cands = [replace(by[t], head_macs=int(m), head_weight_bytes=int(w))
                     for t, (_, m, w) in zip(p.exits, combo)]
            designs = tuple(d for d, _, _ in combo)
            q = place(platform, cands, p.processors, model, max_latency_s, device, heads=designs, memory=memory)
            out.append(replace(q, heads=designs))
    return out


def shown_above(x: float, limit: float) -> str:
    """x (> limit) with the fewest significant digits, at least 4, that still show it above `limit`: at 3 digits a
    limit of 10.456 ms read "10.5 ms > max 10.5 ms" (a new user's finding)."""
    for digits in range(4, 17):
        text = f"{x:.{digits}g}"
        if float(text) > limit:
            return text
    return repr(x)
