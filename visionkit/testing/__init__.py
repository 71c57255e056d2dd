"""Testing support for visionkit users and plugin authors.

- :mod:`visionkit.testing.fakes`: deterministic numpy-only backends (no weights, no torch).
- Conformance mixins (``DetectorConformance`` ...): subclass with a ``backend`` fixture to check a
  backend honours the contract. Importing them needs pytest.
"""

from __future__ import annotations

from visionkit.testing.conformance import (
    BackendConformance,
    ClassifierConformance,
    DetectorConformance,
    InstanceSegmenterConformance,
    PromptSegmenterConformance,
    SemanticSegmenterConformance,
    make_test_image,
)
from visionkit.testing.fakes import (
    FakeClassifier,
    FakeDetector,
    FakeInstanceSegmenter,
    FakePromptSegmenter,
    FakeSemanticSegmenter,
    fake_plugin,
)

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
    "fake_plugin",
    "make_test_image",
]
