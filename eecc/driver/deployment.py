"""The chosen deployment beside the best single-processor one (the original model alone on one processor),
and the cost model's predictions beside what emulation measured: the manifest's `deployment` and
`prediction_check` records, and the one plain line the summary prints."""

from __future__ import annotations

from eecc.report.units import duration, energy
from eecc.search.policy import DROP_TOLERANCE

FIELDS = ("exits", "processors", "thresholds", "accuracy", "mean_macs", "mean_latency_s", "worst_case_latency_s",
          "mean_energy_j", "worst_case_energy_j", "cost", "feasible")


def _figures(p: dict | None) -> dict | None:
    return None if p is None else {k: p.get(k) for k in FIELDS}


def deployment_record(search_json: dict) -> dict:
    """{"objective", "chosen", "best_single", "single_processor_wins", "ratio", "line"} from a search's JSON."""
    unit = search_json.get("objective", "macs")
    chosen, single = _figures(search_json.get("chosen")), _figures(search_json.get("best_single"))
    rec = {"objective": unit, "split": "test", "chosen": chosen, "best_single": single,
           "single_processor_wins": bool(chosen is not None and not chosen["exits"]),
           "no_candidate": search_json.get("no_candidate"), "default_only": search_json.get("default_only")}
    if chosen is not None and single is not None:
        rec["ratio"] = {k: (chosen[k] / single[k] if single.get(k) else None)
                        for k in ("mean_energy_j", "mean_latency_s", "mean_macs")}
        rec["accuracy_delta_pt"] = 100 * (chosen["accuracy"] - single["accuracy"])
    rec["line"] = summary_line(rec)
    return rec


def _describe(p: dict) -> str:
    if p.get("mean_energy_j") is None or p.get("mean_latency_s") is None:
        return f"{p['mean_macs']:,.0f} MACs"
    return (f"{energy(p['mean_energy_j'])}, {duration(p['mean_latency_s'])} mean "
            f"({duration(p['worst_case_latency_s'])} worst case)")


def summary_line(rec: dict) -> str:
    """One plain sentence: what was chosen against the original model on its best processor."""
    chosen, single = rec["chosen"], rec["best_single"]
    if chosen is None:
        return "no deployment meets the constraints"
    if single is None:
        return f"chosen: exits {', '.join(chosen['exits'])}: {_describe(chosen)} per sample"
    if rec["single_processor_wins"]:
        return (f"{_no_exit(rec, chosen, rec['objective'])}; chosen: the original model alone: {_describe(chosen)} "
                f"per sample, accuracy {100 * chosen['accuracy']:.2f} %")  # `search` builds nothing (nu14 F9)
    key = {"energy": "mean_energy_j", "latency": "mean_latency_s"}.get(rec["objective"], "mean_macs")
    ratio = rec["ratio"].get(key)
    where = " → ".join(chosen["processors"])
    return (f"chosen early-exit network on {where}: {_describe(chosen)} per sample, "
            f"{ratio:.2f}x the {rec['objective']} of the original model alone on {single['processors'][0]} "
            f"({_describe(single)}); accuracy {100 * chosen['accuracy']:.2f} % vs "
            f"{100 * single['accuracy']:.2f} % ({rec['accuracy_delta_pt']:+.2f} pt)"
            + _costlier(ratio, rec["objective"]) + _costlier_on_device(rec, rec["objective"], single))


def _costlier(ratio: float | None, objective: str) -> str:
    """The plain statement that the chosen cascade does not beat the original on the objective asked for (nu11 F8)."""
    if ratio is None or ratio <= 1.0:
        return ""
    return f"; it uses MORE {objective} than the original model alone ({ratio:.2f}x), not less"


def _costlier_on_device(rec: dict, objective: str, single: dict) -> str:
    """Under objective macs, the plain statement that the cascade spends more energy or time on the platform than
    the original alone on its best processor (nu12 F7: half the MACs at 22x the energy, 35x the latency)."""
    if objective != "macs":
        return ""
    worse = [f"{what} ({r:.2f}x)" for what, r in (("energy", rec["ratio"].get("mean_energy_j")),
                                                  ("time", rec["ratio"].get("mean_latency_s"))) if r and r > 1.0]
    if not worse:
        return ""
    return (f"; on the platform it uses MORE {' and '.join(worse)} than the original model alone on "
            f"{single['processors'][0]}: --objective energy or latency weighs what the device spends")


