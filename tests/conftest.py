"""Fixtures shared by the test modules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def _digits_npz(tmp_path_factory) -> Path:
    from eecc.examples import datasets

    return datasets.save_npz(datasets.load("digits"), tmp_path_factory.mktemp("digits-data") / "d.npz")


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory, _digits_npz) -> Path:
    """A module's own folder holding d.npz (sklearn's digits as eecc.examples.datasets splits them, written once per
    session); the module's outputs and cache (`digits_folder / "cache"`) go in it, so no module sees another's
    trained heads."""
    folder = tmp_path_factory.mktemp("digits")
    shutil.copyfile(_digits_npz, folder / "d.npz")
    return folder


ONE_M4 = """name = "one-m4"
[[processors]]
name = "m4"
kind = "cortex-m4"
macs_per_s = 75e6
ram_bytes = 1048576
storage_bytes = 2097152
active_power_w = 0.032
idle_power_w = 0.001
clock_hz = 150e6
"""


@pytest.fixture(scope="session")
def one_m4_toml(tmp_path_factory) -> Path:
    """A platform of one Cortex-M4 (1 MiB RAM, 2 MiB flash, PSoC 6's M4F power and clock) as a TOML file: the
    stages of a cascade back to back on one core (tests/test_deployment.py, tests/test_firmware_bundle.py)."""
    path = tmp_path_factory.mktemp("one-m4") / "one.toml"
    path.write_text(ONE_M4)
    return path
