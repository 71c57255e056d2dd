"""Backends running in ONNX Runtime still honour the task contracts (visionkit.testing)."""

from __future__ import annotations

from typing import Any

import pytest
from visionkit_onnx._runtime import wrap

from visionkit.testing import ClassifierConformance, DetectorConformance


class TestInt8TinyDetectorConformance(DetectorConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
        return wrap(tiny.TinyDetector(), "int8", cache_dir=tmp_path_factory.mktemp("cache"))


class TestDynamicInt8TinyClassifierConformance(ClassifierConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
        return wrap(tiny.TinyTokenClassifier(), "int8", cache_dir=tmp_path_factory.mktemp("cache"))
