"""Shared fixtures. Tests that need ../shared (real Geant4 data, official binning files) skip
with a clear reason where it is absent, as in a user's fresh clone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
G4_FILE = SHARED / "data" / "g4_ds2_electrons_1-100GeV.h5"
BINNING_DIR = SHARED / "binning"


@pytest.fixture
def g4_file() -> Path:
    if not G4_FILE.is_file():
        pytest.skip(f"real Geant4 showers not available ({G4_FILE} is absent, as in a user's clone)")
    return G4_FILE


@pytest.fixture
def binning_dir() -> Path:
    if not BINNING_DIR.is_dir():
        pytest.skip(f"official binning files not available ({BINNING_DIR} is absent)")
    return BINNING_DIR


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
