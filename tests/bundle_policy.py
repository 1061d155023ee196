"""The check behind 'the cascade routes exactly as the search's policy evaluation', for bundles of any length."""

from __future__ import annotations

import numpy as np

from eecc.runtime.cascade import Cascade, CascadeResult
from eecc.search.policy import SplitScores, evaluate_policy, make_split, position_costs
from eecc.search.types import ExitLogits


def assert_routes_as_policy(bundle, manifest: dict, x: np.ndarray, y: np.ndarray, *,
                            confidence: str | None = None) -> CascadeResult:
    """Every stage runs on every sample (no routing); the policy is evaluated on those outputs and the routed
    cascade must agree with it sample by sample. `confidence`: a stage-0 output holding a learned confidence
    (default: the manifest's metric on the exit logits; two-stage bundles only)."""
    cascade = Cascade(bundle, optimize=False)
    heads, confs, feed = [], [], x
    for k, stage in enumerate(cascade.stages):
        out = cascade.run_stage(k, feed)
        if stage.exit is None:
            final = out[stage.logits]
            break
        heads.append(out[stage.logits])
        confs.append(out[confidence] if confidence else None)
        feed = out[stage.handoff]
    entries = manifest["stages"]
    head_macs = np.array([e["head_macs"] for e in entries[:-1]], dtype=np.int64)
    before = np.concatenate([[0], np.cumsum(head_macs)[:-1]]).astype(np.int64)
    exits = tuple(range(len(heads)))
    logits = ExitLogits(tensors=[e["outputs"]["handoff"] for e in entries[:-1]],
                        exit_macs=np.array([e["exit_macs"] for e in entries[:-1]], dtype=np.int64) - before,
                        head_macs=head_macs, final_macs=entries[-1]["exit_macs"] - int(head_macs.sum()),
                        val_logits=np.stack(heads), test_logits=np.stack(heads), final_val_logits=final,
                        final_test_logits=final, y_val=y, y_test=y)
    if confidence is None:
        split = make_split(logits, "test", manifest["confidence_metric"])
    else:
        split = SplitScores(conf=np.stack(confs).astype(np.float64), pred=np.stack(heads).argmax(-1),
                            final_pred=final.argmax(-1), y=np.asarray(y, np.int64))
    policy = evaluate_policy(split, exits, tuple(manifest["placement"]["thresholds"]), position_costs(logits, exits))
    res = cascade.run(x)
    np.testing.assert_array_equal(res.exit_stage, policy.exit_index)
    np.testing.assert_array_equal(res.predictions, policy.prediction)
    np.testing.assert_array_equal(res.macs, policy.macs)
    return res