def _no_exit(rec: dict, chosen: dict, objective: str) -> str:
    """Why the bundle is the original model alone: nothing to compare (no candidate exit), or it won."""
    if rec.get("no_candidate"):
        return f"no candidate exit: {rec['no_candidate']}; the original model alone on {chosen['processors'][0]}"
    tried = rec.get("default_only")
    if tried:  # compile without --search tried one placement: the verdict is on it, not on the model
        return (f"the default placement (exit at {', '.join(tried['exits'])} on {' → '.join(tried['processors'])}) "
                f"does not beat the original model on {chosen['processors'][0]} under the constraints (objective: "
                f"{objective}); compile with --search to try all {tried['placements_with_search']:,} placements")
    return (f"no early-exit network beats the original model on {chosen['processors'][0]} under the constraints "
            f"(objective: {objective})")


def bundle_figures(manifest: dict) -> dict:
    """The written bundle on the test split: accuracy and mean MACs measured by running its stages (int8
    stages when quantised), latency and energy emulated (per-stage QEMU counts at the measured exit rates)
    when every stage was counted, else predicted (cost model) at the same exit rates."""
    m, stages = manifest["placement"]["metrics"]["measured"], manifest["stages"]
    emulated = m.get("mean_energy_calibrated_j") is not None
    key = "calibrated_" if emulated else ""
    return {"processors": [s["target"] for s in stages], "exits": list(manifest["placement"].get("cuts") or []),
            "numeric": "int8" if manifest.get("quantization") else "fp32", "accuracy": m["accuracy"],
            "mean_macs": m["mean_macs"], "mean_latency_s": m[f"mean_latency_{key}s"],
            "worst_case_latency_s": stages[-1][f"exit_latency_{key}s"], "mean_energy_j": m[f"mean_energy_{key}j"],
            "worst_case_energy_j": stages[-1][f"exit_energy_{key}j"], "basis": "emulated" if emulated else "predicted"}


def like_for_like(manifest: dict, single: dict) -> dict:
    """The bundle as written against the original model alone on the best single processor in the same
    numeric format (eecc.driver.baseline), each figure labelled emulated or predicted (the search's cost-model
    figure for that processor when the original could not be counted)."""
    dep = manifest["deployment"]
    chosen = bundle_figures(manifest)
    if not chosen["exits"]:  # the bundle IS the original model alone: one measurement
        single = {**chosen}
    elif single.get("mean_energy_j") is None:
        predicted = dep.get("best_single") or {}
        single = {**single, **{k: predicted.get(k) for k in ("mean_latency_s", "worst_case_latency_s", "mean_energy_j",
                                                              "worst_case_energy_j")}, "basis": "predicted"}
    else:
        single = {**single, "basis": "emulated"}
    single["mean_macs"] = manifest.get("original_macs")
    rec = {"chosen": chosen, "best_single": single, "single_processor_wins": not chosen["exits"],
           "no_candidate": dep.get("no_candidate"), "default_only": dep.get("default_only"),
           "ratio": {k: (chosen[k] / single[k] if single.get(k) else None)
                     for k in ("mean_energy_j", "mean_latency_s", "mean_macs")},
           # an emulated cascade against a cost-model original is no comparison: no ratio, and the line says why
           "mixed_basis": (chosen["basis"] == "emulated" and single["basis"] == "predicted") or None,
           "accuracy_delta_pt": 100 * (chosen["accuracy"] - single["accuracy"])}
    if rec["mixed_basis"]:
        rec["ratio"].update(mean_energy_j=None, mean_latency_s=None)
    rec.update(_limit_check(manifest) if chosen["exits"] else {})
    rec["line"] = measured_line(rec, dep["objective"])
    return rec


