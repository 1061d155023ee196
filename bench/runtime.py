"""Host cost of the cascade runtime: wall-time speedup vs the MAC prediction (batch 64), gate cost (batch 1).

    python bench/runtime.py [--model M.onnx] [--samples 2048] [--threads 1] [--json OUT.json]

Targets (issue 5): measured speedup ≥ 0.8 × original_macs / mean cascade MACs at batch 64, and the
gates' batch-1 cost ≤ 5 % of the last stage's batch-1 time. This measures the runtime, not accuracy:
exit heads get seeded random weights (or whatever `--model` carries) and thresholds are set at
quantiles of their confidences so that about half the samples leave at each exit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from eecc.model import ir
from eecc.bundle.manifest import Manifest
from eecc.bundle.writer import write_bundle
from eecc.exits.heads import ExitHead, HeadWeights, design_from_blocks
from eecc.passes.assign_targets import assign_targets
from eecc.passes.insert_exits import insert_exits
from eecc.passes.insert_gates import insert_gates
from eecc.passes.split_by_target import split_by_target
from eecc.driver.pipeline import analyse
from eecc.runtime.cascade import Cascade
from eecc.search.confidence import confidence
from eecc.targets.platform import load_platform


def synthetic_cnn(seed: int = 0) -> onnx.ModelProto:
    """A 3×32×32 → 10 CNN, He-initialised: 3 stages of two 3×3 convs (32, 64, 128 channels), ~37 M MACs."""
    rng = np.random.default_rng(seed)
    nodes, inits, x, cin = [], [], "x", 3
    for s, cout in enumerate((32, 64, 128)):
        for j in range(2):
            w = f"w{s}{j}"
            inits.append(numpy_helper.from_array(
                (rng.normal(size=(cout, cin, 3, 3)) * np.sqrt(2 / (9 * cin))).astype(np.float32), w))
            inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), f"b{s}{j}"))
            stride = 2 if (j == 0 and s > 0) else 1
            nodes.append(helper.make_node("Conv", [x, w, f"b{s}{j}"], [f"c{s}{j}"], pads=[1, 1, 1, 1],
                                          strides=[stride, stride]))
            nodes.append(helper.make_node("Relu", [f"c{s}{j}"], [f"r{s}{j}"]))
            x, cin = f"r{s}{j}", cout
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fw", "fb"], ["y"], transB=1)]
    inits += [numpy_helper.from_array((rng.normal(size=(10, cin)) * 0.1).astype(np.float32), "fw"),
              numpy_helper.from_array(np.zeros(10, np.float32), "fb")]
    graph = helper.make_graph(nodes, "bench_cnn", [helper.make_tensor_value_info("x", 1, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("y", 1, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def session(model: onnx.ModelProto | str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def best_of(*fns, repeats: int) -> list[float]:
    """Fastest of `repeats` interleaved runs of each fn: on a shared host the minimum is the least disturbed."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [min(t) for t in times]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="an ONNX classifier (default: a synthetic 3x32x32 CNN)")
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    model = onnx.load(args.model) if args.model else synthetic_cnn()
    with tempfile.TemporaryDirectory(prefix="eecc-bench-") as workdir:
        setup = build(model, args.samples, args.threads, Path(workdir) / "bundle")
        report = {"model": args.model or "synthetic 3x32x32 CNN (random weights)", "samples": args.samples,
                  "threads": args.threads, "batch": 64, "cuts": setup["cuts"], "thresholds": setup["thresholds"],
                  **speedup(setup, args.threads, args.repeats), **gate_cost(setup, args.threads, args.repeats),
                  "host": {"onnxruntime": ort.__version__, "python": sys.version.split()[0]}}
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["speedup_target_met"] and report["gate_target_met"] else 1


def build(model: onnx.ModelProto, samples: int, threads: int, out: Path) -> dict:
    """Two exits with seeded random heads, thresholds at confidence quantiles (~50 % leave at exit 0,
    ~50 % of the rest at exit 1), split over rk3588-cuda's cpu, gpu and cuda; the bundle written at `out`."""
    rng = np.random.default_rng(0)
    graph, blocks = analyse(model)
    x = rng.normal(size=(samples, *list(graph.inputs[0].shape[1:]))).astype(np.float32)
    heads = _pick(design_from_blocks(blocks).heads, blocks.total_macs)
    with_exits = insert_exits(graph, heads=[ExitHead(h, _random_weights(h, rng)) for h in heads])
    outs = session(ir.to_model(with_exits), threads).run(None, {graph.inputs[0].name: x[:512]})
    names = [o.name for o in with_exits.outputs]
    conf = [confidence(outs[names.index(f"{h.tensor}.exit{i}.logits")]) for i, h in enumerate(heads)]
    t0 = float(np.quantile(conf[0], 0.5))
    thresholds = [t0, float(np.quantile(conf[1][conf[0] < t0], 0.5))]
    platform = load_platform("rk3588-cuda")
    cuts = [h.tensor for h in heads]
    stages = split_by_target(assign_targets(with_exits, cuts=cuts, processors=["cpu", "gpu", "cuda"], platform=platform),
                             platform=platform)
    gated = [insert_gates(s, threshold=t) for s, t in zip(stages, thresholds)] + [stages[-1]]
    write_bundle(out, gated, Manifest.build(gated, platform=platform, thresholds=thresholds))
    return {"model": model, "graph": graph, "blocks": blocks, "x": x, "cuts": [h.tensor for h in heads],
            "thresholds": thresholds, "stages": stages, "gated": gated, "cascade": Cascade(out, threads=threads)}


