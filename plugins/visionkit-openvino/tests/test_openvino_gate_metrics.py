"""The accuracy gate scores with the core's metrics: one dataset-wide mIoU and COCO mAP, as `visionkit eval`."""

from __future__ import annotations

import numpy as np
import pytest
from visionkit_openvino._gate import _coco_map as coco_map
from visionkit_openvino._gate import mean_iou

from visionkit import Detections, ResultMeta, SemanticMask
from visionkit.evaluation import confusion_matrix, iou_from_confusion

NAMES = ("a", "b")


def _mask(labels: list[int]) -> SemanticMask:
    arr = np.asarray(labels, np.int32).reshape(1, -1)
    return SemanticMask(label_map=arr, class_names=NAMES, metadata=ResultMeta(image_shape=arr.shape))


def test_miou_is_the_dataset_wide_confusion_matrix_one() -> None:
    ref = [_mask([0, 0, 0, 0]), _mask([1, 1, 1, 1])]
    cand = [_mask([0, 0, 0, 0]), _mask([1, 1, 1, 0])]
    # class a: 4 right, 1 false positive -> 4/5; class b: 3 of 4 -> 3/4 (a per-image mean said 0.583)
    assert mean_iou(ref, cand) == (4 / 5 + 3 / 4) / 2
    cm = sum(confusion_matrix(r.label_map, c.label_map, 2) for r, c in zip(ref, cand, strict=True))
    assert mean_iou(ref, cand) == float(np.nanmean(iou_from_confusion(cm)))
    assert mean_iou(ref, ref) == 1.0


def test_coco_map_scores_with_the_core() -> None:
    det = Detections(
        xyxy=np.array([[10, 10, 50, 50]], np.float32),
        confidence=np.array([0.9], np.float32),
        class_id=np.array([0]),
        class_name=("a",),
        metadata=ResultMeta(image_shape=(100, 100)),
    )
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "a"}],
    }
    from visionkit.coco import to_coco_results

    assert coco_map(gt, to_coco_results([det], [1], categories=gt["categories"]), [1]) == pytest.approx(1.0)
    assert coco_map(gt, [], [1]) == 0.0
    assert coco_map({**gt, "annotations": []}, [], [1]) == 0.0
