"""``visionkit_sam.pipeline``: any Detector + any PromptSegmenter = an InstanceSegmenter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from visionkit_sam import pipeline

import visionkit
from visionkit import InstanceMasks, InstanceSegmenter, TaskNotSupportedError, UnknownBackendError
from visionkit.testing import FakeDetector, FakePromptSegmenter, make_test_image


def _inside_boxes(res: InstanceMasks) -> bool:
    for (x1, y1, x2, y2), m in zip(res.xyxy, res.mask, strict=True):
        ys, xs = np.nonzero(m)
        if len(xs) and (
            xs.min() + 0.5 < x1 or xs.max() + 0.5 > x2 or ys.min() + 0.5 < y1 or ys.max() + 0.5 > y2
        ):
            return False
    return True


def test_fakes_compose(image: np.ndarray) -> None:
    det = FakeDetector()
    grounded = pipeline(det, FakePromptSegmenter())
    assert isinstance(grounded, InstanceSegmenter) and isinstance(grounded, visionkit.Detector)
    res = grounded.segment_instances(image)
    dets = det.detect(image)
    assert len(res) == len(dets) == 3
    np.testing.assert_array_equal(res.xyxy, dets.xyxy)
    assert res.class_name == dets.class_name and res.metadata.backend == "fake-detector+fake-prompt"
    # The fake segmenter follows colour: each mask is the colour region its box was drawn around.
    for m, cls, (x1, y1, x2, y2) in zip(res.mask, res.class_name, res.xyxy.astype(int), strict=True):
        assert m[(y1 + y2) // 2, (x1 + x2) // 2], cls
    assert _inside_boxes(res)
    assert grounded.detect(image) == dets


def test_with_tiny_sam_one_mask_per_detection(tiny_sam: Any, image: np.ndarray) -> None:
    grounded = pipeline(FakeDetector(), tiny_sam)
    res = grounded.segment_instances(image)
    direct = tiny_sam.segment_prompt(image, boxes=FakeDetector().detect(image).xyxy)
    assert len(res) == len(direct) == 3
    np.testing.assert_array_equal(res.data["mask_score"], direct.score)
    assert _inside_boxes(res)
    unclipped = pipeline(FakeDetector(), tiny_sam, clip_to_boxes=False).segment_instances(image)
    np.testing.assert_array_equal(unclipped.mask, direct.mask)


def test_no_detections_gives_empty_masks(tiny_sam: Any) -> None:
    blank = np.full((40, 50, 3), 90, np.uint8)
    res = pipeline(FakeDetector(), tiny_sam).segment_instances(blank)
    assert len(res) == 0 and res.mask.shape == (0, 40, 50)


def test_options_go_to_the_detector(image: np.ndarray) -> None:
    grounded = pipeline(FakeDetector(), FakePromptSegmenter())
    assert len(grounded.segment_instances(image, min_pixels=10**6)) == 0  # detector option, applied
    with pytest.raises(visionkit.InvalidOptionError, match="not_an_option"):
        grounded.segment_instances(image, not_an_option=1)


def test_list_in_list_out(image: np.ndarray) -> None:
    grounded = pipeline(FakeDetector(), FakePromptSegmenter())
    out = grounded.segment_instances([image, make_test_image(80, 64, seed=1)])
    assert isinstance(out, list) and [r.image_shape for r in out] == [(96, 128), (80, 64)]


def test_arguments_must_implement_the_protocols(tiny_sam: Any) -> None:
    with pytest.raises(
        TaskNotSupportedError, match="'sam' does not do task 'detect'; it supports: segment_prompt"
    ):
        pipeline(tiny_sam, tiny_sam)
    with pytest.raises(TaskNotSupportedError, match="does not do task 'segment_prompt'"):
        pipeline(FakeDetector(), FakeDetector())
    with pytest.raises(
        TaskNotSupportedError, match=r"'str' does not do task 'detect'.*\(none: it is a str\)"
    ):
        pipeline("yolo", tiny_sam)


class _UltralyticsDetector:
    """A minimal third-party Detector over ultralytics.YOLO, used when the visionkit-yolo plugin is absent:
    the pipeline must work with any object implementing the protocol, not only visionkit backends."""

    name = "ultralytics-yolo"
    tasks = (visionkit.Task.DETECT,)

    def __init__(self, path: str) -> None:
        from ultralytics import YOLO

        self.model = YOLO(path)

    def detect(self, images: Any, **options: Any) -> Any:
        image = visionkit.load_image(images)
        r = self.model.predict(image[..., ::-1], verbose=False, **options)[0]  # ultralytics wants BGR arrays
        ids = r.boxes.cls.numpy().astype(np.int64)
        return visionkit.Detections(
            xyxy=r.boxes.xyxy.numpy().astype(np.float32),
            confidence=r.boxes.conf.numpy().astype(np.float32),
            class_id=ids,
            class_name=tuple(r.names[int(i)] for i in ids),
            metadata={"image_shape": image.shape[:2], "backend": self.name},
        )


@pytest.mark.real_weights
def test_real_yolo_then_sam_on_coco_mini(tiny_sam: Any) -> None:
    """yolov8n-dq.pt, then SAM on coco-mini: one mask per detection, each inside its box.

    Uses visionkit's ``yolo`` backend when installed, else a plain ultralytics adapter. (No real SAM
    weights exist here, so the masks come from the tiny random SAM; the contract is what is checked.)
    """
    weights, data = os.environ.get("VISIONKIT_WEIGHTS"), os.environ.get("VISIONKIT_DATA")
    if not weights or not data:
        pytest.skip("VISIONKIT_WEIGHTS and VISIONKIT_DATA must be set for real-weight tests")
    images = sorted(Path(data, "coco-mini", "images").glob("*.jpg"))[:2]
    if not images:
        pytest.skip(f"no coco-mini images under {data}")
    try:
        yolo: Any = visionkit.load("yolo", weights="yolov8n-dq.pt")
    except UnknownBackendError:
        yolo = _UltralyticsDetector(str(Path(weights, "yolov8n-dq.pt")))
    grounded = pipeline(yolo, tiny_sam)
    total = 0
    for path in images:
        dets = yolo.detect(str(path))
        res = grounded.segment_instances(str(path))
        assert len(res) == len(dets) and res.mask.shape[1:] == res.image_shape
        np.testing.assert_array_equal(res.xyxy, dets.xyxy)
        assert _inside_boxes(res)
        total += len(res)
    assert total > 0, "yolov8n found nothing on two COCO images"
