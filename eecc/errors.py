"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import importlib
from types import ModuleType


class EeccError(Exception):
    """A problem with the user's input that names what is wrong and how to fix it."""


class EeccWarning(UserWarning):
    """A note on the user's input that does not stop the run; the CLI prints it as one line on stderr."""


class MissingExtra(EeccError, ImportError):
    """An optional dependency is not installed. Also an ImportError, so code that probes for optional
    modules (multiprocessing's preload, `except ImportError`) treats it as the missing module it is."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """`module`, imported; if it is not installed, a one-line MissingExtra naming the pip extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{purpose} needs {module.split('.')[0]}, which is not installed; "
                           f"install the '{extra}' extra: pip install 'eecc[{extra}]'") from None
