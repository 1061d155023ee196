"""`eecc compile MODEL.onnx --target T --data D.npz [--search] [-o OUT]`: the whole flow, one bundle out."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from eecc.cli.inspect import console
from eecc.argtypes import at_least
from eecc.cli.search import add_search_args, executor_from_args, latency_limit, search_options
from eecc.driver.prediction_gap import summary_lines
from eecc.errors import EeccError
from eecc.report.classes import recall_line, recall_warning
from eecc.report.units import count, duration, energy, percents, things
from eecc.search.confidence import exit_rule, threshold_text
from eecc.search.intervals import fmt


def register(subparsers) -> None:
    p = subparsers.add_parser("compile", help="turn a classifier into an early-exit cascade bundle for a platform")
    p.add_argument("model", nargs="?", help="the trained classifier, .onnx (or use --example)")
    p.add_argument("--example", choices=("kws",), default=None,
                   help="use a built-in example model and its data (kws: DS-CNN on synthetic keyword audio)")
    p.add_argument("--target", default="psoc6",
                   help="a built-in platform (see `eecc targets`) or a .toml (default: psoc6)")
    p.add_argument("--data", help=".npz with x_train, y_train, x_test, y_test [, x_val, y_val]")
    p.add_argument("--search", action="store_true",
                   help="search every feasible placement; without it the default placement (even MAC split) is used")
    p.add_argument("-o", "--out", default=None, help="bundle folder (default: out/<model name>)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    p.add_argument("--single-file", action="store_true", help="also write one ONNX file with If gates (batch 1)")
    p.add_argument("--no-codegen", action="store_true", help="skip TVM compilation of the stages")
    p.add_argument("--emulate", action="store_true",
                   help="run the compiled MCU/Cortex-A stages under QEMU on test samples and calibrate latency")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="int8 stages (onnxruntime static QDQ, per-channel); the search runs on the int8 model; "
                        "MCU stages compile to integer kernels")
    p.add_argument("--finetune-epochs", type=at_least(0, "1"), default=0, metavar="N",
                   help="after the search, fine-tune backbone + chosen exits jointly for N epochs, then "
                        "re-search the thresholds on a finer grid (26 per exit, the search's 13; --no-fine skips "
                        "the second pass) (default 0: frozen backbone)")
    p.add_argument("--trainer", choices=("default", "nachos"), default="default",
                   help="nachos: after the search, the chosen exits learn a confidence (NACHOS) that the gates "
                        "compare with ε instead of max-softmax (not with --decision ensemble, --quantize, "
                        "--finetune-epochs)")
    p.add_argument("--json", action="store_true", help="print the manifest as one JSON object on stdout")
    p.add_argument("--no-report", action="store_true", help="skip OUT/report.html and its figures")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_search_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from eecc.driver.compile import CompileOptions, compile_model
    from eecc.exits.run import plan_exits

    from eecc.data.cache import cache_root

    cache_root(args.cache_dir)  # a file there fails now, not after the model and data are read
    if args.emulate and args.no_codegen:  # else accepted, and nothing emulated: no stage was compiled
        raise EeccError("--emulate runs the stages TVM compiles under QEMU, and --no-codegen compiles none; drop "
                        "--no-codegen, or drop --emulate")
    model, data = _inputs(args)
    out = Path(args.out) if args.out else Path("out") / Path(model).stem
    plan = plan_exits(model, input_shape=args.input_shape, budget=args.head_budget, data=data)
    options = CompileOptions(
        target=args.target, out=out, search=args.search,
        search_options=search_options(args, plan.blocks.total_macs), max_latency_s=latency_limit(args),
        input_shape=args.input_shape, scale=args.scale, cache_dir=args.cache_dir, force=args.force,
        single_file=args.single_file, codegen=not args.no_codegen, emulate=args.emulate,
        progress=not (args.json or args.quiet), report=not args.no_report,
        quantize=args.quantize, finetune_epochs=args.finetune_epochs,
        exits_per_processor=args.exits_per_processor,
        trainer=args.trainer, head_set=args.heads, head_budget=args.head_budget)
    with executor_from_args(args) as options.executor:
        manifest = compile_model(model, data, options)
    if args.json:
        print(json.dumps(manifest, default=str))
    else:
        print_summary(manifest, out, console())
    return 0


def _inputs(args) -> tuple[str, object]:
    if args.example:
        if args.model or args.data:
            raise EeccError("--example brings its own model and data; drop MODEL and --data, or drop --example")
        from eecc.examples import example

        model, data = example(args.example)
        return str(model), data
    if not args.model:
        raise EeccError("no model given; pass MODEL.onnx (and --data D.npz) or --example kws")
    if not args.data:
        raise EeccError("no data given; pass --data D.npz with x_train, y_train, x_test, y_test")
    return args.model, args.data


def _print_target_code(stage: dict, console: Console) -> None:
    code, emu = stage.get("codegen") or {}, stage.get("emulation") or {}
    if "skipped" in code:
        console.print(f"    TVM: skipped ({code['skipped']})")
    elif code.get("program"):
        console.print(f"    TVM: {code['kernel_count']} kernels in program {code['program']} "
                      f"(stages {code['program_stages'][0]}-{code['program_stages'][-1]})")
    elif "flash_bytes" in code:
        makefiles = [a["path"][:-len("/Makefile")] for a in stage.get("artifacts") or []
                     if a["path"].endswith("/Makefile")]
        console.print(f"    TVM: {code['kernel_count']} kernels, flash {code['flash_bytes']:,} B, "
                      f"RAM {code['ram_bytes']:,} B{_stack(code)} (without buffer reuse "
                      f"{code['ram_unplanned_bytes']:,} B)"
                      + "".join(f"; builds alone: make in {f}/ ({f}/README.md)" for f in makefiles))
    elif code.get("backend") == "mali":
        fallbacks = code.get("schedule_fallbacks") or 0
        console.print(f"    TVM: {code['kernel_count']} OpenCL kernels"
                      + (f", {fallbacks} with a fallback schedule" if fallbacks else ""))
    if emu.get("instructions"):
        console.print(f"    QEMU: {emu['instructions']:,} instructions/inference, {_agreement(emu)}; calibrated "
                      f"compute {duration(stage['latency_calibrated_s'])} vs {duration(stage['latency_estimate_s'])} estimated")
    elif emu.get("emulator") == "opencl":
        console.print(f"    OpenCL ({emu['device']}): max error vs onnxruntime {emu['max_abs_error']:.1e} "
                      "(correctness only, not speed)")


def _stack(code: dict) -> str:
    return f" incl. {code['stack_bytes']:,} B stack" if code.get("stack_bytes") else ""


def _agreement(emu: dict) -> str:
    """How the emulated stage agrees with onnxruntime's; int8 stages by decisions, as integer kernels round
    differently from onnxruntime's float-summing QDQ reference."""
    n = emu["samples"]
    if "class_parity" not in emu:
        return f"max error vs onnxruntime {emu['max_abs_error']:.1e} over {n} samples"
    flags = emu.get("exit_flag_agreement")
    decisions = f"class {round(emu['class_parity'] * n)}/{n}" + \
        ("" if flags is None else f", exit decision {round(flags * n)}/{n}")
    err = emu.get("max_abs_error") or 0.0
    return (f"vs onnxruntime's int8 stage on {n} samples: {decisions} agree"
            + (f" (float outputs differ by up to {err:.2g}: integer vs float rounding)" if err else ""))


