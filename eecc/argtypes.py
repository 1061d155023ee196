"""argparse types for numeric options: a value out of range (negative, zero, NaN, inf) is a usage error, one line
naming the option, what it must be and an example, exit code 2 (OneLineParser), before any work is done."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def positive(example: str) -> Callable[[str], float]:
    """A finite number > 0 (a scale factor, a time limit, a correction factor)."""
    return _number(lambda v: math.isfinite(v) and v > 0, "a finite number > 0", example)


def non_negative(example: str, *, inf: bool = False) -> Callable[[str], float]:
    """A number >= 0; `inf` also admits 'inf' (a limit lifted)."""
    what = "a number >= 0" + (" or 'inf'" if inf else " (finite)")
    return _number(lambda v: v >= 0 and (inf or math.isfinite(v)), what, example)


def at_least(least: int, example: str) -> Callable[[str], int]:
    """An integer >= least (a count: epochs, workers, exits, threads)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer; give one >= {least}, e.g. {example}") \
                from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below {least}; give an integer >= {least}, e.g. {example}")
        return value

    return parse


def names(example: str) -> Callable[[str], tuple[str, ...]]:
    """Comma-separated names, none empty (the processors of a placement)."""

    def parse(text: str) -> tuple[str, ...]:
        parts = tuple(part.strip() for part in text.split(","))
        if not all(parts):
            raise argparse.ArgumentTypeError(f"'{text}' has an empty entry; give names separated by commas, "
                                             f"e.g. {example}")
        return parts

    return parse


def _number(ok: Callable[[float], bool], what: str, example: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number; give {what}, e.g. {example}") from None
        if not ok(value):
            sign = " is negative" if value < 0 else " is not allowed"
            raise argparse.ArgumentTypeError(f"{text}{sign}: give {what}, e.g. {example}")
        return value

    return parse
