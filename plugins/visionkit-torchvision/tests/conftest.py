"""Shared fixtures of the torchvision plugin's tests: small deterministic images and a clean environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torchvision", reason="the torchvision plugin's tests need torch and torchvision")

from visionkit.testing import make_test_image


@pytest.fixture
def tv_images() -> list[np.ndarray]:
    """Two small images of different sizes and aspect ratios (a real-looking batch)."""
    return [make_test_image(120, 150, seed=3), make_test_image(96, 80, seed=4)]


@pytest.fixture
def tv_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty torchvision cache (TORCH_HOME), no VISIONKIT_WEIGHTS, offline: nothing can leak in."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("VISIONKIT_WEIGHTS", raising=False)
    monkeypatch.setenv("VISIONKIT_OFFLINE", "1")
    yield home
