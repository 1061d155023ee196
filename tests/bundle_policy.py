"""The check behind 'the cascade routes exactly as the search's policy evaluation', for two-stage bundles."""

from __future__ import annotations

import numpy as np

from eecc.runtime.cascade import Cascade, CascadeResult
from eecc.search.policy import SplitScores, evaluate_policy, make_split, position_costs
from eecc.search.types import ExitLogits


def assert_routes_as_policy(bundle, manifest: dict, x: np.ndarray, y: np.ndarray, *,
                            confidence: str | None = None) -> CascadeResult:
    """Both stages run on every sample (no routing); the policy is evaluated on those outputs and the routed
    cascade must agree with it sample by sample. `confidence`: a stage-0 output holding a learned confidence
    (default: the manifest's metric on the exit logits)."""
    cascade = Cascade(bundle, optimize=False)
    first = cascade.run_stage(0, x)
    s0, s1 = cascade.stages
    head, final = first[s0.logits], cascade.run_stage(1, first[s0.handoff])[s1.logits]
    exit_macs, head_macs = manifest["stages"][0]["exit_macs"], manifest["stages"][0]["head_macs"]
    logits = ExitLogits(tensors=[s0.handoff], exit_macs=[exit_macs], head_macs=[head_macs],
                        final_macs=manifest["stages"][1]["exit_macs"] - head_macs, val_logits=head[None],
                        test_logits=head[None], final_val_logits=final, final_test_logits=final, y_val=y, y_test=y)
    if confidence is None:
        split = make_split(logits, "test", manifest["confidence_metric"])
    else:
        split = SplitScores(conf=first[confidence][None].astype(np.float64), pred=head.argmax(-1)[None],
                            final_pred=final.argmax(-1), y=np.asarray(y, np.int64))
    policy = evaluate_policy(split, (0,), tuple(manifest["placement"]["thresholds"]), position_costs(logits, (0,)))
    res = cascade.run(x)
    np.testing.assert_array_equal(res.exit_stage, policy.exit_index)
    np.testing.assert_array_equal(res.predictions, policy.prediction)
    np.testing.assert_array_equal(res.macs, policy.macs)
    return res
