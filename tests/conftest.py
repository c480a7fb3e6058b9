import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

from helpers import DATA, FIXTURES  # noqa: E402


@pytest.fixture(scope="session")
def fixtures_dir():
    if not os.path.isdir(FIXTURES):
        pytest.fail(f"Matterport fixtures not found at {FIXTURES}; set MRCNN_SHARED to the shared/ folder")
    return FIXTURES


@pytest.fixture(scope="session")
def data_dir():
    if not os.path.isdir(DATA):
        pytest.fail(f"shared data not found at {DATA}; set MRCNN_SHARED to the shared/ folder")
    return DATA
