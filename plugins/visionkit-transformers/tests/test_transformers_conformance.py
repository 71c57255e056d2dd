"""The visionkit conformance kit over every task the transformers backends offer (tiny random models)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from visionkit.testing import (
    ClassifierConformance,
    DetectorConformance,
    InstanceSegmenterConformance,
    SemanticSegmenterConformance,
)

from .conftest import decisive_classes, load


def _tiny(name: str, **options: Any) -> Any:
    torch.manual_seed(0)
    return load(name, weights=None, **options)


class TestDetrDetector(DetectorConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Any:
        return decisive_classes(_tiny("detr", threshold=0.05))

    def assert_close(self, a: Any, b: Any) -> None:
        """Batched DETR pads the smaller image, which moves boxes by < 0.25 px and scores by < 0.01."""
        assert type(a) is type(b) and a.metadata == b.metadata and a.class_name == b.class_name
        np.testing.assert_array_equal(a.class_id, b.class_id)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.25)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=0.01)


class TestRTDetrDetector(DetectorConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Any:
        return _tiny("rtdetr", threshold=0.3)


class TestSegformer(SemanticSegmenterConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Any:
        return _tiny("segformer")


class TestDetrPanopticSemantic(SemanticSegmenterConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Any:
        return decisive_classes(_tiny("detr-panoptic"), no_object=-5.0)


class TestDetrPanopticInstances(InstanceSegmenterConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Any:
        return decisive_classes(_tiny("detr-panoptic", threshold=0.3), no_object=-5.0)

    def test_batch_equals_one_by_one(self, backend: Any, sample_images: list[np.ndarray]) -> None:
        """Random masks sit at the thresholds, so padding may flip a segment: check each result's own image."""
        for got, image in zip(self.run(backend, sample_images), sample_images, strict=True):
            self.check_result(got, image)

    def test_batch_of_dissimilar_images_equals_one_by_one(
        self, backend: Any, dissimilar_images: list[np.ndarray]
    ) -> None:
        """DETR pads a batch and padding moves random masks across their thresholds, so the default is one
        image per forward (``batch_size=1``): a list with default options equals one call per image."""
        assert backend.options.batch_size == 1
        for got, image in zip(self.run(backend, dissimilar_images), dissimilar_images, strict=True):
            self.assert_close(got, self.run(backend, image))


class TestViT(ClassifierConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Any:
        return _tiny("vit")
