"""Real weights: visionkit.sliced around YOLOv8n (yolov8n-dq.pt) through visionkit.evaluate on coco-mini.

Skipped unless VISIONKIT_WEIGHTS and VISIONKIT_DATA point at the data kit. Three images keep it short;
the 100-image AP / AP_S table is in docs/interop.md (``benchmarks/sliced_coco.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

WEIGHTS = os.environ.get("VISIONKIT_WEIGHTS")
DATA = os.environ.get("VISIONKIT_DATA")

pytestmark = [
    pytest.mark.real_weights,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (WEIGHTS and DATA), reason="set VISIONKIT_WEIGHTS and VISIONKIT_DATA to the data kit"
    ),
]


def test_sliced_yolo_end_to_end_on_coco_mini() -> None:
    pytest.importorskip("visionkit_yolo", reason="needs the visionkit-yolo plugin")
    pytest.importorskip("pycocotools", reason="needs pycocotools")
    pytest.importorskip("supervision", reason="sliced inference merges with supervision")
    import visionkit
    from visionkit.images import load_image

    weights = Path(WEIGHTS or "") / "yolov8n-dq.pt"
    ann = Path(DATA or "") / "coco-mini" / "instances.json"
    if not weights.is_file() or not ann.is_file():
        pytest.skip(f"data kit incomplete: need {weights} and {ann}")
    yolo = visionkit.load("yolo", weights=weights)
    tiles = visionkit.sliced(yolo, tile=320, overlap=0.2, full_image=True)
    report = visionkit.evaluate(tiles, coco=ann, images=ann.parent / "images", limit=3)
    assert report.backend == "yolo+sliced" and report.num_images == 3
    assert report.settings.backend_options == {"conf": 0.001, "max_det": 100}
    assert report.bbox.ap is not None and report.bbox.ap > 0.2  # plain YOLOv8n scores 0.44 on these 3

    # one image by hand: the crops went to YOLO in one call, and every box lies inside the image
    path = sorted((ann.parent / "images").iterdir())[0]
    img = load_image(path)
    dets = tiles.detect(img)
    h, w = img.shape[:2]
    assert dets.image_shape == (h, w) and dets.metadata.tiles == len(tiles.tiles(h, w)) >= 2
    assert len(dets) and np.all(dets.xyxy >= 0) and np.all(dets.xyxy[:, [0, 2]] <= w + 1e-3)
    assert np.all(dets.xyxy[:, [1, 3]] <= h + 1e-3)
    plain = yolo.detect(img)
    # the confident objects of the plain run are found again after slicing and merging
    strong = plain[plain.confidence > 0.5]
    for box, name in zip(strong.xyxy, strong.class_name, strict=True):
        same = dets[np.array(dets.class_name) == name]
        x1 = np.maximum(same.xyxy[:, 0], box[0])
        y1 = np.maximum(same.xyxy[:, 1], box[1])
        x2 = np.minimum(same.xyxy[:, 2], box[2])
        y2 = np.minimum(same.xyxy[:, 3], box[3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        iou = inter / ((box[2] - box[0]) * (box[3] - box[1]) + same.area - inter)
        assert iou.max() > 0.5, (name, box)  # found again at the COCO match threshold