def _print_programs(manifest: dict, console: Console) -> None:
    """Consecutive stages on one core built as one program, and its run as deployed against onnxruntime."""
    for p in (manifest.get("codegen") or {}).get("programs", []):
        console.print(f"  program {p['folder']}/{p['elf']}: stages {p['stages'][0]}-{p['stages'][-1]} back to back "
                      f"(exit gate between them, hand-off left in place), flash {p['flash_bytes']:,} B, "
                      f"RAM {p['ram_bytes']:,} B{_stack(manifest['stages'][p['stages'][0]]['codegen'])}; builds "
                      f"alone: make in {p['folder']}/ ({p['folder']}/README.md)")
        c = p.get("cascade")
        if c:
            n, implied = c["samples"], c.get("mean_instructions_from_stages")
            console.print(f"    QEMU, run as deployed on {n} test samples: exit taken as onnxruntime's for "
                          f"{round(c['exit_agreement'] * n)}/{n}, prediction for {round(c['prediction_agreement'] * n)}/{n}; "
                          f"{c['mean_instructions']:,.0f} instructions/sample"
                          + (f" (the per-stage counts give {implied:,.0f})" if implied else ""))
            near = [abs(d["onnxruntime_confidence"] - d["threshold"]) for d in c.get("disagreements", [])
                    if d.get("onnxruntime_confidence") is not None and d.get("threshold") is not None]
            if near:
                console.print(f"    the samples that differ have a confidence within {max(near):.3f} of a threshold "
                              "(the integer kernels round differently from onnxruntime)")


