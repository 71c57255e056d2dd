"""Testing support for visionkit users and plugin authors.

- :mod:`visionkit.testing.fakes`: deterministic numpy-only backends (no weights, no torch, no pytest).
- :mod:`visionkit.testing.checks`: contract checks as plain functions (e.g. ``check_thread_safety``).
- Conformance mixins (``DetectorConformance`` ...): subclass with a ``backend`` fixture to check a
  backend honours the contract. They need pytest, which is imported only when one is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from visionkit.testing.checks import check_thread_safety, results_close
from visionkit.testing.fakes import (
    FakeClassifier,
    FakeDetector,
    FakeInstanceSegmenter,
    FakePromptSegmenter,
    FakeSemanticSegmenter,
    fake_plugin,
    make_shapes_image,
    make_test_image,
)

if TYPE_CHECKING:
    from visionkit.testing.conformance import (
        BackendConformance,
        ClassifierConformance,
        DetectorConformance,
        InstanceSegmenterConformance,
        PromptSegmenterConformance,
        SemanticSegmenterConformance,
    )

_CONFORMANCE = {
    "BackendConformance",
    "ClassifierConformance",
    "DetectorConformance",
    "InstanceSegmenterConformance",
    "PromptSegmenterConformance",
    "SemanticSegmenterConformance",
}

__all__ = [
    "BackendConformance",
    "ClassifierConformance",
    "DetectorConformance",
    "FakeClassifier",
    "FakeDetector",
    "FakeInstanceSegmenter",
    "FakePromptSegmenter",
    "FakeSemanticSegmenter",
    "InstanceSegmenterConformance",
    "PromptSegmenterConformance",
    "SemanticSegmenterConformance",
    "check_thread_safety",
    "fake_plugin",
    "make_shapes_image",
    "make_test_image",
    "results_close",
]


def __getattr__(name: str) -> Any:
    # The conformance classes are pytest test classes: import pytest only when one is asked for.
    if name in _CONFORMANCE:
        return getattr(importlib.import_module("visionkit.testing.conformance"), name)
    raise AttributeError(f"module 'visionkit.testing' has no attribute {name!r}")
