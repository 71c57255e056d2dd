"""visionkit's conformance kit over every task this plugin offers (random weights, small inputs)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch

import visionkit
from visionkit.testing import (
    ClassifierConformance,
    DetectorConformance,
    InstanceSegmenterConformance,
    SemanticSegmenterConformance,
    make_test_image,
)

SMALL_DETECTION = {
    "min_size": 64,
    "max_size": 96,
    "proposals": 30,
    "detections_per_image": 8,
    "score_threshold": 0.05,
}


@functools.cache
def _load(name: str, **options: Any) -> Any:
    torch.manual_seed(0)
    return visionkit.load(name, weights=None, **options)


@pytest.fixture(scope="module", autouse=True)
def _free_models() -> Any:
    yield
    _load.cache_clear()  # the whole test session shares memory with other plugins' models


class _SameCanvas:
    # torchvision pads a batch to its largest image, which shifts features near the borders, so
    # batched and one-by-one results agree only when the images resize to the same network input
    # (parity tests check batches of different sizes against torchvision's own batched call).
    @pytest.fixture
    def sample_images(self) -> list[np.ndarray]:
        return [make_test_image(96, 128, seed=0), make_test_image(48, 64, seed=1)]


class TestMaskRCNNInstances(_SameCanvas, InstanceSegmenterConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("maskrcnn", **SMALL_DETECTION)


class TestMaskRCNNDetector(_SameCanvas, DetectorConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("maskrcnn", **SMALL_DETECTION)


class TestFasterRCNN(_SameCanvas, DetectorConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("fasterrcnn", **SMALL_DETECTION)


class TestDeepLabV3(SemanticSegmenterConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("deeplabv3", resize_size=64)


class TestResNet50(ClassifierConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("resnet50", resize_size=72, crop_size=64)