def speedup(setup: dict, threads: int, repeats: int) -> dict:
    """Wall time at batch 64, original vs cascade, against the MAC prediction and the stages' own times."""
    x, cascade, gated = setup["x"], setup["cascade"], setup["gated"]
    original, in_name = session(setup["model"], threads), setup["graph"].inputs[0].name
    chunks = [x[i:i + 64] for i in range(0, len(x), 64)]
    result = cascade.run(x)
    predicted = setup["blocks"].total_macs / float(result.macs.mean())
    # Per chunk, both back to back, fastest of `repeats`: bursts from other processes on a shared host
    # then hit single chunk timings, not whole passes.
    t_orig = t_casc = 0.0
    for chunk in chunks:
        a, b = best_of(lambda: original.run(None, {in_name: chunk}), lambda: cascade.run(chunk), repeats=repeats)
        t_orig, t_casc = t_orig + a, t_casc + b
    measured = t_orig / t_casc
    # What the runtime could reach at best: each stage's own batch-64 time, weighted by the share of
    # samples that reach it (separates routing overhead from the MAC model's blind spots).
    feed, per_sample = chunks[0], []
    for k in range(len(gated)):
        per_sample.append(best_of(lambda: cascade.sessions[k].run(None, {gated[k].inputs[0].name: feed}),
                                  repeats=repeats)[0] / len(feed))
        if k < len(gated) - 1:
            feed = cascade.run_stage(k, feed)[gated[k].outputs[0].name]
    reach = [(result.exit_stage >= k).mean() for k in range(len(gated))]
    t_ideal = len(x) * sum(t * r for t, r in zip(per_sample, reach))
    return {"exit_histogram": np.bincount(result.exit_stage, minlength=3).tolist(),
            "original_macs": int(setup["blocks"].total_macs), "mean_cascade_macs": float(result.macs.mean()),
            "predicted_speedup": predicted, "original_s": t_orig, "cascade_s": t_casc, "measured_speedup": measured,
            "stage_time_speedup": t_orig / t_ideal, "routing_overhead": t_casc / t_ideal - 1,
            "speedup_ratio": measured / predicted, "speedup_target_met": measured >= 0.8 * predicted}


def gate_cost(setup: dict, threads: int, repeats: int) -> dict:
    """Gate cost at batch 1: each gated stage against the same stage without its gate."""
    stages, cascade, x = setup["stages"], setup["cascade"], setup["x"]
    calls = 20 * repeats
    feeds, cost = [x[:1]], 0.0
    for k in range(len(stages) - 1):
        plain, with_gate = session(ir.to_model(stages[k]), threads), cascade.sessions[k]
        feed = {stages[k].inputs[0].name: feeds[-1]}
        t_plain, t_gate = best_of(lambda: plain.run(None, feed), lambda: with_gate.run(None, feed), repeats=calls)
        cost += max(t_gate - t_plain, 0.0)
        feeds.append(plain.run([stages[k].outputs[0].name], feed)[0])
    last = cascade.sessions[-1]
    last_feed = {stages[-1].inputs[0].name: feeds[-1]}
    t_last = best_of(lambda: last.run(None, last_feed), repeats=calls)[0]
    return {"gate_cost_s_batch1": cost, "last_stage_s_batch1": t_last, "gate_share": cost / t_last,
            "gate_target_met": cost <= 0.05 * t_last}


def _pick(heads, total_macs):
    """Two exits: the candidates closest to 25 % and 55 % of the model's MACs."""
    if len(heads) < 2:
        sys.exit("bench: the model needs at least two candidate exits")
    first = min(heads[:-1], key=lambda h: abs(h.backbone_macs / total_macs - 0.25))
    later = [h for h in heads if h.backbone_macs > first.backbone_macs]
    return [first, min(later, key=lambda h: abs(h.backbone_macs / total_macs - 0.55))]


def _random_weights(spec, rng) -> HeadWeights:
    width = spec.width or spec.channels
    conv = (rng.normal(size=(spec.width, spec.channels, *[1] * (len(spec.in_shape) - 1))) * 0.3,
            np.zeros(spec.width)) if spec.width else (None, None)
    return HeadWeights(fc_w=rng.normal(size=(spec.num_classes, width)), fc_b=np.zeros(spec.num_classes),
                       conv_w=conv[0], conv_b=conv[1])


if __name__ == "__main__":
    sys.exit(main())
