"""How summaries, tables and the report print figures: separators on counts, µs/µJ for fast targets."""

from eecc.report.units import count, duration, energy, percents, things


def test_counts_carry_thousands_separators_with_their_interval():
    assert count(753856.4, (719146.0, 786545.2)) == "753,856 [719,146, 786,545]"
    assert count(1608576) == "1,608,576"


def test_fast_targets_read_in_microseconds_and_microjoules_never_zero_milliseconds():
    assert duration(5.8e-6) == "5.8 µs" and duration(6.0e-5) == "60.0 µs"
    assert duration(0.0126912) == "12.69 ms" and duration(2.5) == "2.50 s"
    assert energy(4.06e-4) == "0.406 mJ" and energy(3.2e-6) == "3.20 µJ"


def test_one_stage_is_singular():
    assert things(1, "stage") == "1 stage" and things(3, "stage") == "3 stages" and things(0, "exit") == "0 exits"


def test_gpu_figures_read_in_nanoseconds_never_zero_microseconds():
    """nu8: rk3588-cuda printed "0.0 µs mean (0.1 µs worst case)"."""
    assert duration(3.72e-8) == "37.2 ns" and duration(1.2e-7) == "120 ns" and duration(9.99e-7) == "999 ns"
    assert duration(1e-6) == "1.0 µs" and energy(5.12e-8) == "0.05 µJ" and energy(5.12e-9) == "5.12 nJ"


def test_exit_rates_add_up_and_a_share_is_never_rounded_to_all_or_nothing():
    """nu13 F8: 1999 / 1 of 2000 samples printed as "stage 0: 100.0 %, stage 1: 0.1 %"."""
    assert percents([1999 / 2000, 1 / 2000]) == ["99.9", "0.1"]
    assert percents([1878 / 2000, 122 / 2000]) == ["93.9", "6.1"]
    assert percents([1 / 3, 1 / 3, 1 / 3]) == ["33.4", "33.3", "33.3"]
    assert percents([1.0, 0.0]) == ["100.0", "0.0"] and percents([]) == []
    # nu15 F1: 1 of 10000 printed as 0.1 % (ten times the share): more decimals until every share shows
    assert percents([9999 / 10000, 1 / 10000]) == ["99.99", "0.01"]
    assert percents([0.5, 0.4999, 1 / 10000]) == ["50.00", "49.99", "0.01"]
    assert percents([1 - 1e-12, 1e-12]) == ["100.0", "0.0"]  # float noise is not a share
    assert percents([1 - 1e-7, 1e-7]) == ["99.9999", "0.0001"]  # past 4 decimals: one unit of the last
    for n in (7, 2000, 9999):  # every split of n samples into three stages adds up to 100.0
        for a in range(0, n + 1, max(1, n // 37)):
            shown = percents([a / n, (n - a) / (2 * n), (n - a) / (2 * n)])
            assert abs(sum(float(v) for v in shown) - 100.0) < 1e-9, (n, a, shown)
            assert all((float(v) == 0) == (r == 0) for v, r in zip(shown, [a, n - a, n - a])), (n, a, shown)
