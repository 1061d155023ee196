"""The breadth suite as a table: per model, eecc's MACs against an independent count, blocks, candidates, head.

    python bench/zoo.py [--all-dynamo] [--out bench/results/zoo.json]

Models come from tests/fixtures/make_zoo.py (torchvision families with random weights, exported with
the TorchScript exporter and, for a subset or --all-dynamo, the dynamo exporter; hand-built classic-zoo
and Keras-style graphs). Reference MACs: fvcore on the torch module, or the hand-built graph's own count.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from eecc.driver.pipeline import analyse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import make_zoo  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all-dynamo", action="store_true", help="export every torch family with dynamo too")
    ap.add_argument("--out", default=str(ROOT / "bench/results/zoo.json"))
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dynamo = tuple(make_zoo.zoo_torch.BUILDERS) if args.all_dynamo else make_zoo.DYNAMO
        for name, row in make_zoo.make(Path(tmp), dynamo=dynamo).items():
            _, blocks = analyse(row["path"])
            rows.append({"model": name, "reference_macs": row["macs"], "source": row["source"],
                         "eecc_macs": blocks.total_macs, "error": (blocks.total_macs - row["macs"]) / row["macs"],
                         "blocks": len(blocks.blocks), "candidates": len(blocks.candidates()),
                         "head": list(blocks.head.ops), "output_kind": blocks.head.output_kind,
                         "normalized": list(blocks.head.normalized)})
    table = Table(title=f"breadth suite: {len(rows)} models")
    for col in ("model", "reference MACs", "eecc MACs", "error", "blocks", "cands", "head", "normalised"):
        table.add_column(col, justify="right" if "MACs" in col or col in ("error", "blocks", "cands") else "left")
    for r in rows:
        table.add_row(r["model"], f"{r['reference_macs']:,}", f"{r['eecc_macs']:,}", f"{100 * r['error']:+.2f} %",
                      str(r["blocks"]), str(r["candidates"]), " → ".join(r["head"]), ", ".join(r["normalized"]))
    Console(width=200).print(table)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"max |error| {max(abs(r['error']) for r in rows):.2%} over {len(rows)} models; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
