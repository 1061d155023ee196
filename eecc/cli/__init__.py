"""`eecc` command line: subcommands are the other modules of eecc/cli/; user errors become one line and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from eecc import __version__
from eecc.errors import EeccError

# Listed so that `eecc --help` shows the main flow first; other modules are appended in name order.
ORDER = ["compile", "inspect", "exits", "search", "run", "targets", "report"]


class OneLineParser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit code 2, like every other user error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="eecc", description="Early-exit conversion compiler for ONNX classifiers.")
    parser.add_argument("--version", action="version", version=f"eecc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = [m.name for m in pkgutil.iter_modules(__path__)]
    for name in sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        importlib.import_module(f"eecc.cli.{name}").register(subparsers)
    return parser




def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    command = "eecc"
    try:
        args = parser.parse_args(argv)
        command = f"eecc {args.command}"
        return int(args.func(args) or 0)
    except EeccError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
