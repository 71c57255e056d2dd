"""Real weights: visionkit eval of YOLOv8n on coco-mini == pycocotools on the same detections.

Skipped unless VISIONKIT_WEIGHTS and VISIONKIT_DATA point at the data kit and visionkit-yolo is
installed. Uses a few images so it stays fast on a laptop CPU; the full 100-image run is in
docs/evaluation.md (bbox AP 0.42).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

WEIGHTS = os.environ.get("VISIONKIT_WEIGHTS")
DATA = os.environ.get("VISIONKIT_DATA")
N_IMAGES = 6

pytestmark = [
    pytest.mark.real_weights,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (WEIGHTS and DATA), reason="set VISIONKIT_WEIGHTS and VISIONKIT_DATA to the data kit"
    ),
]


@pytest.fixture(scope="module")
def kit() -> tuple[Path, Path, Path]:
    pytest.importorskip(
        "visionkit_yolo", reason="needs the visionkit-yolo plugin (pip install visionkit-yolo)"
    )
    pytest.importorskip("pycocotools", reason="needs pycocotools")
    weights = Path(WEIGHTS or "") / "yolov8n-dq.pt"
    ann = Path(DATA or "") / "coco-mini" / "instances.json"
    if not weights.is_file() or not ann.is_file():
        pytest.skip(f"data kit incomplete: need {weights} and {ann}")
    return weights, ann, ann.parent / "images"


def test_yolov8n_coco_mini_map_equals_pycocotools(kit: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from ultralytics import YOLO
    from ultralytics.data.converter import coco80_to_coco91_class

    from visionkit.evaluation import evaluate

    weights, ann, images = kit
    results = tmp_path / "results.json"
    report = evaluate("yolo", coco=ann, images=images, weights=weights, limit=N_IMAGES, results_path=results)
    assert report.num_images == N_IMAGES
    assert report.settings.backend_options == {"conf": 0.001, "max_det": 100}

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
    ids = sorted(gt.getImgIds())[:N_IMAGES]

    def cocoeval(records: list[dict[str, object]]) -> list[float]:
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(records), "bbox")
            ev.params.imgIds = ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return [float(s) for s in ev.stats]

    # 1. pycocotools on visionkit's exported detections gives exactly the report's numbers.
    assert report.bbox.stats() == cocoeval(json.loads(results.read_text()))
    assert report.bbox.ap is not None and report.bbox.ap > 0.2

    # 2. Ultralytics run directly (its own pre/post-processing and the official 80→91 id table) agrees,
    #    which checks the label-space mapping by name on a real 80-class model.
    model = YOLO(str(weights))
    to91 = coco80_to_coco91_class()
    records = []
    for image_id in ids:
        res = model.predict(
            str(images / gt.imgs[image_id]["file_name"]), conf=0.001, max_det=100, verbose=False
        )[0]
        for (x1, y1, x2, y2), score, cls in zip(
            res.boxes.xyxy.tolist(), res.boxes.conf.tolist(), res.boxes.cls.tolist(), strict=True
        ):
            records.append(
                {
                    "image_id": image_id,
                    "category_id": to91[int(cls)],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    direct = cocoeval(records)
    assert report.bbox.ap == pytest.approx(direct[0], abs=0.01)
    assert report.bbox.ap50 == pytest.approx(direct[1], abs=0.01)
