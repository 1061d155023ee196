"""An exact one-sided test of "paired accuracy drop > α" on the trinomial of paired outcomes.

Each sample compares the original model and the cascade: n10 = original right and cascade wrong,
n01 = original wrong and cascade right, the rest agree. (n10, n01, n − n10 − n01) is trinomial with
cell probabilities (p10, p01, 1 − p10 − p01), and the accuracy drop is p10 − p01. The null
H0: p10 − p01 ≥ α is tested with

- the score statistic of Nam (1997, "Establishing equivalence of two treatments and sample size
  requirements in matched-pairs design", Biometrics 53:1422–1430) and Tango (1998, "Equivalence test
  and confidence interval for the difference in proportions for the paired-sample design",
  Statistics in Medicine 17:891–908): T = (n10 − n01 − nα) / sqrt(n (p̃10 + p̃01 − α²)), p̃ the
  maximum-likelihood cells under p10 − p01 = α (`restricted_p01`); H0 is rejected for small T;
- an exact unconditional p-value maximised over the nuisance p01 in a 1 − γ Clopper–Pearson upper
  confidence set, plus γ (Berger & Boos 1994, "P values maximized over a confidence set for the
  nuisance parameter", JASA 89:1012–1016; for paired non-inferiority: Sidik 2003, "Exact unconditional
  tests for testing non-inferiority in matched-pairs design", Statistics in Medicine 22:265–278).

The rejection region of an observation is the lower set {n10 ≤ r(n01)} with r(j) the largest n10
whose T is ≤ the observed T: given n01 = j, n10 is Binomial(n − j, p10 / (1 − p01)), stochastically
increasing in p10, so over the whole null the region's probability is largest on the boundary
p10 = p01 + α and the supremum runs over p01 alone. That supremum is bounded rigorously, not read off
a grid: along the boundary, g(x) = arcsin √P_x(region) has |g'(x)| ≤ √(n I(x)) / 2 with I the Fisher
information of one trinomial draw (Cauchy–Schwarz on the score), so between two grid points g exceeds
the mean of its two end values by at most half the integral of that slope (closed form, `_phi`). Cells
whose bound is not conclusive are halved until every one is below the level or one grid value is above it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.stats import beta, binom

GAMMA_SHARE = 0.02   # γ = 2 % of δ goes to the nuisance confidence set (Berger & Boos suggest γ ≪ δ)
MAX_SPLITS = 14      # halvings of a cell before the test gives up and does not reject (safe side)


def restricted_p01(n10, n01, n: int, alpha: float) -> np.ndarray:
    """Maximum-likelihood p01 under p10 = p01 + alpha: the positive root of
    2n x² − b x − n01 α(1 − α) = 0 with b = n10(1 − α) + n01(1 − 3α) − 2(n − n10 − n01)α."""
    n10, n01 = np.asarray(n10, dtype=np.float64), np.asarray(n01, dtype=np.float64)
    b = n10 * (1 - alpha) + n01 * (1 - 3 * alpha) - 2 * (n - n10 - n01) * alpha
    x = (b + np.sqrt(b * b + 8 * n * n01 * alpha * (1 - alpha))) / (4 * n)
    return np.clip(x, 0.0, (1 - alpha) / 2)


def score(n10, n01, n: int, alpha: float) -> np.ndarray:
    """Nam–Tango score statistic for H0: p10 − p01 = alpha (small = evidence of a smaller drop)."""
    x = restricted_p01(n10, n01, n, alpha)
    var = np.maximum(2 * x + alpha - alpha * alpha, 1e-300)
    return (np.asarray(n10, dtype=np.float64) - n01 - n * alpha) / np.sqrt(n * var)


def _phi(x, n: int, alpha: float):
    """An antiderivative bound of √(n I(x)) / 2 along p10 = x + α, p01 = x, I(x) = 1/(x+α) + 1/x + 4/(1−2x−α):
    √(u+v+w) ≤ √u + √v + √w, integrated term by term; Φ(b) − Φ(a) bounds the rise of g over [a, b]."""
    x = np.asarray(x, dtype=np.float64)
    return np.sqrt(n) * (np.sqrt(x) + np.sqrt(x + alpha) - np.sqrt(np.maximum(1 - alpha - 2 * x, 0.0)))


class _Region:
    """P_x(n10 ≤ r(n01)) along the null boundary for one observation's lower-set region."""

    def __init__(self, n10: int, n01: int, n: int, alpha: float, x_max: float):
        self.n, self.alpha = n, alpha
        # n01 beyond j_max is counted as wholly inside the region (an upper bound on its mass)
        self.j_max = int(min(n, binom.isf(1e-12, n, x_max) + 1))
        t0 = score(n10, n01, n, alpha)
        j = np.arange(self.j_max + 1)
        i = np.arange(n + 1)
        # r(j) = the largest n10 in [0, n − j] with T ≤ t0: a lower set in n10 that holds the observation
        ok = (score(i[None], j[:, None], n, alpha) <= t0 + 1e-12) & (i[None] <= n - j[:, None])
        self.j = j
        self.r = np.where(ok.any(axis=1), n - np.argmax(ok[:, ::-1], axis=1), -1)

    def prob(self, x: np.ndarray) -> np.ndarray:
        """[len(x)] upper bounds on the region's probability at p01 = x, p10 = x + alpha."""
        x = np.asarray(x, dtype=np.float64)[:, None]
        n, a, j = self.n, self.alpha, self.j[None]
        q = np.clip((x + a) / np.maximum(1 - x, 1e-300), 0.0, 1.0)
        inside = np.where(self.r[None] >= 0, binom.cdf(self.r[None], n - j, q), 0.0)
        total = np.sum(binom.pmf(j, n, x) * inside, axis=1) + binom.sf(self.j_max, n, x[:, 0])
        return np.minimum(total, 1.0)


