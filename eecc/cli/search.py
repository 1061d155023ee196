"""`eecc search MODEL.onnx [--target T] --data D.npz [--json]`: placements x thresholds, chosen marked."""

from __future__ import annotations

import json
import math
import time

from eecc.cli.inspect import add_head_budget_arg, add_input_shape_arg, console as inspect_console
from eecc.argtypes import at_least, names, non_negative, positive
from eecc.data.splits import VAL_FRACTION
from eecc.errors import EeccError
from eecc.search.confidence import METRICS, threshold_text
from eecc.exits.ensemble import WEIGHT_MODES
from eecc.search.ensemble import DECISIONS
from eecc.report.units import count, duration, energy, percents
from eecc.search.intervals import fmt
from eecc.search.search import SearchOptions
from eecc.search.thresholds import METHODS

# A user who did not say how much accuracy they give up should not lose more than this (points).
DEFAULT_MAX_ACC_DROP = 1.0


def register(subparsers) -> None:
    p = subparsers.add_parser("search", help="search exit placements and thresholds for a platform")
    p.add_argument("model", help="the trained classifier, .onnx")
    p.add_argument("--target", default="psoc6",
                   help="a built-in platform (see `eecc targets`) or a .toml (default: psoc6)")
    p.add_argument("--data", required=True, help=".npz with x_train, y_train [, x_val, y_val, x_test, y_test]")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_search_args(p)
    p.set_defaults(func=run)


def add_search_args(p) -> None:
    """Options shared by `eecc search` and `eecc compile`."""
    p.add_argument("--metric", choices=METRICS, default="max_softmax", help="confidence metric")
    p.add_argument("--method", choices=METHODS, default="auto",
                   help="threshold search: exact (<= 1e6 combinations under auto) or the NA graph")
    p.add_argument("--objective", choices=("energy", "latency", "macs"), default=None,
                   help="what the scalar cost counts: mean energy or latency per sample on the device (measured "
                        "cost model), or MACs; default energy (the platform gives power figures)")
    p.add_argument("--exits-per-processor", type=at_least(1, "2"), default=None, metavar="K",
                   help="up to K exits on each processor, stages on one core back to back (default: one exit per "
                        "processor, at most P-1 exits as in NA, on all the processors or a subset; two on a "
                        "one-processor platform)")
    p.add_argument("--placement", type=names("m0plus,m4"), default=None, metavar="P0,P1,...",
                   help="the processor of each stage, in platform order (one exit fewer than stages): only placements "
                        "on these are searched, beside the original model alone on each processor")
    p.add_argument("--w-eff", type=non_negative("0.9"), default=0.9,
                   help="weight of mean cost / the original's cost (in the objective's unit)")
    p.add_argument("--w-acc", type=non_negative("0.1"), default=0.1, help="weight of the accuracy drop in points")
    p.add_argument("--max-acc-drop", type=non_negative("0.5", inf=True), default=DEFAULT_MAX_ACC_DROP, metavar="POINTS",
                   help="hard limit on the validation accuracy drop, in percentage points "
                        f"(default {DEFAULT_MAX_ACC_DROP}; 'inf' lifts it)")
    p.add_argument("--guarantee", type=float, default=None, metavar="P",
                   help="choose thresholds so that the --max-acc-drop limit holds on unseen data with probability "
                        ">= P (e.g. 0.95; Learn then Test on the validation split)")
    p.add_argument("--max-macs", default=None, metavar="MACS|PCT%",
                   help="hard limit on mean MACs per sample: a number, or a share of the original ('60%%')")
    p.add_argument("--max-latency-ms", type=positive("50"), default=None, metavar="MS",
                   help="worst-case latency limit; default: the platform's max_latency_s")
    p.add_argument("--calibrate-on", choices=("val", "train"), default="val",
                   help="the split the thresholds are chosen on: val, x_val/y_val or, without them, the "
                        f"{100 * VAL_FRACTION:.0f}%% of the training samples eecc holds out; train, the training samples themselves, as NA does "
                        "without a validation set (optimistic: a warning is given)")
    p.add_argument("--correction", type=positive("0.9"), default=None,
                   help="with --calibrate-on train, thresholds are multiplied by this factor (default 1)")
    p.add_argument("--no-fine", action="store_true",
                   help="skip the finer second threshold pass (a denser grid around the chosen thresholds), also in "
                        "the re-search after --finetune-epochs")
    p.add_argument("--decision", choices=DECISIONS, default="single",
                   help="what an exit decides on: its own logits, or the AEP ensemble of every exit reached")
    p.add_argument("--ensemble-weights", choices=WEIGHT_MODES, default=None,
                   help="with --decision ensemble: member weights (AEP modes; default desc)")
    p.add_argument("--aep-prune", action="store_true",
                   help="with --decision ensemble: also rank every sub-ensemble of the chosen exits (JSON 'aep')")
    p.add_argument("--pareto", action="store_true", help="also run NSGA-II and output the Pareto set")
    p.add_argument("--max-exits", type=at_least(1, "3"), default=None,
                   help="with --pareto: most exits per solution (may exceed processors - 1; default: as many as "
                        "there are exit locations)")
    p.add_argument("--scale", type=positive("0.00392156862745098 for 1/255"), default=None, metavar="S",
                   help="uint8 data: x is read as S * x (e.g. 0.00392156862745098 for 1/255; no zero point)")
    add_input_shape_arg(p)
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="feature/training cache directory (default $EECC_CACHE_DIR, else .eecc-cache)")
    p.add_argument("--heads", choices=("family", "blueprint"), default="family",
                   help="family: several head designs per exit location, the search chooses among the Pareto-optimal "
                        "ones; blueprint: only the global-pool head (trains about 8x fewer heads)")
    add_head_budget_arg(p)
    add_executor_args(p)