def stage_figures(stage: dict) -> str:
    """'exit latency 1.22 ms, energy 0.040 mJ (source)': the emulated figures in place of an estimate of ops the
    cost model never measured once --emulate counted the stage and every stage before it (nu15 F2), with the
    estimate beside them; else the figures stage_source names."""
    pred, emulated = stage.get("predicted") or {}, stage.get("exit_latency_calibrated_s")
    if pred.get("unmeasured_ops") and emulated is not None:
        from eecc.cost.coverage import unmeasured_note

        return (f"exit latency {duration(emulated)}, energy {energy(stage['exit_energy_calibrated_j'])} (emulated: "
                f"QEMU's instruction counts replace the cost model's estimate of {duration(stage['exit_latency_s'])}, "
                f"{energy(stage['exit_energy_j'])}, in which {unmeasured_note(pred['unmeasured_ops'])})")
    return (f"exit latency {duration(stage['exit_latency_s'])}, energy {energy(stage['exit_energy_j'])} "
            f"({stage_source(stage)})")


def stage_source(stage: dict) -> str:
    """Where a stage's latency and energy came from, as the summary and `eecc inspect OUT` say it."""
    pred = stage.get("predicted") or {}
    if pred.get("unmeasured_ops"):
        from eecc.cost.coverage import unmeasured_note

        return f"estimated: {unmeasured_note(pred['unmeasured_ops'])} by the cost model"
    if pred.get("instructions"):
        return "predicted by the measured cost model"
    extra = pred.get("overhead_s")
    return "estimated from nominal MAC/s" + (f" + {duration(extra)} of kernel launches and transfers" if extra else "")


