"""The one Pareto filter (pymoo's non-dominated sorting), for the search's NSGA-II set and the report's front."""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def non_dominated(items: Sequence[T], key: Callable[[T], tuple[float, float]]) -> list[T]:
    """The items no other item dominates, cheapest first; `key(item)` = (cost, accuracy).

    An item is dominated when another costs no more and is at least as accurate, and is strictly better
    in one of the two. Items with equal figures are all kept, in their given order.
    """
    if not items:
        return []
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    f = np.array([(cost, -acc) for cost, acc in map(key, items)], dtype=np.float64)
    front = sorted(int(i) for i in NonDominatedSorting().do(f, only_non_dominated_front=True))
    return sorted((items[i] for i in front), key=lambda item: key(item)[0])
