"""What the benchmark programs share: fixture arguments, the results file, a rich table.

The programs run as `python bench/<name>.py`, so bench/ is on sys.path and `from common import ...` works.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from rich.table import Table

from eecc.files import replacing

ROOT = Path(__file__).resolve().parent.parent


def fixture_args(ap: argparse.ArgumentParser, *, fixtures: str, limit: int | None, name: str) -> None:
    """--fixtures, --limit, --max-exits, --cache-dir (shared across runs) and --out bench/results/<name>.json."""
    ap.add_argument("--fixtures", default=fixtures)
    ap.add_argument("--limit", type=int, default=limit, help="keep the first N training samples")
    ap.add_argument("--max-exits", type=int, default=2)
    ap.add_argument("--cache-dir", default=os.environ.get("EECC_CACHE_DIR")
                    or str(Path(tempfile.gettempdir()) / "eecc-bench-cache"))
    ap.add_argument("--out", default=str(ROOT / f"bench/results/{name}.json"))


def write_results(path: str | os.PathLike, record, **json_options) -> Path:
    """The results as JSON at `path` (whole or not at all); says where on stderr."""
    path = Path(path)
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, **json_options))
    print(f"wrote {path}", file=sys.stderr)
    return path


def table(title: str, columns: Sequence[str], *, left: Sequence[str] = ()) -> Table:
    """A table whose columns are right-aligned (figures) except those named in `left`."""
    out = Table(title=title)
    for col in columns:
        out.add_column(col, justify="left" if col in left else "right")
    return out
