"""The emulated figures against the search's predictions: each miss beyond the cost model's tolerance named with what
it means, and the limits the search held on predicted figures (worst-case latency, beating the original model
alone) checked again on the emulated ones. Recorded in the manifest's `prediction_check`; `compile` prints it."""

from __future__ import annotations

from eecc.report.units import duration, energy

# The cost model's held-out check (README, "Cost model"): stages are predicted within ±15 % of QEMU's count.
TOLERANCE = 0.15
MEANING = ("the search chose on the predicted figures, the emulated ones are what the device runs; e.g. a layer kind "
           "the cost model misprices")


def prediction_gaps(manifest: dict, latency_limit_s: float | None) -> dict:
    """{"tolerance", "misses": [...], "limits": [...]} of a manifest whose stages were emulated.

    misses: per emulated stage (compute time, hence energy: the same power figure scales both), the cascade's mean
    cost (energy or latency, the objective's), its worst-case latency and the original model alone, where
    emulated / predicted is outside
    1 ± TOLERANCE; each {"what", "predicted", "emulated", "ratio", "line"}. limits: the worst-case latency limit
    (`latency_limit_s`, else the platform's) and, for an early-exit network chosen on energy or latency, that it
    beats the original alone; each {"limit", "holds", "line"}, on the emulated figures."""
    misses = [m for m in (*_stage_misses(manifest), *_cascade_misses(manifest)) if m is not None]
    return {"tolerance": TOLERANCE, "misses": misses, "limits": _limits(manifest, latency_limit_s)}


def _miss(what: str, predicted, emulated, fmt) -> dict | None:
    if not predicted or not emulated or abs(emulated / predicted - 1) <= TOLERANCE:
        return None
    ratio = emulated / predicted
    return {"what": what, "predicted": predicted, "emulated": emulated, "ratio": ratio,
            "line": f"{what}: emulated {fmt(emulated)} vs {fmt(predicted)} predicted ({ratio:.2f}x)"}


def _stage_misses(manifest: dict) -> list[dict | None]:
    return [_miss(f"stage {s['index']} on '{s['target']}' ({s['kind']}) compute", s.get("latency_estimate_s"),
                  s.get("latency_calibrated_s"), duration) for s in manifest["stages"]]


def _cascade_misses(manifest: dict) -> list[dict | None]:
    search = manifest["placement"]["metrics"].get("search") or {}
    measured = (manifest.get("deployment") or {}).get("measured") or {}
    chosen, single = measured.get("chosen") or {}, measured.get("best_single") or {}
    predicted_single = (manifest.get("deployment") or {}).get("best_single") or {}
    if chosen.get("basis") != "emulated" or not chosen.get("exits"):  # a single stage: its stage line says it
        return []
    key, fmt = ("energy", energy) if (manifest.get("deployment") or {}).get("objective") == "energy" else \
        ("latency", duration)
    unit = "j" if key == "energy" else "s"
    out = [_miss(f"the cascade's mean {key}", search.get(f"mean_{key}_{unit}"), chosen.get(f"mean_{key}_{unit}"), fmt),
           _miss("the cascade's worst-case latency", search.get("worst_case_latency_s"),
                 chosen.get("worst_case_latency_s"), duration)]
    if single.get("basis") == "emulated":
        where = (single.get("processors") or ["?"])[0]
        out.append(_miss(f"the original model alone on '{where}' (its {key})",
                         predicted_single.get(f"mean_{key}_{unit}"), single.get(f"mean_{key}_{unit}"), fmt))
    return out


def _limits(manifest: dict, latency_limit_s: float | None) -> list[dict]:
    measured = (manifest.get("deployment") or {}).get("measured") or {}
    chosen, single = measured.get("chosen") or {}, measured.get("best_single") or {}
    out = []
    limit = latency_limit_s if latency_limit_s is not None else manifest["platform"].get("max_latency_s")
    worst = manifest["stages"][-1].get("exit_latency_calibrated_s") if manifest["stages"] else None  # all through
    if limit is not None and worst is not None:
        holds = worst <= limit
        out.append({"limit": "max_latency_s", "value": limit, "emulated": worst, "holds": holds,
                    "line": f"the worst-case latency limit of {duration(limit)} "
                            + (f"holds on the emulated figures ({duration(worst)})" if holds else
                               f"does NOT hold on the emulated figures: {duration(worst)} worst case (the search "
                               "kept this placement on its prediction)")})
    objective = (manifest.get("deployment") or {}).get("objective")
    key = {"energy": "mean_energy_j", "latency": "mean_latency_s"}.get(objective)
    ratio = (measured.get("ratio") or {}).get(key) if key else None
    if chosen.get("exits") and ratio is not None and chosen.get("basis") == single.get("basis") == "emulated":
        holds = ratio < 1
        out.append({"limit": "beats_original", "objective": objective, "ratio": ratio, "holds": holds,
                    "line": f"the early-exit network {'beats' if holds else 'does NOT beat'} the original model "
                            f"alone on '{single['processors'][0]}' on the emulated figures ({ratio:.2f}x the "
                            f"{objective})"})
    return out


def summary_lines(check: dict | None) -> list[str]:
    """The warnings `compile` and the report give: the misses under one line that says what they mean, then one line
    per limit that does not hold on the emulated figures."""
    if not check:
        return []
    misses = check.get("misses") or []
    lines = [f"warning: emulated figures outside the cost model's ±{100 * check['tolerance']:.0f} % ({MEANING}):"] + \
        [f"  {m['line']}" for m in misses] if misses else []
    return lines + [f"warning: {lim['line']}" for lim in check.get("limits") or [] if not lim["holds"]]
