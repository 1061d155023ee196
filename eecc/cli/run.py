"""`eecc run OUT --data D.npz | --example kws`: run a bundle's cascade; accuracy, exits, cost, wall time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from rich.markup import escape
from rich.table import Table

from eecc.cli.inspect import console as inspect_console
from eecc.argtypes import at_least
from eecc.errors import EeccError
from eecc.progress import progress
from eecc.report.classes import recall_line, recall_warning
from eecc.report.units import duration, energy, percents
from eecc.runtime.bundle import BundleError, load_bundle


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="run a compiled bundle's cascade with onnxruntime on an .npz data set")
    p.add_argument("bundle", help="the output folder of `eecc compile`")
    p.add_argument("--data", help=".npz with x_<split> (and y_<split> for accuracy), or x and y")
    p.add_argument("--example", choices=("kws",), default=None,
                   help="run on a built-in example's data (the data `eecc compile --example` used)")
    p.add_argument("--split", default="test", help="which split of the .npz to run (default: test)")
    p.add_argument("--batch-size", type=at_least(1, "64"), default=64, help="samples per cascade call (default: 64)")
    p.add_argument("--threads", type=at_least(1, "2"), default=None, help="onnxruntime intra-op threads (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from eecc.runtime.cascade import Cascade

    try:
        bundle = load_bundle(args.bundle)
    except BundleError as exc:
        raise EeccError(str(exc)) from None
    x, y, origin = _data(args)
    x, y = _check(bundle, x, y, origin, args.split)
    cascade = Cascade(bundle, threads=args.threads)
    parts = []
    start = time.perf_counter()
    with progress(not (args.json or args.quiet)) as bar:  # bar with ETA on stderr
        task = bar("cascade", total=len(x))
        for i in range(0, len(x), args.batch_size):
            parts.append(cascade.run(x[i:i + args.batch_size]))
            task.advance(len(parts[-1].exit_stage))
    wall = time.perf_counter() - start
    summary = summarize(bundle.manifest, np.concatenate([p.logits for p in parts]),
                        np.concatenate([p.exit_stage for p in parts]), np.concatenate([p.macs for p in parts]), y)
    summary |= {"bundle": str(args.bundle), "data": origin, "split": args.split,
                "batch_size": args.batch_size, "host_wall_s": wall,
                "host_us_per_sample": 1e6 * wall / max(len(x), 1)}
    if y is not None and len(y):
        summary |= classes(bundle.manifest, np.concatenate([p.predictions for p in parts]), x, y,
                           bundle.input_scale if x.dtype == np.uint8 else None)
    if args.json:
        print(json.dumps(summary))
    else:
        _print(summary)
    return 0


def summarize(manifest: dict, logits: np.ndarray, exit_stage: np.ndarray, macs: np.ndarray,
              y: np.ndarray | None) -> dict:
    stages = manifest["stages"]
    n = len(exit_stage)
    counts = np.bincount(exit_stage, minlength=len(stages)) if n else np.zeros(len(stages), np.int64)
    latency = np.array([s["exit_latency_s"] for s in stages])
    energy = np.array([s["exit_energy_j"] for s in stages])
    original = manifest.get("original_macs")
    out = {
        "samples": n,
        "accuracy": None if y is None or not n else float((logits.argmax(-1) == y).mean()),
        "exits": [{"stage": s["index"], "target": s["target"], "threshold": s["threshold"], "count": int(c),
                   "fraction": float(c) / n if n else 0.0, "accuracy": _acc(logits, y, exit_stage == k)}
                  for k, (s, c) in enumerate(zip(stages, counts))],
        "mean_macs": float(macs.mean()) if n else 0.0,
        "worst_case_macs": int(stages[-1]["exit_macs"]),
        "original_macs": original,
        "mac_reduction": (1.0 - float(macs.mean()) / original) if original and n else None,
        "mean_latency_s": float(latency[exit_stage].mean()) if n else 0.0,
        "worst_case_latency_s": float(latency.max()),
        "mean_energy_j": float(energy[exit_stage].mean()) if n else 0.0,
        "worst_case_energy_j": float(energy.max()),
        "platform": manifest["platform"]["name"],
        # The original model alone on its best processor, as compile measured it (same format, emulated when
        # counted; its accuracy is the compile's test split), else as the search predicted it.
        "best_single": ((manifest.get("deployment") or {}).get("measured") or {}).get("best_single")
        or (manifest.get("deployment") or {}).get("best_single"),
        "objective": manifest.get("objective"),
    }
    if n and all(s.get("latency_calibrated_s") for s in stages):  # every stage counted under QEMU (nu14 F8)
        out["mean_latency_emulated_s"] = float(np.array([s["exit_latency_calibrated_s"] for s in stages])[exit_stage].mean())
        out["mean_energy_emulated_j"] = float(np.array([s["exit_energy_calibrated_j"] for s in stages])[exit_stage].mean())
    return out


def classes(manifest: dict, pred: np.ndarray, x: np.ndarray, y: np.ndarray, scale: float | None) -> dict:
    """`per_class`: the cascade's recall of each class of y [N] by `pred` [N] and balanced accuracy
    (eecc.bundle.verify.class_recall), with the original model's from the manifest when x, y are the compile's
    test split; `compile_test_split`: whether they are (by eecc.bundle.verify.data_digest; None when the bundle
    records no digest, compiled before it did); `recall_warning`: compile's warning when a class's recall falls more
    than the accuracy limit (eecc.report.classes.recall_warning), None elsewhere."""
    from eecc.bundle.verify import class_recall, data_digest

    measured = ((manifest.get("placement") or {}).get("metrics") or {}).get("measured") or {}
    digest = measured.get("test_digest")
    own = None if digest is None else digest == data_digest(x, y, scale)
    pc = class_recall(pred, y)
    original = measured.get("per_class") or {}
    if own and original.get("classes") == pc["classes"]:
        pc |= {"original_recall": original["original_recall"],
               "original_balanced_accuracy": original["original_balanced_accuracy"]}
    limit = ((manifest.get("search") or {}).get("options") or {}).get("max_accuracy_drop")
    return {"per_class": pc, "compile_test_split": own, "recall_warning": recall_warning(pc, limit)}


def _acc(logits: np.ndarray, y: np.ndarray | None, mask: np.ndarray) -> float | None:
    if y is None or not mask.any():
        return None
    return float((logits[mask].argmax(-1) == y[mask]).mean())


def _data(args) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(x, y or None, where they came from) of --data or --example."""
    if args.example:
        if args.data:
            raise EeccError("--example brings its own data; drop --data, or drop --example")
        from eecc.examples import example

        data = example(args.example)[1]
        if f"x_{args.split}" not in data:
            raise EeccError(f"example '{args.example}' has no split '{args.split}'; use --split train, val or test")
        return data[f"x_{args.split}"], data[f"y_{args.split}"], f"example {args.example}"
    if not args.data:
        raise EeccError("no data given; pass --data D.npz (or --example kws for a bundle of the kws example)")
    return (*_load(Path(args.data), args.split), str(args.data))


