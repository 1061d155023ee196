"""`eecc exits MODEL.onnx --data D.npz`: train every candidate exit head on the frozen backbone and score it."""

from __future__ import annotations

import json

from rich.table import Table

from eecc.errors import EeccError


def register(subparsers) -> None:
    from eecc.cli.inspect import add_head_budget_arg, add_input_shape_arg
    from eecc.argtypes import at_least, positive
    from eecc.cli.search import add_executor_args

    p = subparsers.add_parser("exits", help="train all candidate exit heads (frozen backbone) and score them")
    p.add_argument("model", help="the trained classifier, an ONNX file")
    p.add_argument("--data", required=True, help=".npz with x_train, y_train and optional x_/y_ val, test")
    p.add_argument("--scale", type=positive("0.00392156862745098 for 1/255"), default=None, help="factor for uint8 inputs, e.g. 0.00392156862745098")
    add_input_shape_arg(p)
    add_head_budget_arg(p, "--budget")  # --budget: its name before compile and search took it too
    p.add_argument("--candidates", default=None, help="comma-separated candidate tensors (default: all)")
    p.add_argument("--cache-dir", default=None, help="feature/result cache (default $EECC_CACHE_DIR or .eecc-cache)")
    p.add_argument("--epochs", type=at_least(1, "5"), default=None, help="max training epochs per head (default 5)")
    p.add_argument("--seed", type=at_least(0, "0"), default=0,
                   help="seed of the heads' initial weights and batch order, and of the validation share held out "
                        "of the training samples when the data have no x_val (default 0, the seed search and "
                        "compile use)")
    p.add_argument("--heads", choices=("family", "blueprint"), default="family",
                   help="family: several head designs per candidate (eecc search/compile choose among the "
                        "Pareto ones: status pareto or * chosen, the most accurate); blueprint: only the global-pool head")
    p.add_argument("--reference-pass", action="store_true",
                   help="also time one plain onnxruntime pass over train+val (timings.reference_pass_s)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_executor_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from eecc.exits.run import plan_exits, run_exits
    from eecc.exits.heads import TrainConfig

    from eecc.data.cache import cache_root

    cache_root(args.cache_dir)  # a file there fails now, not after the model and data are read
    config = TrainConfig(seed=args.seed, **({"epochs": args.epochs} if args.epochs else {}))
    candidates = [c for c in args.candidates.split(",") if c] if args.candidates else None
    from eecc.cli.search import executor_from_args

    plan = plan_exits(args.model, input_shape=args.input_shape, budget=args.head_budget, data=args.data)
    check_heads(plan)
    with executor_from_args(args) as executor:
        result = run_exits(plan, args.data, input_shape=args.input_shape, candidates=candidates,
                           scale=args.scale, cache_dir=args.cache_dir, config=config,
                           reference_pass=args.reference_pass, progress=not args.quiet, executor=executor,
                           head_set=args.heads)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    from eecc.cli.inspect import console

    out = console()
    table = Table(title=f"exit candidates of {args.model} ({result.plan.blocks.total_macs:,} MACs)")
    for col in ("#", "location", "shape", "head", "head MACs", "exit cost MACs", "cost %", "val acc", "test acc",
                "epochs", "ECE", "status"):
        table.add_column(col, justify="left" if col in ("location", "shape", "head", "status") else "right")
    total = result.plan.blocks.total_macs
    ece = result.ece()
    loc = {t: k for k, t in enumerate(dict.fromkeys(r.spec.tensor for r in result.tried))}
    for r in result.tried:  # every head tried, grouped by location; pareto and * (the most accurate) are searched
        status = "dropped" if r.dropped else ("* chosen" if r.chosen else ("pareto" if r.pareto else ""))
        table.add_row(str(loc[r.spec.tensor]), r.spec.tensor, "x".join(map(str, r.spec.in_shape)), r.spec.design,
                      f"{r.spec.head_macs:,}", f"{r.spec.exit_macs:,}", f"{100 * r.spec.exit_macs / total:.1f}",
                      _pct(r.val_accuracy), _pct(r.test_accuracy), f"{r.epochs:.3g}",  # < 1: stopped at halving's rung
                      _ece(ece.get(r.spec.tensor)) if r.chosen else "-", status)
    out.print(table)
    for tensor, why in result.plan.design.rejected.items():
        out.print(f"no head at {tensor}: {why}")
    t = result.timings
    ref = f", reference pass {t['reference_pass_s']:.1f} s" if t["reference_pass_s"] is not None else ""
    out.print(f"original model test accuracy {_pct(result.final_test_accuracy)}, "
              f"ECE {_ece(ece.get('final'))} (test split, 15 bins); features {t['features_s']:.1f} s, "
              f"training {t['train_s']:.1f} s{ref}{' (cached)' if result.warm else ''}; "
              f"peak RSS {result.peak_rss_mb:.0f} MB; results in {result.artifacts}")
    return 0


def check_heads(plan) -> None:
    """Nothing to train is a user error (one line, exit code 2), not an empty table: say why and the way out."""
    design = plan.design
    if design.heads:
        return
    if not design.rejected:
        raise EeccError("the model has no candidate exit: no block output before the classifier is a feature map "
                        "or hidden vector that every path passes through (see eecc inspect)")
    advice = design.budget_advice()
    if advice:
        raise EeccError(f"no exit head fits the head budget of {design.budget_macs:,} MACs ({design.budget:.1%} of "
                        f"{design.final_macs:,}) at any of the {len(design.rejected)} candidate exit(s); {advice}")
    first, why = next(iter(design.rejected.items()))
    raise EeccError(f"no exit head fits this model at any of its {len(design.rejected)} candidate exit(s) "
                    f"({first}: {why}); a larger --head-budget would not change that")


def _ece(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"