def print_summary(manifest: dict, out: Path, console: Console) -> None:
    m = manifest["placement"]["metrics"]["measured"]
    console.print(f"[bold]bundle[/bold] {out}  ({manifest['platform']['name']}, "
                  f"{things(len(manifest['stages']), 'stage')}, {manifest['mode']})")
    for s in manifest["stages"]:
        th = "final classifier" if s["threshold"] is None else exit_rule(manifest["confidence_metric"], s["threshold"])
        console.print(f"  stage {s['index']} on {s['target']} ({s['kind']}): {s['macs']:,} MACs, {th}, "
                      f"{stage_figures(s)}")
        _print_target_code(s, console)
    _print_programs(manifest, console)
    heads = (manifest.get("compile") or {}).get("heads") or []
    if heads:  # the head design the search chose at each exit
        console.print("  exit heads: " + ", ".join(f"{h['tensor']} {h['design']} ({h['head_macs']:,} MACs)"
                                                   for h in heads))
    console.print(f"test split ({m['samples']} samples), measured by running the cascade:")
    iv = m.get("intervals") or {}
    console.print(f"  accuracy {fmt(m['accuracy'], iv.get('accuracy'))} % (original "
                  f"{fmt(m['original_accuracy'], iv.get('original_accuracy'))} %, "
                  f"Δ {100 * (m['accuracy'] - m['original_accuracy']):+.2f} pt, drop "
                  f"{fmt(m['original_accuracy'] - m['accuracy'], iv.get('accuracy_drop'))} pt; [95 % interval])")
    _print_classes(manifest, m, console)
    console.print(f"  mean MACs {count(m['mean_macs'], iv.get('mean_macs'))} (original {m['original_macs']:,}, "
                  f"{100 * (m['mean_macs'] / m['original_macs'] - 1):+.1f} %)")
    g = (manifest["placement"]["metrics"].get("search") or {}).get("guarantee")
    if g:
        console.print(f"  guarantee: drop <= {100 * g['max_drop']:.2f} pt on unseen data with probability >= "
                      f"{g['confidence']:g} (bound {100 * g['drop_bound']:.2f} pt from {g['n_test']} validation samples)")
    console.print("  exit rates " + ", ".join(f"stage {k}: {p} %" for k, p in enumerate(percents(m["exit_rates"]))))
    console.print(f"  estimated mean latency {duration(m['mean_latency_s'])}, "
                  f"mean energy {energy(m['mean_energy_j'])} per sample")
    if "mean_latency_calibrated_s" in m:
        console.print(f"  from emulated instruction counts: mean latency {duration(m['mean_latency_calibrated_s'])}, "
                      f"mean energy {energy(m['mean_energy_calibrated_j'])} per sample")
    q = manifest.get("quantization")
    if q:
        how = q.get("thresholds", "searched again on the int8 stages")
        cal = q.get("calibration_split") or {}
        recalibrated = (f"; thresholds {how} ({', '.join(map(threshold_text, q['int8_thresholds']))}), drop on the "
                        f"{q['thresholds_calibrated_on']} split {100 * cal.get('drop', 0.0):+.2f} pt vs the int8 original"
                        if q["int8_thresholds"] else "")  # a single-stage bundle has no gate to recalibrate
        console.print(f"  int8 stages: accuracy {100 * q['int8']['accuracy']:.2f} % vs float "
                      f"{100 * q['float']['accuracy']:.2f} %{recalibrated}")
    _print_deployment(manifest, console)
    if manifest.get("report"):
        console.print(f"report {out / manifest['report']}")


def _print_classes(manifest: dict, m: dict, console: Console) -> None:
    """Per-class recall on a skewed test split, and a warning when a class loses more than the accuracy limit."""
    line = recall_line(m.get("per_class"))
    if line:
        console.print(f"  {line}")
    limit = ((manifest.get("search") or {}).get("options") or {}).get("max_accuracy_drop")
    warning = recall_warning(m.get("per_class"), limit)
    if warning:
        console.print(f"  warning: {warning}")


def _print_deployment(manifest: dict, console: Console) -> None:
    """The chosen deployment against the original model alone on its best processor (objective's unit)."""
    dep = manifest.get("deployment")
    if not dep:
        return
    console.print(f"[bold]{dep['line']}[/bold]")
    for warning in (manifest.get("search") or {}).get("warnings") or []:
        console.print(f"  warning: {warning}")
    for s in manifest["stages"] if (manifest.get("codegen") or {}).get("emulate_samples") else []:
        why = (s.get("codegen") or {}).get("skipped", "")
        if why.startswith("no eecc backend"):  # --emulate asked for what this kind cannot give
            console.print(f"  warning: --emulate: stage {s['index']} on '{s['target']}' ({s['kind']}) was neither "
                          f"built nor emulated ({why.split(' (')[0]}): its figures are the MAC/s estimate")
    if dep.get("predicted_line") and not dep["single_processor_wins"]:  # one plain line when the original wins
        console.print(f"  {dep['predicted_line']}")
    for note in ((manifest.get("cost_model") or {}).get("model") or {}).get("notes", []):
        console.print(f"  note: {note}")
    check = (manifest.get("prediction_check") or {}).get("cascade", {})
    joules = check.get("energy") or {}
    if joules.get("emulated") and joules.get("search"):
        console.print(f"  emulated mean energy {energy(joules['emulated'])} vs the search's "
                      f"{energy(joules['search'])} ({100 * (joules['emulated_over_search'] - 1):+.1f} %)")
    for line in summary_lines(manifest.get("prediction_check")):
        console.print(f"  {line}")
