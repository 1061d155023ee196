"""Parity of a compiled int8 stage with onnxruntime's int8 stage: codegen's check of every built int8 stage
(int8_lowering's integer kernels), on the predicted class and the exit flags (float outputs may differ by one
quantisation step). Split from int8_lowering so that file only holds what shapes the kernels (its hash).
"""

from __future__ import annotations

import numpy as np

PARITY = 0.995  # share of samples whose predicted class must match onnxruntime's int8 stage


def compare_int8(got: dict, want: dict, entry: dict, *, where: str) -> dict:
    """Class parity of the logits and agreement of the exit flags with onnxruntime's int8 stage; raises
    EeccError below PARITY. Float outputs may differ by a quantisation step, so no 1e-4 bound here."""
    from eecc.errors import EeccError

    outs = entry.get("outputs") or {}
    errors = {}
    for name, ref in want.items():
        if name not in got:
            raise EeccError(f"codegen: {where} has no output '{name}' in its compiled form; report it")
        if np.issubdtype(np.asarray(ref).dtype, np.floating):
            diff = np.abs(np.asarray(got[name], np.float64).reshape(len(ref), -1) - np.asarray(ref).reshape(len(ref), -1))
            errors[name] = float(diff.max()) if diff.size else 0.0
    logits = outs.get("logits")
    ref = np.asarray(want[logits]).reshape(len(want[logits]), -1)
    parity = float((np.asarray(got[logits]).reshape(len(ref), -1).argmax(-1) == ref.argmax(-1)).mean())
    result = {"class_parity": parity, "max_abs_error": max(errors.values(), default=0.0),
              "max_abs_error_by_output": errors}
    if outs.get("exit") in want:
        flags = np.asarray(want[outs["exit"]]).reshape(-1)
        result["exit_flag_agreement"] = float((np.asarray(got[outs["exit"]]).reshape(-1) == flags).mean())
    if parity < PARITY:
        raise EeccError(f"codegen: {where} predicts the class of onnxruntime's int8 stage for only "
                        f"{100 * parity:.1f} % of samples (< {100 * PARITY:.1f} %); the integer lowering is "
                        "wrong for this stage: report it with the stage ONNX file")
    return result
