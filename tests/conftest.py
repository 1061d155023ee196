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
