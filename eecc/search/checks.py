"""Checks that stop a search before anything is trained: data splits, search size, MAC floor, dropped heads."""

from __future__ import annotations

import math

from eecc.data.splits import MIN_SAMPLES, VAL_FRACTION, Splits, require_test, uncertainty_pt
from eecc.errors import EeccError
from eecc.exits.chance import drop_threshold
from eecc.exits.heads import TrainConfig
from eecc.exits.run import ExitsRun, Plan
from eecc.search.chance import dropped_reason
from eecc.search.placement import MAX_SCORED, Placement, count_placements
from eecc.search.search import SearchOptions
from eecc.targets.platform import Platform


def checked_splits(plan: Plan, data, scale: float | None):
    """The plan's splits of `data`; EeccError without a test split (the search reports on it: nu11 saw nan and 0 %)
    or with a validation split too small or of one class."""
    data = plan.splits(data, scale)
    require_test(data)
    check_validation_size(data, plan.num_classes)
    return data


def check_placement(plan: Plan, platform: Platform, processors: tuple[str, ...] | None, per: int | None) -> None:
    """--placement P0,...,PE (the processor of each stage, in order): EeccError, naming the platform's processors
    and a placement that works, unless every name is one of the platform's, in platform order (the data flows
    forward, as in every enumerated placement), with 1 <= E <= the model's candidate exits, and without
    --exits-per-processor (the placement already says how many exits each processor runs)."""
    if processors is None:
        return
    names = [p.name for p in platform.processors]
    given = ",".join(processors)
    example = ",".join(names if len(names) > 1 else names * 2)
    known = (f"platform '{platform.name}' has the processors {', '.join(names)}, in that order "
             f"(e.g. --placement {example})")
    if per is not None:
        raise EeccError(f"--placement {given} fixes the exits on each processor; drop --exits-per-processor {per}")
    unknown = [p for p in processors if p not in names]
    if unknown:
        raise EeccError(f"--placement {given}: no processor '{unknown[0]}'; {known}")
    if len(processors) < 2:
        raise EeccError(f"--placement {given} names one stage: give the processor of each stage, two or more (one "
                        f"exit or more); {known}")
    if [names.index(p) for p in processors] != sorted(names.index(p) for p in processors):
        raise EeccError(f"--placement {given}: stages run in platform order; {known}")
    if len(processors) - 1 > len(plan.costs):
        raise EeccError(f"--placement {given} asks for {len(processors) - 1} exits; the model has "
                        f"{len(plan.costs)} candidate exit(s): name at most {len(plan.costs) + 1} stages")


def check_search_size(plan: Plan, platform: Platform, per: int | None,
                      processors: tuple[str, ...] | None = None) -> None:
    """EeccError before anything is sized or trained when the placements alone exceed MAX_SCORED (nu9: K = 3 on a
    10-candidate model ran for over 14 min with no end in sight), naming the largest K that stays within it."""
    n = count_placements(platform, len(plan.costs), exits_per_processor=per, processors=processors)
    if n <= MAX_SCORED:
        return
    if processors is not None:
        raise EeccError(f"--placement {','.join(processors)} gives {n:,} placements of the model's {len(plan.costs)} "
                        f"candidate exits, more than one search scores ({MAX_SCORED:,}); name fewer stages")
    fits = [(k, m) for k in range((per or 1) - 1, 0, -1)
            for m in [count_placements(platform, len(plan.costs), exits_per_processor=k)] if m <= MAX_SCORED]
    what = f"--exits-per-processor {per}" if per is not None else "one exit per processor"
    raise EeccError(f"{what} gives {n:,} placements of the model's {len(plan.costs)} candidate exits on "
                    f"{len(platform.processors)} processor(s), more than one search scores ({MAX_SCORED:,}, each "
                    "~10-100 ms of a core); " + (f"use --exits-per-processor {fits[0][0]} ({fits[0][1]:,} placements)"
                                                  if fits else "use a platform with fewer processors"))


