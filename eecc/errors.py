"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import importlib
from types import ModuleType


class EeccError(Exception):
    """A problem with the user's input that names what is wrong and how to fix it."""


class EeccWarning(UserWarning):
    """A note on the user's input that does not stop the run; the CLI prints it as one line on stderr."""


class SymbolicInputShape(EeccError):
    """The model's input has symbolic non-batch dims and no --input-shape fixed them. `declared`: the non-batch
    dims, None where symbolic; `with_data` adds the sizes a data set's samples have (nu12 F5)."""

    def __init__(self, message: str, declared: list[int | None]):
        super().__init__(message)
        self.declared = declared

    def with_data(self, sample_shape) -> EeccError:
        """The error, with the advice to pass the data's sample shape when it fits the declared dims."""
        shape = None if sample_shape is None else [int(d) for d in sample_shape]
        if shape is None or len(shape) != len(self.declared) or any(
                d is not None and d != s for d, s in zip(self.declared, shape)):
            return self
        return EeccError(f"{self}; your data's samples are {shape}: pass --input-shape {','.join(map(str, shape))}")


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
