"""`eecc` command line: subcommands are the other modules of eecc/cli/; user errors become one line and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
import threading
import warnings

from eecc import __version__
from eecc.errors import EeccError, EeccWarning

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


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every `finally` and staging folder cleans up as on Ctrl-C
    (Python's default SIGTERM action ends the process without unwinding: it left `.OUT.*.partial/` behind)."""


def _on_sigterm(pid: int):
    """A SIGTERM handler raising Terminated in process `pid`; a worker forked from it that inherited the
    handler dies of the signal instead, as the pool stopping it expects."""

    def handler(signum, frame):
        if os.getpid() == pid:
            raise Terminated
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    return handler


def one_line(command: str, exc: EeccError) -> str:
    """`eecc compile: error: <message>`, without the message's own `compile: ` (raised by the library code
    that the subcommand calls, where it names the caller): one prefix, not two."""
    message, name = str(exc), command.removeprefix("eecc ")
    return f"{command}: error: {message.removeprefix(f'{name}: ') if name != 'eecc' else message}"


def _one_line_warnings(command: str):
    """warnings.showwarning that prints an EeccWarning as `eecc <command>: warning: <message>`, one line."""
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EeccWarning):
            print(f"{command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    command = "eecc"
    main_thread = threading.current_thread() is threading.main_thread()  # signal.signal works only there
    previous = signal.signal(signal.SIGTERM, _on_sigterm(os.getpid())) if main_thread else None
    try:
        args = parser.parse_args(argv)
        command = f"eecc {args.command}"
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(command)
            return int(args.func(args) or 0)
    except EeccError as exc:
        print(one_line(command, exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if main_thread and previous is not None:  # main() also runs inside other programs (the tests)
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
