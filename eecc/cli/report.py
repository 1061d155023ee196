"""`eecc report OUT`: (re)write OUT/report.html and its PNGs from a compiled bundle."""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="write OUT/report.html (plots, block graph) for a compiled bundle")
    p.add_argument("bundle", help="the output folder of `eecc compile`")
    p.add_argument("--json", action="store_true", help='print {"report", "figures"} as one JSON object on stdout')
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from eecc.errors import EeccError
    from eecc.report.page import write_report

    bundle = Path(args.bundle)
    if bundle.exists() and not bundle.is_dir():
        raise EeccError(f"'{bundle}' is a file; pass the output folder of eecc compile")
    path = write_report(bundle, progress=not (args.json or args.quiet))
    figures = sorted(str(p) for p in bundle.glob("report.*.png"))
    if args.json:
        print(json.dumps({"report": str(path), "figures": figures}))
    else:
        print(f"report {path} ({len(figures)} figures)")
    return 0
