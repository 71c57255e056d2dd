"""The conformance kit run against the numpy fakes shipped in visionkit.testing."""

from __future__ import annotations

from typing import Any

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


class TestFakeDetector(DetectorConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("fake-detector")


class TestFakeInstanceAsDetector(DetectorConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("fake-instance")


class TestFakeInstance(InstanceSegmenterConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("fake-instance")


class TestFakeSemantic(SemanticSegmenterConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("fake-semantic")


class TestFakeClassifier(ClassifierConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("fake-classifier")


class TestFakePrompt(PromptSegmenterConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return _load("fake-prompt")
