"""COCO results export read back by pycocotools, and drawing of every result type."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import visionkit
from visionkit.coco import category_map, from_coco_results, to_coco_results
from visionkit.draw import annotate
from visionkit.testing import (
    FakeClassifier,
    FakeInstanceSegmenter,
    FakePromptSegmenter,
    FakeSemanticSegmenter,
    make_test_image,
)

pycocotools = pytest.importorskip("pycocotools")


def _dataset(tmp_path: Path, result: visionkit.InstanceMasks) -> Path:
    from pycocotools import mask as mask_utils

    h, w = result.image_shape
    anns = []
    for i, (box, m) in enumerate(zip(result.xyxy, result.mask, strict=True)):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        x1, y1, x2, y2 = box.tolist()
        anns.append(
            {
                "id": i + 1,
                "image_id": 7,
                "category_id": 11 + i,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(m.sum()),
                "iscrowd": 0,
                "segmentation": rle,
            }
        )
    cats = [{"id": 11, "name": "red"}, {"id": 12, "name": "green"}, {"id": 13, "name": "blue"}]
    path = tmp_path / "instances.json"
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 7, "height": h, "width": w, "file_name": "x.png"}],
                "annotations": anns,
                "categories": cats,
            }
        )
    )
    return path


def test_coco_results_load_and_score_perfectly(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    inst = FakeInstanceSegmenter().segment_instances(make_test_image())
    assert len(inst) == 3
    # ground truth: the same masks with categories assigned by colour order red, green, blue
    order = np.argsort([["red", "green", "blue"].index(n) for n in inst.class_name])
    gt_path = _dataset(tmp_path, inst[order])
    gt = COCO(str(gt_path))
    records = to_coco_results(inst, 7, categories=gt.loadCats(gt.getCatIds()))
    assert {r["category_id"] for r in records} == {11, 12, 13}
    for iou_type in ("bbox", "segm"):
        ev = COCOeval(gt, gt.loadRes(records), iou_type)
        ev.evaluate(), ev.accumulate(), ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0)
    back = from_coco_results(records, {7: inst.image_shape}, gt.loadCats(gt.getCatIds()))[7]
    assert isinstance(back, visionkit.InstanceMasks)
    assert np.array_equal(back.mask, inst.mask)
    np.testing.assert_allclose(back.xyxy, inst.xyxy, atol=1e-3)


def test_category_mapping_by_name_and_explicit() -> None:
    cats = [{"id": 1, "name": "person"}, {"id": 62, "name": "dining table"}]
    assert category_map(["person", "dining_table", "unicorn"], cats) == {"person": 1, "dining_table": 62}
    with pytest.raises(visionkit.VisionKitError, match="class_to_category"):
        category_map(["unicorn"], cats)
    d = visionkit.Detections(
        xyxy=[[0, 0, 1, 1]], confidence=[0.5], class_id=[0], class_name=("person",), metadata=(4, 4)
    )
    assert to_coco_results(d, 1, class_to_category={0: 99})[0]["category_id"] == 99
    assert to_coco_results(d, 1, categories=cats)[0]["bbox"] == [0.0, 0.0, 1.0, 1.0]


def test_annotate_every_result_type(tmp_path: Path) -> None:
    img = make_test_image()
    results = [
        FakeInstanceSegmenter().segment_instances(img),
        FakeInstanceSegmenter().detect(img),
        FakeSemanticSegmenter().segment_semantic(img),
        FakeClassifier().classify(img),
        FakePromptSegmenter().segment_prompt(img, points=[(20, 20)]),
    ]
    for r in results:
        out = annotate(img, r)
        assert out.size == (img.shape[1], img.shape[0])
        assert not np.array_equal(np.asarray(out), img), f"{type(r).__name__} drew nothing"
    with pytest.raises(ValueError, match="image is"):
        annotate(np.zeros((5, 5, 3), np.uint8), results[0])
    with pytest.raises(TypeError, match="cannot draw"):
        annotate(img, object())
