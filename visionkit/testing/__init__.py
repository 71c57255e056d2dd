"""Testing support for visionkit users and plugin authors.

- :mod:`visionkit.testing.fakes`: deterministic numpy-only backends (no weights, no torch, no pytest),
  and the synthetic images (``make_test_image``, ``make_shapes_image``, ``dissimilar_images``).
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
    dissimilar_images,
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
    "dissimilar_images",
    "fake_plugin",
    "make_shapes_image",
    "make_test_image",
    "results_close",
]


def __getattr__(name: str) -> Any:
    # The conformance classes are pytest test classes: import pytest only when one is asked for.
    if name in _CONFORMANCE:
        try:
            module = importlib.import_module("visionkit.testing.conformance")
        except ModuleNotFoundError as exc:
            if exc.name not in ("pytest", "_pytest"):
                raise
            raise ImportError(
                f"visionkit.testing.{name} is a pytest test class, so it needs pytest: `pip install pytest`. "
                "The fakes, make_test_image() and the checks (check_thread_safety ...) work without it."
            ) from exc
        return getattr(module, name)
    raise AttributeError(f"module 'visionkit.testing' has no attribute {name!r}")
