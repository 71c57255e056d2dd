"""Shared fixtures: tiny random SAM / MobileSAM backends (seeded) and a small test image."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import visionkit
from visionkit.testing import make_test_image


def load_seeded(name: str, seed: int = 0, **options: Any) -> Any:
    """``visionkit.load(name, weights=None)`` with torch seeded, so the random weights are reproducible."""
    torch.manual_seed(seed)
    return visionkit.load(name, weights=None, **options)


@pytest.fixture(scope="session")
def tiny_sam() -> Any:
    return load_seeded("sam")


@pytest.fixture(scope="session")
def tiny_mobile_sam() -> Any:
    return load_seeded("mobile-sam")


@pytest.fixture
def image() -> np.ndarray:
    return make_test_image(96, 128, seed=0)


@pytest.fixture(name="load_seeded")
def _load_seeded() -> Any:
    return load_seeded


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    """One intra-op thread for these tests: on a shared 2-core runner, OpenMP threads spinning against
    other processes made each tiny decode ~30x slower. Restored afterwards for other plugins' tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
