"""Per-class recall beside accuracy on a skewed test split (nu14 F5), as compile's summary and the report print it."""

from __future__ import annotations

SHOWN = 3  # classes listed one by one; above that, the one whose recall falls most


def recall_line(pc: dict | None) -> str | None:
    """'recall per class (the test split is 90 % class 0): class 0 99.4 % (original 99.5 %, -0.1 pt), class 1 ...;
    balanced accuracy ...' from a measured run's `per_class` (eecc.bundle.verify.per_class); None on a split that
    is not skewed (accuracy then says it) or a manifest without the record."""
    if not pc or not pc.get("skewed"):
        return None
    classes, recall, original = pc["classes"], pc["recall"], pc["original_recall"]
    top = max(range(len(classes)), key=lambda i: pc["samples"][i])
    split = f"the test split is {100 * pc['samples'][top] / sum(pc['samples']):.0f} % class {classes[top]}"
    shown = range(len(classes)) if len(classes) <= SHOWN else [max(range(len(classes)),
                                                                   key=lambda i: original[i] - recall[i])]
    parts = ", ".join(f"class {classes[i]} {100 * recall[i]:.1f} % (original {100 * original[i]:.1f} %, "
                      f"{100 * (recall[i] - original[i]):+.1f} pt)" for i in shown)
    what = "recall per class" if len(classes) <= SHOWN else "recall of the class that loses most"
    b, ob = pc["balanced_accuracy"], pc["original_balanced_accuracy"]
    return (f"{what} ({split}): {parts}; balanced accuracy {100 * b:.2f} % (original {100 * ob:.2f} %, "
            f"{100 * (b - ob):+.2f} pt)")


def recall_warning(pc: dict | None, max_accuracy_drop: float | None) -> str | None:
    """A warning when, on a skewed split, a class's recall falls by more than the search's accuracy limit (a
    fraction), which holds on plain accuracy only; None otherwise."""
    if not pc or not pc.get("skewed") or max_accuracy_drop is None:
        return None
    drops = [o - r for r, o in zip(pc["recall"], pc["original_recall"])]
    worst = max(range(len(drops)), key=drops.__getitem__)
    if drops[worst] <= max_accuracy_drop + 1e-12:
        return None
    return (f"class {pc['classes'][worst]}'s recall falls {100 * drops[worst]:.1f} pt ({pc['samples'][worst]} test "
            f"samples), more than the {100 * max_accuracy_drop:.2f} pt limit, which the search holds on plain "
            "accuracy only: on a skewed split check the per-class recall above before deploying")