def add_executor_args(p) -> None:
    """Where feature shards, head training and placement scoring run (eecc/driver/executor.py)."""
    from eecc.driver.executor import EXECUTORS

    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: this process; process: a local process pool; ray: a Ray cluster (pip install 'eecc[ray]')")
    p.add_argument("--workers", type=at_least(1, "2"), default=None,
                   help="tasks at once for --executor process|ray (default: the CPU count)")
    p.add_argument("--ray-address", default=None,
                   help="with --executor ray: a running cluster (e.g. auto or ray://host:10001); default: a local runtime")


def executor_from_args(args):
    from eecc.driver.executor import make_executor

    return make_executor(args.executor, args.workers, args.ray_address)


def search_options(args, original_macs: int) -> SearchOptions:
    if args.max_acc_drop is not None and args.max_acc_drop < 0:
        raise EeccError(f"--max-acc-drop {args.max_acc_drop} is negative; give a drop in points, e.g. 0.5")
    for flag, weight in (("--w-eff", args.w_eff), ("--w-acc", args.w_acc)):
        if not weight >= 0:  # a negative weight rewards what the objective should penalise
            raise EeccError(f"{flag} {weight} must be >= 0 (a weight in the search objective), e.g. {flag} 0.5")
    if args.correction is not None and args.calibrate_on != "train":  # else silently ignored: say so
        raise EeccError(f"--correction {args.correction:g} applies only to thresholds calibrated on the training set; "
                        "add --calibrate-on train, or drop --correction")
    if args.max_exits is not None and not args.pareto:  # else accepted and unused: placements take their exits
        raise EeccError(f"--max-exits {args.max_exits} bounds the exits of --pareto's solutions only; add --pareto, "
                        "or drop --max-exits (the searched placements have one exit per processor, or up to "
                        "--exits-per-processor K)")
    if args.ensemble_weights is not None and args.decision != "ensemble":  # else accepted and unused
        raise EeccError(f"--ensemble-weights {args.ensemble_weights} weighs the members of an ensemble decision and "
                        f"does nothing with --decision {args.decision}; add --decision ensemble, or drop "
                        "--ensemble-weights")
    if args.aep_prune and args.decision != "ensemble":  # else accepted, recorded as prune: true, and unused
        raise EeccError("--aep-prune ranks the sub-ensembles of an ensemble decision and does nothing with "
                        f"--decision {args.decision}; add --decision ensemble, or drop --aep-prune")
    drop = args.max_acc_drop
    g = args.guarantee
    if g is not None and not 0 < g < 1:
        raise EeccError(f"--guarantee {g} must be a probability in (0, 1), e.g. 0.95")
    if g is not None and (drop is None or drop == float("inf")):
        raise EeccError("--guarantee needs a finite --max-acc-drop POINTS: that is the limit it guarantees")
    return SearchOptions(
        metric=args.metric, method=args.method, w_eff=args.w_eff, w_acc=args.w_acc,
        max_accuracy_drop=None if drop is None or drop == float("inf") else drop / 100.0,
        max_mean_macs=_max_macs(args.max_macs, original_macs),
        calibrate_on=args.calibrate_on, correction=1.0 if args.correction is None else args.correction, fine=not args.no_fine,
        pareto=args.pareto, max_exits=args.max_exits, decision=args.decision,
        ensemble_weights=args.ensemble_weights or "desc", prune=args.aep_prune, guarantee=args.guarantee,
        objective=args.objective, placement=args.placement)


def latency_limit(args) -> float | None:
    return None if args.max_latency_ms is None else args.max_latency_ms / 1e3


def _max_macs(text: str | None, original: int) -> float | None:
    if text is None:
        return None
    try:
        value = float(text[:-1]) / 100.0 * original if text.endswith("%") else float(text)
    except ValueError:
        raise EeccError(f"--max-macs '{text}' is not a number or a percentage like '60%'") from None
    if not (math.isfinite(value) and value > 0):
        raise EeccError(f"--max-macs '{text}' must be a finite number of MACs > 0 or a percentage like '60%'")
    return value