def _limit_check(manifest: dict) -> dict:
    """The test drop's 95 % interval (points) and, when the drop is above the accuracy limit the search held on
    the validation split, a note saying so (the default mode checks the limit on validation data only)."""
    m = manifest["placement"]["metrics"]["measured"]
    interval = (m.get("intervals") or {}).get("accuracy_drop")
    limit = ((manifest.get("search") or {}).get("options") or {}).get("max_accuracy_drop")
    out = {"accuracy_drop_interval_pt": None if interval is None else [100 * v for v in interval]}
    drop = m["original_accuracy"] - m["accuracy"]
    if limit is not None and drop > limit + DROP_TOLERANCE:
        guarantee = ((manifest.get("search") or {}).get("options") or {}).get("guarantee")
        out["limit_note"] = (f"the test drop {100 * drop:.2f} pt is above the {100 * limit:g} pt limit, which held on "
                             "the validation split" + (f" (--guarantee {guarantee:g})" if guarantee else
                                                       "; --guarantee P holds it on unseen data with probability P"))
    return out


def measured_line(rec: dict, objective: str) -> str:
    chosen, single = rec["chosen"], rec["best_single"]
    fmt = f"{chosen['numeric']}, {chosen['basis']}"
    if rec["single_processor_wins"]:
        return (f"{_no_exit(rec, chosen, objective)}; built the single-processor bundle ({fmt}): {_describe(chosen)} "
                f"per sample, accuracy {100 * chosen['accuracy']:.2f} %")
    key = {"energy": "mean_energy_j", "latency": "mean_latency_s"}.get(objective, "mean_macs")
    ratio = rec["ratio"].get(key)
    return (f"chosen early-exit network on {' → '.join(chosen['processors'])} ({fmt}): {_describe(chosen)} per "
            f"sample, " + (f"{ratio:.2f}x the {objective} of " if ratio else "against ")
            + f"the {single['numeric']} original model alone on {single['processors'][0]} ({single['basis']}: "
            f"{_describe(single)}); test accuracy {100 * chosen['accuracy']:.2f} % vs {100 * single['accuracy']:.2f} % "
            f"({rec['accuracy_delta_pt']:+.2f} pt" + _interval(rec.get("accuracy_drop_interval_pt")) + ")"
            + (f"; the original was not emulated ({single.get('skipped') or 'not counted'}), so no ratio: compare "
               "the search's prediction below" if rec.get("mixed_basis") else "")
            + (f"; {rec['limit_note']}" if rec.get("limit_note") else "") + _costlier(ratio, objective)
            + _costlier_on_device(rec, objective, single))


def _interval(drop_pt) -> str:
    return "" if drop_pt is None else f", drop 95 % interval [{drop_pt[0]:.2f}, {drop_pt[1]:.2f}] pt"


def prediction_check(manifest: dict) -> dict | None:
    """Predicted (cost model) vs emulated instructions per stage, and the cascade's mean latency and energy:
    the search's figure, the prediction at the written cascade's exit rates, and the emulated one."""
    stages = manifest["stages"]
    rows = []
    for s in stages:
        pred, emu = (s.get("predicted") or {}).get("instructions"), (s.get("emulation") or {}).get("instructions")
        rows.append({"index": s["index"], "target": s["target"], "predicted_instructions": pred,
                     "emulated_instructions": emu,
                     "error": (pred / emu - 1) if pred and emu else None,
                     "predicted_latency_s": s["compute_s"], "emulated_latency_s": s.get("latency_calibrated_s")})
    measured = manifest["placement"]["metrics"]["measured"]
    search = manifest["placement"]["metrics"].get("search") or {}
    if not any(r["emulated_instructions"] for r in rows):
        return None
    out = {"stages": rows, "cascade": {}}
    for what, unit in (("energy", "j"), ("latency", "s")):
        emulated = measured.get(f"mean_{what}_calibrated_{unit}")
        entry = {"search": search.get(f"mean_{what}_{unit}"), "predicted": measured.get(f"mean_{what}_{unit}"),
                 "emulated": emulated}
        if emulated:
            entry["emulated_over_search"] = emulated / entry["search"] if entry["search"] else None
            entry["emulated_over_predicted"] = emulated / entry["predicted"] if entry["predicted"] else None
        out["cascade"][what] = entry
    return out
