"""The exact paired test of "drop > α" (eecc/search/paired.py): its size, computed exactly, is ≤ δ on the
whole null; it is strictly less conservative than the Clopper–Pearson union bound it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.stats import binom

from eecc.search.guarantee import drop_upper_bound
from eecc.search.paired import _phi, _Region, drop_bound, rejects, restricted_p01, score


def _rejection_table(n: int, alpha: float, delta: float, j_max: int) -> np.ndarray:
    """[n + 1, j_max + 1] True where (n10, n01) is rejected; every n10 of every n01 ≤ j_max is decided."""
    table = np.zeros((n + 1, j_max + 1), dtype=bool)
    for j in range(j_max + 1):
        for i in range(min(n - j, int(np.ceil(j + n * alpha))) + 1):  # n10 − n01 ≥ nα is never rejected
            table[i, j] = rejects(i, j, n, alpha, delta)
    return table


def _size(table: np.ndarray, n: int, p10: float, p01: float) -> float:
    """P(reject) at (p10, p01), exactly; n01 beyond the table counts as rejected (an upper bound)."""
    j_max = table.shape[1] - 1
    total = binom.sf(j_max, n, p01)
    for j in range(j_max + 1):
        total += binom.pmf(j, n, p01) * np.sum(binom.pmf(np.arange(n + 1), n - j, p10 / (1 - p01)) * table[:, j])
    return float(total)


def test_the_exact_size_is_at_most_delta_on_the_null():
    n, alpha, delta = 300, 0.03, 0.1
    table = _rejection_table(n, alpha, delta, j_max=40)
    boundary = [_size(table, n, x + alpha, x) for x in np.linspace(0.0, 0.05, 11)]
    assert max(boundary) <= delta
    assert max(boundary) >= 0.7 * delta  # exact, not conservative: its size comes close to δ
    for p10, p01 in ((0.06, 0.01), (0.1, 0.04), (0.04, 0.0)):  # inside the null: rarer still
        assert _size(table, n, p10, p01) <= delta
    assert _size(table, n, 0.01, 0.01) > 0.5  # and it has power where the drop is 0


def test_less_conservative_than_the_clopper_pearson_union_bound():
    n, alpha, delta = 2500, 0.005, 0.05
    for n10, n01 in ((6, 0), (8, 2), (21, 20), (35, 40)):
        assert float(drop_upper_bound(n10, n01, n, delta)) > alpha and rejects(n10, n01, n, alpha, delta)
    for n10, n01 in ((4, 1), (15, 20), (20, 40)):  # whatever the old bound rejected, the new test rejects
        assert float(drop_upper_bound(n10, n01, n, delta)) <= alpha and rejects(n10, n01, n, alpha, delta)
    assert not rejects(20, 5, n, alpha, delta)  # 15 net errors of 2500 = 0.6 pt observed


def test_restricted_estimate_maximises_the_constrained_likelihood():
    n, alpha = 1000, 0.01
    for n10, n01 in ((12, 3), (0, 0), (40, 41), (5, 30)):
        x = float(restricted_p01(n10, n01, n, alpha))
        nll = lambda p: -(n10 * np.log(p + alpha) + n01 * np.log(max(p, 1e-300)) +
                          (n - n10 - n01) * np.log(1 - 2 * p - alpha))
        best = minimize_scalar(nll, bounds=(1e-12, (1 - alpha) / 2 - 1e-9), method="bounded",
                               options={"xatol": 1e-12})
        assert x == pytest.approx(best.x, abs=1e-6)
    assert float(score(10, 0, n, alpha)) == pytest.approx(0.0)  # observed drop = α: no evidence either way


def test_the_slope_bound_holds_between_grid_points():
    """arcsin √P_x(region) rises no faster than Φ: what makes the supremum over p01 rigorous."""
    n, alpha = 2500, 0.005
    region = _Region(12, 6, n, alpha, x_max=0.02)
    xs = np.linspace(0.0, 0.02, 401)
    g = np.arcsin(np.sqrt(region.prob(xs)))
    assert np.all(np.abs(np.diff(g)) <= np.diff(_phi(xs, n, alpha)) + 1e-12)


def test_the_bound_inverts_the_test():
    n, delta = 2500, 0.05
    for n10, n01 in ((8, 2), (21, 20), (3, 9)):
        b = drop_bound(n10, n01, n, delta, hi=0.02)
        assert (n10 - n01) / n < b < 0.02
        assert rejects(n10, n01, n, b + 2e-5, delta) and not rejects(n10, n01, n, max(b - 2e-4, 0.0), delta)
        grid = np.linspace(b, 0.02, 12)  # monotone in the limit above the bound
        assert all(rejects(n10, n01, n, a, delta) for a in grid[1:])
