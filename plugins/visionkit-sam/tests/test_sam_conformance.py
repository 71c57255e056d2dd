"""visionkit's conformance kit over the SAM backends (tiny random weights) and the pipeline."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from visionkit_sam import pipeline

import visionkit
from visionkit.testing import (
    FakeDetector,
    FakePromptSegmenter,
    InstanceSegmenterConformance,
    PromptSegmenterConformance,
)


def _load(name: str, **options: Any) -> Any:
    torch.manual_seed(0)
    return visionkit.load(name, weights=None, **options)


@pytest.fixture(scope="module")
def sam() -> Any:
    return _load("sam")


@pytest.fixture(scope="module")
def mobile_sam() -> Any:
    return _load("mobile-sam")


@pytest.fixture(scope="module")
def sam_auto() -> Any:
    return _load("sam-auto", points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


class TestSamConformance(PromptSegmenterConformance):
    @pytest.fixture
    def backend(self, sam: Any) -> Any:
        return sam


class TestMobileSamConformance(PromptSegmenterConformance):
    @pytest.fixture
    def backend(self, mobile_sam: Any) -> Any:
        return mobile_sam


class TestSamAutoConformance(InstanceSegmenterConformance):
    @pytest.fixture
    def backend(self, sam_auto: Any) -> Any:
        return sam_auto


class TestFakeDetectorThenSamConformance(InstanceSegmenterConformance):
    @pytest.fixture
    def backend(self, sam: Any) -> Any:
        return pipeline(FakeDetector(), sam)


class TestFakesPipelineConformance(InstanceSegmenterConformance):
    @pytest.fixture
    def backend(self) -> Any:
        return pipeline(FakeDetector(), FakePromptSegmenter())