def run(args) -> int:
    from eecc.search.run import search_model
    from eecc.exits.run import plan_exits
    from eecc.targets.platform import load_platform

    from eecc.data.cache import cache_root

    cache_root(args.cache_dir)  # a file there fails now, not after the model and data are read
    t0 = time.perf_counter()
    platform = load_platform(args.target)
    plan = plan_exits(args.model, input_shape=args.input_shape, budget=args.head_budget, data=args.data)
    options = search_options(args, plan.blocks.total_macs)
    with executor_from_args(args) as executor:
        sr = search_model(plan, args.data, platform, options=options, max_latency_s=latency_limit(args),
                          scale=args.scale, cache_dir=args.cache_dir, progress=not (args.json or args.quiet),
                          strict=False, executor=executor, exits_per_processor=args.exits_per_processor,
                          head_set=args.heads)
    result = sr.result
    result.timings |= {**sr.timings, "total_s": time.perf_counter() - t0}
    result.options["target"] = platform.name
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print_table(result)
    if result.chosen is None:
        raise EeccError(result.infeasible)
    return 0


def _exits(p) -> str:
    """Exit tensors, each with its head design when the search chose among several."""
    return ", ".join(f"{t} ({h})" if h else t for t, h in zip(p.exits, p.heads or [""] * len(p.exits)))


def print_table(result) -> None:
    from rich.table import Table

    console = inspect_console(width=180)
    orig = result.original
    device = any("mean_energy_j" in p.extra for p in result.placements)
    table = Table(title=f"placements (original: accuracy {100 * orig['accuracy']:.2f} %, "
                        f"{orig['macs']:,} MACs; objective {result.objective}; test split)")
    cols = ("", "exits", "processors", "thresholds", "test acc [95 %]", "mean MACs [95 %]",
            *(("mean energy", "mean latency") if device else ()), "Δ acc pt", "Δ MACs", "oracle MACs", "exit rates %", "feasible")
    for col in cols:
        table.add_column(col, justify="left" if col in ("", "exits", "processors", "thresholds",
                                                        "exit rates %", "feasible") else "right")
    for i, p in enumerate(result.placements):
        j = p.to_json()
        figures = (energy(j["mean_energy_j"]), duration(j["mean_latency_s"])) if device else ()
        table.add_row(
            "*" if i == result.chosen else "", _exits(p) or "(none: original model)",
            " → ".join(p.processors or ()),
            ", ".join(map(threshold_text, p.thresholds)), fmt(j["accuracy"], j.get("intervals", {}).get("accuracy")),
            count(j["mean_macs"], j.get("intervals", {}).get("mean_macs")), *figures,
            f"{100 * (j['accuracy'] - orig['accuracy']):+.2f}",
            f"{100 * (j['mean_macs'] / orig['macs'] - 1):+.1f} %", f"{j['oracle_macs']:,.0f}",
            ", ".join(percents(j["exit_rates"])),  # as compile prints them: adding up to 100 (nu13 F8)
            "yes" if p.feasible else "no: " + "; ".join(p.reasons))
    console.print(table)
    if device:
        from eecc.driver.deployment import deployment_record
        console.print("  predicted (cost model): " + deployment_record(result.to_json())["line"])
    for p in result.pruned:
        console.print(f"  pruned before training: {', '.join(p['exits']) or '(none: original model)'} on "
                      f"{' → '.join(p['processors'])}: {'; '.join(p['reasons'])}")
    best = result.best
    if best is not None and "guarantee" in best.extra:
        g = best.extra["guarantee"]
        console.print(f"  guarantee: drop <= {100 * g['max_drop']:.2f} pt on unseen data with probability >= "
                      f"{g['confidence']:g} (bound {100 * g['drop_bound']:.2f} pt, {g['tested']} of {g['front']} "
                      f"threshold sets tested on {g['n_test']} validation samples)")
    if best is not None and "ece" in best.extra:
        console.print("  chosen ECE per position (test, 15 bins; last = final): "
                      + " ".join(f"{e:.3f}" for e in best.extra["ece"]))
    for sub in (best.extra.get("aep", [])[:5] if best is not None else []):
        console.print(f"  AEP sub-ensemble {', '.join(sub['exits'])}: accuracy {100 * sub['accuracy']:.2f} %, "
                      f"mean MACs {sub['mean_macs']:,.0f}, val cost {sub['val_cost']:.4f}"
                      + ("" if sub["feasible"] else " (infeasible)"))
    for name, b in result.baselines.items():
        device = "".join(f", mean {what} {b[k] * 1e3:.4g} {u}" for k, what, u in (
            ("mean_energy_j", "energy", "mJ"), ("mean_latency_s", "latency", "ms")) if k in b)
        console.print(f"  baseline {name}: accuracy {100 * b['accuracy']:.2f} %, "
                      f"mean MACs {b['mean_macs']:,.0f}{device}")
    if result.pareto:
        merged = sum(p.get("merged", 0) for p in result.pareto)
        same = (f"; {merged} more sent every validation sample out at the same exit as one of these, so were the same "
                "policy, and were merged into the cheapest" if merged else "")
        console.print(f"  Pareto set: {len(result.pareto)} solutions{same} (see --json)")
    for w in result.warnings:
        console.print(f"  warning: {w}")
