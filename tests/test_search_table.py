"""`eecc search`'s table: exit rates in percent as compile prints them, adding up to 100 % on every row."""

from __future__ import annotations

from eecc.cli.search import print_table
from eecc.search.search import SearchOptions, search
from eecc.search.synthetic import synthetic_logits

# The "exit rates %" column for synthetic_logits(k=3, n_test=1999), one row per placement (golden). The table printed
# fractions (0.01 0.40 0.59) where compile prints percents; rounded each on its own the fourth row read 1.0, 39.7, 59.4
# (100.1 %).
EXIT_RATES = ["5.1, 94.9", "40.6, 59.4", "68.5, 31.5", "0.9, 39.7, 59.4", "3.5, 65.1, 31.4", "39.4, 30.4, 30.2"]


def test_search_table_prints_exit_rates_in_percent_adding_up_to_100(capsys):
    result = search(synthetic_logits(k=3, n_val=2000, n_test=1999), options=SearchOptions(intervals=False))
    capsys.readouterr()
    print_table(result)
    lines = capsys.readouterr().out.splitlines()
    header = next(ln for ln in lines if "exit rates" in ln)
    column = [c.strip() for c in header.split("┃")].index("exit rates %")
    rows = [[c.strip() for c in ln.split("│")] for ln in lines if ln.startswith("│")]
    assert [r[column] for r in rows] == EXIT_RATES
    assert all(round(sum(float(v) for v in cell.split(", ")), 6) == 100.0 for cell in EXIT_RATES)
    rates = result.placements[3].test.exit_rates  # where rounding each share alone overshoots
    assert round(sum(float(f"{100 * r:.1f}") for r in rates), 6) == 100.1
