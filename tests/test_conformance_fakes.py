"""The conformance kit run against the numpy fakes shipped in visionkit.testing."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

import visionkit
from visionkit.registry import Registry
from visionkit.testing import (
    ClassifierConformance,
    DetectorConformance,
    InstanceSegmenterConformance,
    PromptSegmenterConformance,
    SemanticSegmenterConformance,
    fake_plugin,
)

REGISTRY = Registry(entry_points=[], plugins=[fake_plugin()])


def _load(name: str) -> Any:
    return visionkit.load(name, registry=REGISTRY)


def red_probe() -> tuple[np.ndarray, str]:
    """Grey with a red square: a fake that reads BGR sees blue."""
    image = np.full((48, 64, 3), 90, np.uint8)
    image[10:30, 20:44] = (230, 20, 20)
    return image, "red"


class _Probe:
    @pytest.fixture
    def color_probe(self) -> tuple[np.ndarray, str]:
        return red_probe()


class TestFakeDetector(_Probe, DetectorConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("fake-detector")


class TestFakeInstanceAsDetector(_Probe, DetectorConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("fake-instance")


class TestFakeInstance(_Probe, InstanceSegmenterConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("fake-instance")


class TestFakeSemantic(_Probe, SemanticSegmenterConformance):
    option_overrides: ClassVar[tuple[dict[str, Any], ...]] = ({"margin": 250},)

    @pytest.fixture
    def backend(self) -> Any:
        return _load("fake-semantic")


class TestFakeClassifier(_Probe, ClassifierConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("fake-classifier")


class TestFakePrompt(PromptSegmenterConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("fake-prompt")
