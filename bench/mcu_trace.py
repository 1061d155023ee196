"""Where eecc's int8 integers and onnxruntime's differ, layer by layer, for the psoc6 cascade of a fixture.

    python bench/mcu_trace.py kws [--samples 200] [--search] [--stage 0]

Every QuantizeLinear output of the stage is exposed as a graph output and computed by onnxruntime in
both modes (QDQ with ORT_DISABLE_ALL; ORT_ENABLE_ALL, the fused integer kernels eecc's runtime runs).
For every Conv island Q(conv(DQ(x), DQ(W)) + DQ(b)), eecc's integer result (zero point folded into the
bias, TFLite single-rounding fixed-point requantisation, as targets/int8_lowering and the Cortex-M
kernels compute it) is recomputed in numpy from the QDQ run's int8 input, and compared with both runs'
int8 output. "tie distance" = |frac(exact real value) - 0.5| of the differing elements: near 0 means
the two sides rounded a value within that much of a .5 tie differently. Exposing outputs can keep
onnxruntime from fusing some nodes, so the fused column is indicative.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from eecc.targets import int8_lowering

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mcu  # noqa: E402


def run(model, x, level) -> dict:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {model.graph.input[0].name: x})))


def integer_conv(xq, w, zx, pads, strides, group) -> np.ndarray:
    """Σ W·(x - zx) over the zx-padded input, int64 [N, O, OH, OW]."""
    o, _, kh, kw = w.shape
    xp = np.pad(xq.astype(np.int64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=zx) - zx
    oh, ow = (xp.shape[2] - kh) // strides[0] + 1, (xp.shape[3] - kw) // strides[1] + 1
    acc = np.zeros((xq.shape[0], o, oh, ow), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            win = xp[:, :, ky:ky + strides[0] * oh:strides[0], kx:kx + strides[1] * ow:strides[1]]
            tap = w[:, :, ky, kx].astype(np.int64)
            acc += np.einsum("oc,nchw->nohw", tap, win) if group == 1 else tap[:, 0][None, :, None, None] * win
    return acc


def trace(model, x) -> None:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    prod = {o: n for n in model.graph.node for o in n.output}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    have = {o.name for o in exposed.graph.output}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.output[0] not in have:
            exposed.graph.output.append(helper.make_tensor_value_info(n.output[0], onnx.TensorProto.INT8, None))
    qdq = run(exposed, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    fused = run(exposed, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    print(f"{'conv':34s} {'outputs':>9s} {'!=QDQ':>6s} {'!=fused':>7s} {'QDQ!=fused':>10s}  max tie distance  samples")
    for n in model.graph.node:
        conv = prod.get(n.input[0]) if n.op_type == "QuantizeLinear" else None
        if conv is None or conv.op_type != "Conv" or prod[conv.input[0]].input[0] not in qdq:
            continue
        dqx, dqw = prod[conv.input[0]], prod[conv.input[1]]
        sx, zx = float(inits[dqx.input[1]]), int(inits[dqx.input[2]])
        w, sw = inits[dqw.input[0]], inits[dqw.input[1]].astype(np.float64).reshape(-1)
        so, zo = float(inits[n.input[1]]), int(inits[n.input[2]])
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        acc = integer_conv(qdq[dqx.input[0]], w, zx, attrs.get("pads", [0] * 4), attrs.get("strides", [1, 1]),
                           attrs.get("group", 1))
        scale = sx * np.broadcast_to(sw, (w.shape[0],))
        if len(conv.input) > 2:
            dqb = prod[conv.input[2]]
            real = inits[dqb.input[0]].astype(np.float64) * inits[dqb.input[1]].astype(np.float64)
            acc += np.round(real / scale).astype(np.int64)[None, :, None, None]
        m0, shift = int8_lowering.fixed_point32(scale / so)
        bits = (shift.astype(np.int64) + 32)[None, :, None, None]
        y = np.clip(((acc * m0.astype(np.int64)[None, :, None, None] + (np.int64(1) << (bits - 1))) >> bits) + zo,
                    -128, 127)
        exact = acc * (scale / so)[None, :, None, None]
        a, b = qdq[n.output[0]], fused[n.output[0]]
        diff = (y != b)
        tie = np.abs(exact - np.floor(exact) - 0.5)[diff | (y != a)]
        print(f"{conv.name[:34]:34s} {y.size:9d} {int((y != a).sum()):6d} {int(diff.sum()):7d} {int((a != b).sum()):10d}"
              f"  {tie.max() if tie.size else float('nan'):16.2e}  {np.unique(np.nonzero((y != a) | diff)[0])[:8]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=("kws", "resnet"))
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--stage", type=int, default=0)
    parser.add_argument("--search", action="store_true")
    parser.add_argument("--cache-dir", type=Path, default=mcu.ROOT / ".eecc-cache" / "bench-mcu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eecc-trace-") as tmp:
        _, _, stages, x = mcu.cascade(args.model, args.cache_dir, Path(tmp) / "bundle", args.search)
    if args.stage != 0:
        raise SystemExit("mcu_trace: only stage 0 (its input is the test data itself)")
    trace(stages[0], x[:args.samples])


if __name__ == "__main__":
    main()
