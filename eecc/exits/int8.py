"""The candidate heads' logits in int8: what the search chooses among when the bundle will be int8.

With `--quantize int8` the stages eecc builds are onnxruntime QDQ models (eecc/targets/quantize.py); their
exits take other samples than the float heads do, so thresholds searched on float logits mispredict the
built cascade's routing, cost and accuracy. Here the model with a set of candidate heads attached
(insert_exits) is quantised the same way the stages are (same op set, MinMax on the same first
CALIBRATION_SAMPLES training rows, float activations), and run under onnxruntime as the bundle's cascade
runs its stages (runtime/sessions.py: graph optimisations on, int8 fusions off).

All candidate heads go into ONE graph (several heads on one tensor, `insert_exits(shared_tensors=True)`), so
the backbone is quantised and run once whatever the number of heads per location. Each head reads its tensor
through its own copy (targets/int8_cascade.py quantize_with_heads): onnxruntime gives a tensor one Q/DQ pair,
and made by an op it leaves float (Transpose, LayerNormalization, GELU's Erf, ...) only when a consumer
quantises it, so without the copies a head that quantises its input changed the backbone and the heads beside
it (nu14 F10). So a head's int8 logits do not depend on which other heads share the graph
(tests/test_int8_search.py holds them to one head per graph), and the built stages, quantised as one graph with
the same rule (quantize_cascade), compute them bit for bit (tests/test_int8_cascade.py).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from eecc.exits.heads import ExitHead
from eecc.search.types import ExitLogits

BATCH = 256


def int8_logits(plan, heads: Sequence[ExitHead], logits: ExitLogits, splits) -> ExitLogits:
    """`logits` (float, one row per head of `heads`, same order) with every row and the final classifier
    replaced by the int8 model's, on each split `logits` holds (val, test, and train when present).

    Shapes as ExitLogits: rows [K, N, C], final [N, C]. Raises EeccError when onnxruntime cannot quantise
    the model (eecc.targets.quantize.quantize_stage)."""
    from eecc.targets.quantize import CALIBRATION_SAMPLES

    if len(heads) != len(logits.tensors):
        raise ValueError(f"int8_logits: {len(heads)} heads for {len(logits.tensors)} rows of logits")
    calib = splits.train.rows(0, min(len(splits.train), CALIBRATION_SAMPLES))
    named = {"val": splits.val, "test": splits.test}
    if logits.train_logits is not None:
        named["train"] = splits.train
    outputs = _run_quantized(plan.graph, heads, calib, named)
    rows = {name: exits for name, (_, exits) in outputs.items()}
    final = {name: final_logits for name, (final_logits, _) in outputs.items()}
    c = logits.num_classes
    stacked = {f"{name}_logits": np.stack(r) if r else np.zeros((0, len(named[name]), c), np.float32)
               for name, r in rows.items()}
    return ExitLogits(tensors=list(logits.tensors), exit_macs=logits.exit_macs, final_macs=logits.final_macs,
                      **stacked, **{f"final_{name}_logits": f for name, f in final.items()},
                      y_val=logits.y_val, y_test=logits.y_test, head_macs=logits.head_macs,
                      y_train=logits.y_train)


def pair_heads(run, logits: ExitLogits) -> list[ExitHead]:
    """The trained head of each row "<tensor>|<design>" of `logits` (ExitsRun.pairs) from `run.tried`."""
    from eecc.search.types import pair_name

    by = {pair_name(r.spec.tensor, r.spec.design): r for r in run.tried if not r.dropped}
    return [ExitHead(by[t].spec, by[t].weights) for t in logits.tensors]


def _pad(x: np.ndarray, fixed: int | None) -> np.ndarray:
    """A last chunk padded with zero rows to a fixed batch (its outputs are cut back to len(x))."""
    if fixed is None or len(x) == fixed:
        return x
    return np.concatenate([x, np.zeros((fixed - len(x), *x.shape[1:]), x.dtype)])


def _run_quantized(graph, heads: Sequence[ExitHead], calib: np.ndarray, named: dict) -> dict:
    """{split: (final logits [N, C], [exit logits [N, C] per head])} of the int8 model with `heads`."""
    import onnxruntime as ort
    from eecc.runtime.sessions import session_options

    from eecc.driver import pipeline
    from eecc.driver.int8 import per_axis_opset
    from eecc.model import ir
    from eecc.passes.insert_exits import logits_name
    from eecc.targets.int8_cascade import quantize_with_heads

    (with_heads,) = pipeline.exits(heads, shared_tensors=True).run([graph])
    model = per_axis_opset([ir.to_model(with_heads)])[0]
    first = with_heads.inputs[0].name
    quantized = quantize_with_heads(model, {first: calib})
    sess = ort.InferenceSession(quantized.SerializeToString(), session_options(model=quantized),
                                providers=["CPUExecutionProvider"])
    names = [with_heads.outputs[0].name] + [logits_name(h.spec.tensor, i) for i, h in enumerate(heads)]
    dim = sess.get_inputs()[0].shape[0]
    fixed = dim if isinstance(dim, int) and dim > 0 else None  # a fixed-batch model runs its own batch
    out = {}
    for name, split in named.items():
        parts = [[z[:len(x)] for z in sess.run(names, {first: _pad(x, fixed)})]
                 for _, x in split.chunks(fixed or BATCH)]
        cols = [np.concatenate([p[k] for p in parts]).astype(np.float32) for k in range(len(names))]
        out[name] = (cols[0], cols[1:])
    return out
