"""Shared fixtures: real-data location, seeding, CPU thread count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$PTYFLOW_DATA`` or ``../shared/data`` beside the checkout."""
    env = os.environ.get("PTYFLOW_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"real data folder {d} is absent (set PTYFLOW_DATA to point at it)")
    return d


@pytest.fixture(autouse=True)
def _seed():
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - pins any code still on the legacy global RNG
    yield


@pytest.fixture
def one_thread():
    """One torch thread for the test (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    Small problems: on a shared 2-core machine two OpenMP threads stall on each other
    (measured 13x slower per optimisation step under load).
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_configure(config):
    import torch

    # Under pytest-xdist the cores are shared by the workers: more torch threads than
    # cores stall on each other (measured 10x slower under contention).
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // workers)))
