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
    """Shares of one whole (exit rates) as percentages that add up to 100 at `digits` decimals (largest remainder;
    ties to the smaller share) and never show a share that is not 0 as 0, or one that is not all as 100: 1999 and 1
    of 2000 print as '99.9', '0.1', not '100.0', '0.1' (nu13 F8)."""
    import math

    unit = 10 ** digits
    raw = [100 * unit * float(s) for s in shares]
    shown = [math.floor(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: (shown[i] - raw[i], shown[i]))[:round(sum(raw)) - sum(shown)]:
        shown[i] += 1
    for i, x in enumerate(raw):
        if x > 0 and shown[i] == 0:  # one unit from the largest share, which is then below 100 as it should be
            shown[shown.index(max(shown))] -= 1
            shown[i] = 1
    return [f"{v / unit:.{digits}f}" for v in shown]