def _load(path: Path, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    from eecc.data.splits import check_data_file

    check_data_file(path, "give an .npz written with numpy.savez")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise EeccError(f"data file '{path}' is not a readable .npz ({type(exc).__name__}); "
                        "write it with numpy.savez") from None
    for xk, yk in ((f"x_{split}", f"y_{split}"), ("x", "y")):
        if xk in data.files:
            return data[xk], (data[yk] if yk in data.files else None)
    raise EeccError(f"data file '{path}' has no array 'x_{split}' (nor 'x'); it holds {', '.join(data.files)}: "
                    "pass --split with one of those, or save the inputs as x_test/y_test")


def _check(bundle, x: np.ndarray, y: np.ndarray | None, origin: str, split: str):
    """compile's data checks against the bundle's input (shape, layout, dtype, labels); one-line EeccError."""
    from eecc.data.splits import check_arrays

    if x.dtype == np.uint8 and bundle.input_scale is None:
        raise EeccError(f"{origin}: x_{split} is uint8 but bundle '{bundle.path}' records no input scale; "
                        "recompile it with --scale, or store the data as float32 scaled as at compile time")
    shape = bundle.manifest["input"].get("shape") or []
    want = shape[1:] if all(isinstance(d, int) for d in shape[1:]) else list(x.shape[1:])  # symbolic: no check
    scale = bundle.input_scale if x.dtype == np.uint8 else None  # float data: already scaled, as advised above
    return check_arrays(split, x, y, want, bundle.manifest.get("num_classes"), scale, origin, bundle=True)


def _print(s: dict) -> None:
    console = inspect_console()
    title = f"{s['bundle']} on {s['data']} ({s['split']} split), {s['samples']} samples, platform {s['platform']}"
    table = Table(title=escape(title))
    for col in ("stage", "target", "threshold", "exits", "share", "accuracy"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for e, share in zip(s["exits"], percents([e["fraction"] for e in s["exits"]])):
        table.add_row(str(e["stage"]), e["target"], "-" if e["threshold"] is None else f"{e['threshold']:.3g}",
                      str(e["count"]), f"{share} %",
                      "-" if e["accuracy"] is None else f"{100 * e['accuracy']:.2f} %")
    console.print(table)
    if s["accuracy"] is not None:
        console.print(f"accuracy: {100 * s['accuracy']:.2f} %")
        _print_classes(s, console)
    red = f" ({100 * s['mac_reduction']:.1f} % fewer than the original)" if s["mac_reduction"] is not None else ""
    console.print(f"MACs/sample: mean {s['mean_macs']:,.0f}{red}, worst case {s['worst_case_macs']:,}")
    console.print(f"estimated latency: mean {duration(s['mean_latency_s'])}, worst case "
                  f"{duration(s['worst_case_latency_s'])}; energy: mean {energy(s['mean_energy_j'])}, "
                  f"worst case {energy(s['worst_case_energy_j'])}")
    if "mean_energy_emulated_j" in s:
        console.print(f"from emulated instruction counts: latency mean {duration(s['mean_latency_emulated_s'])}, "
                      f"energy mean {energy(s['mean_energy_emulated_j'])}")
    _print_single(s, console)
    console.print(f"host wall time: {s['host_wall_s']:.3f} s ({s['host_us_per_sample']:.1f} us/sample)")


def _print_single(s: dict, console) -> None:
    """The original model alone on its best processor against this run, on one basis: emulated beside
    emulated when compile counted both, else the search's predictions beside the estimates."""
    single = s.get("best_single")
    if not single or single.get("mean_energy_j") is None:
        return
    emulated = single.get("basis") == "emulated" and "mean_energy_emulated_j" in s
    joules, seconds = ((s["mean_energy_emulated_j"], s["mean_latency_emulated_s"]) if emulated
                       else (s["mean_energy_j"], s["mean_latency_s"]))
    what = " ".join(w for w in (single.get("numeric"), "original model") if w)
    console.print(f"{what} alone on {single['processors'][0]} ({'emulated' if emulated else 'predicted'}; accuracy "
                  f"on the compile's test split): accuracy {100 * single['accuracy']:.2f} %, latency "
                  f"{duration(single['mean_latency_s'])}, energy {energy(single['mean_energy_j'])} per sample; "
                  f"this bundle ({'emulated' if emulated else 'estimated'}): {joules / single['mean_energy_j']:.2f}x "
                  f"the energy, {seconds / single['mean_latency_s']:.2f}x the latency")


def _print_classes(s: dict, console) -> None:
    """On a skewed split, the cascade's per-class recall beside the original's when the data is the compile's test
    split (the manifest's figures, and compile's warning), else alone, saying why."""
    pc = s.get("per_class")
    line = recall_line(pc, s["split"])
    if not line:
        return
    console.print(line)
    if "original_recall" in pc:
        if s["recall_warning"]:
            console.print(f"warning: {s['recall_warning']}")
        return
    known = "the original model's per-class recall is known on the compile's test split only"
    if s["compile_test_split"] is None:
        console.print(f"{known}, and this bundle records no digest of that split (compiled by an older eecc), so "
                      "eecc cannot tell whether this data is it: `eecc inspect` and the report show its figures there")
    elif s["compile_test_split"]:
        console.print("this data is the compile's test split, but the bundle records no per-class recall of the "
                      "original model on it")
    else:
        console.print(f"{known}, and this data is not that split: run the original model on it to compare")