def check_validation_size(data: Splits, num_classes: int) -> None:
    """A head is kept only when its first-epoch validation accuracy beats chance by max(margin, 3σ)
    (eecc/exits/heads.py `drop_threshold`, applied in eecc/train/fit.py); on a validation split so small that this
    bar is above 100 %, every head would be dropped and the later messages would blame the labels or the placement.

    Fewer than MIN_SAMPLES validation samples are refused too: thresholds chosen on them mean little.
    Raises EeccError naming the split's size and the way out."""
    n = len(data.val)
    if n < MIN_SAMPLES:
        held = data.val.index is not None  # held out of the training data (no x_val given)
        where = (f"eecc held out {n} of the {n + len(data.train)} training samples for validation" if held
                 else f"the validation split holds {n} sample(s)")
        raise EeccError(f"{where}: too few to judge exit heads and choose thresholds on (an accuracy on them is "
                        f"uncertain by up to ±{uncertainty_pt(n):.0f} pt, 95 %); give at least {MIN_SAMPLES} "
                        "in x_val/y_val" + (f", or at least {math.ceil(MIN_SAMPLES / VAL_FRACTION)} training samples"
                                            if held else ""))
    bar = drop_threshold(data.val.y, num_classes, TrainConfig().drop_margin)
    if bar > 1.0:
        raise EeccError(f"the validation split holds {len(data.val)} sample(s): too few to tell an exit head from "
                        f"chance (chance + 3σ on it is {bar:.0%}, above any accuracy); give more training samples "
                        "(eecc holds out a stratified share of them) or x_val/y_val")


def validation_resolution(data: Splits, options: SearchOptions) -> str | None:
    """A warning when one validation sample is worth more than the accuracy limit the thresholds are chosen under
    (nu14 F9: 40 samples, 2.5 pt each, against the 1 pt limit; the test drop came out 1.25 pt and nothing said
    why). None without a limit, with --guarantee (it says itself what so few samples certify) or with thresholds
    chosen on the training split."""
    limit, n = options.max_accuracy_drop, len(data.val)
    if not limit or options.guarantee is not None or options.calibrate_on != "val" or n * limit >= 1 - 1e-9:
        return None
    need = math.ceil(1 / limit - 1e-9)  # samples for one to be worth the limit at most
    if data.val.index is not None:  # held out of the training samples (no x_val given)
        more = (f"give more training samples (eecc holds out {100 * VAL_FRACTION:.0f} % of them: "
                f"{math.ceil(need / VAL_FRACTION):,} give {need:,})")
    else:
        held = int(round(VAL_FRACTION * len(data.train)))
        more = f"give at least {need:,} samples in x_val/y_val" + (
            f", or leave x_val/y_val out (eecc then holds out {100 * VAL_FRACTION:.0f} % of the "
            f"{len(data.train):,} training samples, about {held:,})" if held >= need else "")
    return (f"the validation split holds {n} samples: one is {100 / n:.2f} pt of its accuracy, more than the "
            f"{100 * limit:g} pt accuracy limit the thresholds are chosen under, so the test drop can exceed the "
            f"limit; {more}, or certify the drop with --guarantee P")


def check_default_heads(exits: ExitsRun) -> None:
    """The default placement is one placement: a dropped head leaves nothing to search, and the search
    would then blame the platform limits for it. The message says why (eecc/search/chance.py dropped_reason)."""
    dropped = [r for r in exits.results if r.dropped]
    if dropped:
        r = dropped[0]
        why, others = dropped_reason(r.first_epoch_accuracy, exits.logits, exits.plan.num_classes)
        raise EeccError(f"the default placement's exit at '{r.spec.tensor}' was dropped: {why}"
                        + ("; run compile with --search to consider other exit placements" if others else ""))


def check_all_heads(exits: ExitsRun) -> None:
    """--search with every head dropped: why, before the search can only say that each placement lost its heads
    (nu12 F2: a 10-sample validation split was blamed on the labels)."""
    if exits.results and all(r.dropped for r in exits.results):
        best = max(r.first_epoch_accuracy for r in exits.results)
        why, _ = dropped_reason(best, exits.logits, exits.plan.num_classes)
        raise EeccError(f"no feasible placement: every exit head was dropped: the best {why}")


def check_macs_floor(options: SearchOptions, placements: list[Placement], plan: Plan,
                      everything: list[Placement]) -> None:
    """A mean-MAC limit below every placement's first exit cannot be met by any thresholds; when the
    search's placements (`everything`) go cheaper than the default one, the advice says --search."""
    limit = options.max_mean_macs
    cost = {c.tensor: c for c in plan.costs}

    def floor_of(ps: list[Placement]) -> float | None:
        firsts = [cost[p.exits[0]] for p in ps if p.fits and p.exits and p.exits[0] in cost]
        return min((c.backbone_macs + c.head_macs for c in firsts), default=None)

    floor = floor_of(placements)
    if limit is None or floor is None or limit >= floor:
        return
    cheapest = floor_of(everything)
    search = (f", or add --search (its cheapest placement exits from {cheapest:,.0f} MACs)"
              if cheapest is not None and cheapest < floor else "")
    raise EeccError(f"no feasible placement: max mean MACs {limit:,.0f} is below the cheapest possible "
                    f"({floor:,.0f}, every sample at the first exit); raise --max-macs{search}")
