"""How summaries, tables and the report print figures: separators on counts, µs/µJ for fast targets."""

from eecc.report.units import count, duration, energy, things


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
