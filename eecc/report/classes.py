"""Per-class recall beside accuracy on a skewed split (nu14 F5), as compile's summary, the report and run print it."""

from __future__ import annotations

SHOWN = 3  # classes listed one by one; above that, the one whose recall falls most (or, alone, the lowest)


def recall_line(pc: dict | None, split: str = "test") -> str | None:
    """'recall per class (the test split is 90 % class 0): class 0 99.4 % (original 99.5 %, -0.1 pt), class 1 ...;
    balanced accuracy ...' from a measured run's `per_class` (eecc.bundle.verify.per_class); without
    `original_recall` (eecc.bundle.verify.class_recall: `eecc run` on other data than the compile's test split) the
    cascade's figures alone. None on a split that is not skewed (accuracy then says it) or a manifest without the
    record. `split` names the split in the text."""
    if not pc or not pc.get("skewed"):
        return None
    classes, recall, original = pc["classes"], pc["recall"], pc.get("original_recall")
    top = max(range(len(classes)), key=lambda i: pc["samples"][i])
    share = f"the {split} split is {100 * pc['samples'][top] / sum(pc['samples']):.0f} % class {classes[top]}"
    if len(classes) <= SHOWN:
        shown, what = range(len(classes)), "recall per class"
    elif original is None:
        shown, what = [min(range(len(classes)), key=recall.__getitem__)], "recall of the class recalled least"
    else:
        shown = [max(range(len(classes)), key=lambda i: original[i] - recall[i])]
        what = "recall of the class that loses most"
    parts = ", ".join(f"class {classes[i]} {100 * recall[i]:.1f} %" + (
        "" if original is None else f" (original {100 * original[i]:.1f} %, {100 * (recall[i] - original[i]):+.1f} pt)")
        for i in shown)
    b = pc["balanced_accuracy"]
    balanced = f"balanced accuracy {100 * b:.2f} %"
    if original is not None:
        ob = pc["original_balanced_accuracy"]
        balanced += f" (original {100 * ob:.2f} %, {100 * (b - ob):+.2f} pt)"
    return f"{what} ({share}): {parts}; {balanced}"


def recall_warning(pc: dict | None, max_accuracy_drop: float | None) -> str | None:
    """A warning when, on a skewed split, a class's recall falls by more than the search's accuracy limit (a
    fraction), which holds on plain accuracy only; None otherwise (and without the original's recall)."""
    if not pc or not pc.get("skewed") or max_accuracy_drop is None or pc.get("original_recall") is None:
        return None
    drops = [o - r for r, o in zip(pc["recall"], pc["original_recall"])]
    worst = max(range(len(drops)), key=drops.__getitem__)
    if drops[worst] <= max_accuracy_drop + 1e-12:
        return None
    return (f"class {pc['classes'][worst]}'s recall falls {100 * drops[worst]:.1f} pt ({pc['samples'][worst]} test "
            f"samples), more than the {100 * max_accuracy_drop:.2f} pt limit, which the search holds on plain "
            "accuracy only: on a skewed split check the per-class recall above before deploying")
