"""``sam-auto``: visionkit's InstanceMasks equal SamAutomaticMaskGenerator's records on the same model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator

from visionkit import InstanceMasks

OPTS = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def auto(load_seeded: Any) -> Any:
    return load_seeded("sam-auto", **OPTS)


@pytest.fixture(scope="module", name="load_seeded")
def _load_seeded_module() -> Any:
    import visionkit

    def load(name: str, seed: int = 0, **options: Any) -> Any:
        torch.manual_seed(seed)
        return visionkit.load(name, weights=None, **options)

    return load


def test_matches_automatic_mask_generator(auto: Any, image: np.ndarray) -> None:
    generator = SamAutomaticMaskGenerator(auto.model, **OPTS)
    with torch.inference_mode():
        records = sorted(generator.generate(image), key=lambda r: -r["predicted_iou"])
    res = auto.segment_instances(image)
    assert isinstance(res, InstanceMasks) and len(res) == len(records) > 0
    for i, r in enumerate(records):
        np.testing.assert_array_equal(res.mask[i], r["segmentation"])
        x, y, w, h = r["bbox"]
        np.testing.assert_allclose(res.xyxy[i], [x, y, x + w + 1, y + h + 1])
    np.testing.assert_allclose(res.data["predicted_iou"], [r["predicted_iou"] for r in records], atol=1e-6)
    np.testing.assert_allclose(
        res.data["stability_score"], [r["stability_score"] for r in records], atol=1e-6
    )
    assert set(res.class_name) == {"object"} and np.all((res.confidence >= 0) & (res.confidence <= 1))


def test_thresholds_filter(auto: Any, image: np.ndarray) -> None:
    everything = auto.segment_instances(image)
    strict = auto.segment_instances(image, stability_score_thresh=1.0, pred_iou_thresh=10.0)
    assert len(strict) == 0 < len(everything)
    assert strict.mask.shape == (0, 96, 128)
    denser = auto.segment_instances(image, points_per_side=6, box_nms_thresh=1.0)
    assert len(denser) >= len(everything)


def test_min_area_option(auto: Any, image: np.ndarray) -> None:
    big = auto.segment_instances(image, min_mask_region_area=10_000)
    assert isinstance(big, InstanceMasks)