def rejects(n10: int, n01: int, n: int, alpha: float, delta: float) -> bool:
    """True when H0: drop ≥ alpha is rejected at level delta (see the module docstring). Counts of n
    samples; alpha a fraction; alpha ≤ 0 is never rejected (the restricted estimate assumes alpha > 0)."""
    return bool(_rejects(int(n10), int(n01), int(n), float(alpha), float(delta)))


@lru_cache(maxsize=65536)
def _rejects(n10: int, n01: int, n: int, alpha: float, delta: float) -> bool:
    if alpha <= 0 or n10 - n01 >= n * alpha:  # observed drop at the limit: T ≥ 0, never significant
        return False
    gamma = GAMMA_SHARE * delta
    level = delta - gamma
    x_max = min(float(beta.ppf(1 - gamma, n01 + 1, n - n01)) if n01 < n else 1.0, (1 - alpha) / 2)
    region = _Region(n10, n01, n, alpha, x_max)
    cap = np.arcsin(np.sqrt(level))
    lo, hi = _phi(0.0, n, alpha), _phi(x_max, n, alpha)
    xs = np.concatenate([[0.0], _inverse_phi(np.linspace(lo, hi, 33)[1:-1], n, alpha, x_max), [x_max]])
    g = np.arcsin(np.sqrt(region.prob(xs)))
    for _ in range(MAX_SPLITS):
        if np.any(g > cap):
            return False
        slack = np.diff(_phi(xs, n, alpha))
        bad = (g[:-1] + g[1:] + slack) / 2 > cap
        if not bad.any():
            return True
        mids = _inverse_phi((_phi(xs[:-1][bad], n, alpha) + _phi(xs[1:][bad], n, alpha)) / 2, n, alpha, x_max)
        xs = np.concatenate([xs, mids])
        g = np.concatenate([g, np.arcsin(np.sqrt(region.prob(mids)))])
        order = np.argsort(xs)
        xs, g = xs[order], g[order]
    return False


def _inverse_phi(values, n: int, alpha: float, x_max: float) -> np.ndarray:
    """x in [0, x_max] with Φ(x) = value (Φ is increasing), by bisection."""
    values = np.asarray(values, dtype=np.float64)
    a, b = np.zeros_like(values), np.full_like(values, x_max)
    for _ in range(60):
        m = (a + b) / 2
        below = _phi(m, n, alpha) < values
        a, b = np.where(below, m, a), np.where(below, b, m)
    return (a + b) / 2


def drop_bound(n10: int, n01: int, n: int, delta: float, hi: float, tol: float = 1e-5) -> float:
    """The (1 − delta) upper confidence bound on the drop by inverting `rejects` (bisection on alpha in
    [observed drop, hi]); hi itself when the test does not reject at hi. Assumes rejection is monotone in
    alpha (a larger limit is easier to show), which tests/test_paired.py checks on a range of counts."""
    if not rejects(n10, n01, n, hi, delta):
        return float(hi)
    lo = max((n10 - n01) / n, 0.0)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if rejects(n10, n01, n, mid, delta) else (mid, hi)
    return float(hi)
