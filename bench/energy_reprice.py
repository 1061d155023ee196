"""The cost-model rows of a bench/energy.py result predicted again with the shipped eecc/cost/measured.json (each
fixture held out of the fit), without compiling or emulating again.

    python bench/energy_reprice.py bench/results/energy_cost_model.json [--out FILE]

bench/energy.py's cost-model part searches with --objective macs, so its stages, their QEMU counts and their
features depend on the kernels and the trained heads only, never on the cost model's weights: after measured.json
is refitted on the same kernels (the rows record kernels_id), this gives the figures a full rerun would, in seconds.
Rows measured on other kernels are refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from eecc.cost.features import FEATURES
from eecc.cost.model import fit, load_rows

from energy import print_tables  # bench/ is the script's own directory (python bench/energy_reprice.py)


def reprice(summary: dict) -> dict:
    """`summary` with every cost-model row's prediction and error from the shipped rows' held-out fits."""
    doc = load_rows()
    rows = summary["cost_model"]
    stale = {r.get("kernels") for r in rows} - {doc["kernels"]}
    if stale:
        raise SystemExit(f"energy_reprice: rows measured on kernels {sorted(map(str, stale))}, measured.json is on "
                         f"{doc['kernels']}; run python bench/energy.py --skip-deployments instead")
    if any(len(r.get("features", [])) != len(FEATURES) for r in rows):
        raise SystemExit("energy_reprice: rows without this checkout's features; rerun bench/energy.py")
    fits = {m: fit(doc["rows"], exclude=(m,)) for m in dict.fromkeys(r["model"] for r in rows)}
    for r in rows:
        r["predicted_instructions"] = float(fits[r["model"]].instructions(np.asarray(r["features"]), r["cpu"], r["format"]))
        r["error"] = r["predicted_instructions"] / r["emulated_instructions"] - 1
    summary["within_15pct"] = sum(abs(r["error"]) <= 0.15 for r in rows)
    summary["repriced"] = "python bench/energy_reprice.py (measured.json of kernels " + doc["kernels"] + ")"
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", help="a bench/energy.py JSON with cost-model rows")
    ap.add_argument("--out", help="where to write (default: the input file)")
    args = ap.parse_args()
    summary = reprice(json.loads(Path(args.result).read_text()))
    print_tables(summary)
    Path(args.out or args.result).write_text(json.dumps(summary, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
