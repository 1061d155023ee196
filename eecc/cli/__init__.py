"""`eecc` command line: subcommands are the other modules of eecc/cli/; user errors become one line and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import signal
import sys
import threading
import warnings

from eecc import __version__, signals
from eecc.errors import EeccError, EeccWarning

# Listed so that `eecc --help` shows the main flow first; other modules are appended in name order.
ORDER = ["compile", "inspect", "exits", "search", "run", "targets", "report"]


class OneLineParser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit code 2, like every other user error."""

    def error(self, message: str):
        option = re.fullmatch(r"argument (?:-\w/)?(--[\w-]+): expected one argument", message)
        if option:  # argparse reads a value that starts with '-' (e.g. -1%) as another option
            message += f" (a value starting with '-' must be written {option.group(1)}=VALUE)"
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="eecc", description="Early-exit conversion compiler for ONNX classifiers.")
    parser.add_argument("--version", action="version", version=f"eecc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = [m.name for m in pkgutil.iter_modules(__path__)]
    for name in sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        importlib.import_module(f"eecc.cli.{name}").register(subparsers)
    return parser


def one_line(command: str, exc: EeccError) -> str:
    """`eecc compile: error: <message>`, without the message's own `compile: ` (raised by the library code
    that the subcommand calls, where it names the caller): one prefix, not two."""
    message, name = str(exc), command.removeprefix("eecc ")
    return f"{command}: error: {message.removeprefix(f'{name}: ') if name != 'eecc' else message}"


def _one_line_warnings(command: str):
    """warnings.showwarning that prints an EeccWarning as `eecc <command>: warning: <message>`, one line, once per
    command: Python's own once-per-location registry is reset whenever an import changes the warning filters, so
    `compile`, which loads the model twice (CLI and compile_model), printed skl2onnx's warning twice (nu12)."""
    show = warnings.showwarning
    shown: set[str] = set()

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EeccWarning):
            if str(message) not in shown:
                shown.add(str(message))
                print(f"{command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # the stop signal delivered once more while its cleanup or `restore` ran: already
        return 128 + signal.SIGINT  # reported; without this Python re-raises SIGINT at exit (rc -2, not 130)
    except signals.Terminated:
        return 128 + signal.SIGTERM


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    command = "eecc"
    main_thread = threading.current_thread() is threading.main_thread()  # signal.signal works only there
    previous = signals.install() if main_thread else {}
    try:
        args = parser.parse_args(argv)
        command = f"eecc {args.command}"
        from eecc.runtime.sessions import quiet_default_logger

        quiet_default_logger()  # onnxruntime's warnings (hundreds on an int8 build) are not eecc's output
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(command)
            return int(args.func(args) or 0)
    except EeccError as exc:
        if signals.arrived() is not None:  # a library turned the signal's exception into an error
            return _stopped(command, signals.arrived())
        print(one_line(command, exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _stopped(command, signal.SIGINT)
    except signals.Terminated:
        return _stopped(command, signal.SIGTERM)
    except Exception:
        if signals.arrived() is not None:
            return _stopped(command, signals.arrived())
        raise
    finally:
        signals.restore(previous)  # main() also runs inside other programs (the tests)


def _stopped(command: str, signum: int) -> int:
    """`interrupted` (SIGINT, exit code 130) or `terminated` (SIGTERM, 143), the shell's codes for them."""
    print(f"{command}: {'interrupted' if signum == signal.SIGINT else 'terminated'}", file=sys.stderr)
    return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
