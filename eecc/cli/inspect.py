"""`eecc inspect MODEL.onnx`: the block-level view, candidate exits and the head blueprint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from eecc.errors import EeccError
from eecc.report.graph_picture import model_dot
from eecc.passes.fuse_blocks import BlockGraph


def register(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="show blocks, costs and candidate exits of a model (or a bundle)")
    p.add_argument("path", help="an ONNX model, or a bundle directory written by `eecc compile`")
    add_input_shape_arg(p)
    add_head_budget_arg(p)
    p.set_defaults(head_budget=None)  # given or not: a bundle refuses it (_inspect_bundle); a model takes the default
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--png", default=None, metavar="FILE",
                   help="also draw the block graph (a bundle: partitioned into stages) to FILE with graphviz")
    p.set_defaults(func=run)


def add_input_shape_arg(p) -> None:
    """`--input-shape`, shared by inspect, exits, search and compile: the per-sample shape of any rank (nu12: the
    metavar C,H,W read as if a 1-D signal's model could not take one)."""
    p.add_argument("--input-shape", type=parse_shape, default=None, metavar="DIMS",
                   help="per-sample input shape without the batch dim, for models with symbolic dims; any rank: "
                        "e.g. 256 (L), 1,256 (C,L) or 1,28,28 (C,H,W)")


def add_head_budget_arg(p, *aliases: str) -> None:
    """`--head-budget`, shared by inspect, exits, search and compile (eecc/exits/heads.py)."""
    from eecc.exits.heads import DEFAULT_BUDGET

    p.add_argument("--head-budget", *aliases, dest="head_budget", type=_head_budget, default=DEFAULT_BUDGET,
                   metavar="F|P%", help="most MACs one exit head may cost, as a fraction (0.05) or percentage (5%%) "
                                        f"of the model's (default {DEFAULT_BUDGET:g})")


def _head_budget(text: str) -> float:
    from eecc.exits.heads import parse_head_budget

    try:
        return parse_head_budget(text)
    except EeccError as exc:  # argparse reports it as a usage error: one line naming the option, exit code 2
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_shape(text: str) -> list[int]:
    tokens = [t.strip() for t in (text.split(",") if "," in text else text.split("x"))]  # 1,28,28 or 1x28x28
    bad = next((t for t in tokens if not t.lstrip("+-").isdigit()), None)
    if bad is not None:
        raise EeccError(f"--input-shape '{text}': {repr(bad) if bad else 'an empty entry'} is not an integer; "
                        "give a comma-separated list of integers, e.g. 1,28,28")
    dims = [int(t) for t in tokens]
    if not dims or any(d <= 0 for d in dims):
        raise EeccError(f"--input-shape '{text}' needs positive integers, e.g. 1,28,28")
    return dims


def run(args) -> int:
    path = Path(args.path)
    if path.is_dir():
        return _inspect_bundle(path, args)
    from eecc.driver.pipeline import analyse

    from eecc.exits.heads import design_from_blocks

    from eecc.exits.heads import DEFAULT_BUDGET

    graph, blocks = analyse(path, input_shape=args.input_shape)
    budget = DEFAULT_BUDGET if args.head_budget is None else args.head_budget
    design = design_from_blocks(blocks, budget=budget)  # which candidates a head fits
    if getattr(args, "png", None):
        write_png(args, lambda: model_dot(graph, title=f"{path.name}: {len(blocks.blocks)} blocks, "
                                                        f"{len(blocks.candidates())} candidate exits"))
    if args.json:
        print(json.dumps(model_summary(path.name, blocks, design)))
    else:
        print_blocks(path.name, blocks, console(), design)
    return 0


def _inspect_bundle(path: Path, args) -> int:
    """A bundle's stages were cut and their heads chosen by compile: --input-shape and --head-budget, which shape
    the analysis of a model, have nothing to act on here and are refused rather than ignored (fx16's help walk)."""
    try:
        from eecc.cli import bundle_view  # written with the bundle format
    except ImportError:
        raise EeccError(f"'{path}' is a directory; give an ONNX model file") from None
    given = [flag for flag, value in (("--input-shape", getattr(args, "input_shape", None)),
                                      ("--head-budget", getattr(args, "head_budget", None))) if value is not None]
    if given and (path / bundle_view.MANIFEST).is_file():  # else show() says the folder is no bundle
        flags = " and ".join(given)
        raise EeccError(f"{flags} appl{'y' if len(given) > 1 else 'ies'} to an ONNX model, and '{path}' is a bundle "
                        f"whose stages eecc compile already fixed; drop {flags} to inspect the bundle, or inspect "
                        "the model file with them")
    return bundle_view.show(path, args)


def write_png(args, source) -> None:
    """--png: the picture goes to the file; the note goes to stderr so that --json keeps stdout clean."""
    from eecc.report.graph_picture import render_png

    out = render_png(source(), args.png)
    print(f"wrote {out}", file=sys.stderr)


def console(width: int = 160) -> Console:
    """Tables stay readable when piped: rich would otherwise squeeze them to 80 columns."""
    plain = Console()
    return plain if plain.is_terminal else Console(width=width)


def model_summary(name: str, bg: BlockGraph, design=None) -> dict:
    """The JSON of `eecc inspect MODEL`; with `design` (eecc/exits/heads.py) each candidate says whether an exit
    head fits it (`head_fits`) or why not (`no_head`), and the head budget and any advice are given."""
    rejected = design.rejected if design is not None else {}
    budget = {} if design is None else {
        "head_budget": {"fraction": design.budget, "macs": design.budget_macs},
        "head_budget_advice": design.budget_advice()}
    return {
        "model": name,
        "total_macs": bg.total_macs,
        "total_params": bg.total_params,
        "blocks": [{"index": b.index, "ops": list(b.ops), "output": b.output, "shape": list(b.shape),
                    "macs": b.macs, "cumulative_macs": b.cumulative_macs, "params": b.params,
                    "activation_bytes": b.activation_bytes, "candidate_exit": b.candidate_exit,
                    "head_fits": b.candidate_exit and b.output not in rejected, "no_head": rejected.get(b.output)}
                   for b in bg.blocks] + [_head_row(bg)],
        **budget,
        "head": {"ops": list(bg.head.ops), "input": bg.head.input, "macs": bg.head.macs},
        "output_kind": bg.head.output_kind,
        "normalized": list(bg.head.normalized),
    }


def _head_row(bg: BlockGraph) -> dict:
    """The head is listed as the last block so that cumulative MACs end at the model total."""
    h = bg.head
    return {"index": len(bg.blocks), "ops": list(h.ops), "output": h.output, "shape": [h.num_classes],
            "macs": h.macs, "cumulative_macs": bg.total_macs, "params": bg.total_params - sum(
                b.params for b in bg.blocks), "activation_bytes": 4 * h.num_classes, "candidate_exit": False,
            "head_fits": False, "no_head": None}


def print_blocks(name: str, bg: BlockGraph, console: Console, design=None) -> None:
    """The block table; `exit?` is yes where an exit head fits, `no head` where the candidate gets none (why below)."""
    summary = model_summary(name, bg, design)
    fits = sum(row["head_fits"] for row in summary["blocks"]) if design is not None else len(bg.candidates())
    table = Table(title=f"{name}: {len(bg.blocks)} backbone blocks, {len(bg.candidates())} candidate exits"
                        + (f", {fits} with a head within the budget" if design is not None else ""))
    for col in ("#", "ops", "output", "shape", "MACs", "cum. %", "params", "act. bytes", "exit?"):
        table.add_column(col, justify="right" if col not in ("ops", "output") else "left")
    for row in summary["blocks"]:
        exit_ = ("yes" if row["head_fits"] or design is None else "no head") if row["candidate_exit"] else ""
        table.add_row(str(row["index"]), _short_ops(row["ops"]), row["output"], "×".join(map(str, row["shape"])),
                      f"{row['macs']:,}", f"{100 * row['cumulative_macs'] / max(bg.total_macs, 1):.1f}",
                      f"{row['params']:,}", f"{row['activation_bytes']:,}", exit_)
    console.print(table)
    for tensor, why in (design.rejected if design is not None else {}).items():
        console.print(f"no head at {tensor}: {why}")
    if design is not None and design.budget_advice():
        console.print(f"head budget {design.budget_macs:,} MACs ({design.budget:.1%} of the model's): "
                      f"{design.budget_advice()}")
    console.print(f"head blueprint: {' → '.join(bg.head.ops)} on '{bg.head.input}' "
                  f"({bg.head.macs:,} MACs, {bg.head.num_classes} classes)")
    console.print(f"total: {bg.total_macs:,} MACs, {bg.total_params:,} params")
    if bg.head.output_kind != "logits":
        console.print(f"output: {bg.head.output_kind} probabilities, read as log-probabilities (softmax of them = "
                      "the model's own probabilities); every confidence and ECE is computed from those")
    if bg.head.normalized:
        console.print(f"normalised on load: {', '.join(bg.head.normalized)} ({normalised_note(bg)})")


def normalised_note(bg: BlockGraph) -> str:
    """What the load-time passes (eecc/model/normalize.py) did to the outputs, and, only where normalize_float ran
    (nu15 F4: the clause was added to a float32 model's unfix_batch), that the float16 model's stages are float32."""
    done = bg.head.normalized
    kept = ("the probability output kept, the label output dropped" if "select_probabilities" in done
            else f"the output flattened to [N, {bg.head.num_classes}], values unchanged" if "flatten_output" in done
            else None if "normalize_float" in done else "outputs unchanged")
    fp32 = "float16 computed in float32: eecc analyses and writes float32 stages" if "normalize_float" in done else None
    return "; ".join(p for p in (kept, fp32) if p)


def _short_ops(ops: list[str]) -> str:
    text = "+".join(ops)
    return text if len(text) <= 40 else text[:37] + "..."
