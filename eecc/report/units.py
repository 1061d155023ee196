"""Figures as the summaries, tables and report print them: counts with thousands separators, times and
energies in a unit that keeps fast targets readable (µs and µJ below 0.1 ms and 0.01 mJ, ns and nJ below 1 µs
and 0.01 µJ: never "0.00 ms" or "0.0 µs")."""

from __future__ import annotations


def count(value: float, iv=None) -> str:
    """'753,856 [719,146, 786,545]': a count (MACs, instructions) with its interval, if any."""
    text = f"{value:,.0f}"
    return text if not iv else f"{text} [{iv[0]:,.0f}, {iv[1]:,.0f}]"


def things(n: int, noun: str) -> str:
    """'1 stage', '3 stages': a number of things with the noun's plural (regular English plurals only)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def duration(seconds: float) -> str:
    """'1.23 s', '12.69 ms', '5.8 µs', '37.2 ns' (a GPU's nominal figures: never "0.0 µs")."""
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-4:
        return f"{1e3 * seconds:.2f} ms"
    if seconds >= 1e-6 or seconds <= 0:
        return f"{1e6 * seconds:.1f} µs"
    return f"{1e9 * seconds:.3g} ns"


def energy(joules: float) -> str:
    """'0.406 mJ', '3.21 µJ', '51.2 nJ'."""
    if joules >= 1e-5:
        return f"{1e3 * joules:.3f} mJ"
    if joules >= 1e-8 or joules <= 0:
        return f"{1e6 * joules:.2f} µJ"
    return f"{1e9 * joules:.3g} nJ"


def percents(shares, digits: int = 1) -> list[str]:
    """Shares of one whole (exit rates) as percentages that add up to 100 (largest remainder; ties to the smaller
    share), at `digits` decimals or as many more (up to 4) as it takes to show every share that is not 0 as more
    than 0 and every one that is not all as less than 100: 1999 and 1 of 2000 print as '99.9', '0.1' (nu13 F8);
    9999 and 1 of 10000 as '99.99', '0.01', not '99.9', '0.1' (a tenfold overstatement, nu15 F1). Past 4 decimals
    such a share is shown as one unit of the last decimal, taken from the largest."""
    for d in range(digits, max(digits, 4) + 1):
        shown = _largest_remainder([100 * 10 ** d * float(s) for s in shares])
        raw = [float(s) for s in shares]  # below 1e-9 of all or nothing: float noise of a count ratio
        if all((v > 0) == (x > 1e-9) and (v < 100 * 10 ** d) == (x < 1 - 1e-9) for v, x in zip(shown, raw)):
            break
    for i, x in enumerate(raw):
        if x > 1e-9 and shown[i] == 0:  # one unit from the largest share, which is then below 100 as it should be
            shown[shown.index(max(shown))] -= 1
            shown[i] = 1
    return [f"{v / 10 ** d:.{d}f}" for v in shown]


def _largest_remainder(raw: list[float]) -> list[int]:
    """`raw` rounded to integers that add up to round(sum(raw)): floors, plus one to the largest remainders."""
    import math

    shown = [math.floor(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: (shown[i] - raw[i], shown[i]))[:round(sum(raw)) - sum(shown)]:
        shown[i] += 1
    return shown
