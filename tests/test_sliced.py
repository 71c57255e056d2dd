"""visionkit.sliced on fakes: tiling geometry, one batched backend call, coordinates back, merging, eval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import visionkit
from visionkit import InvalidOptionError, LimitExceededError, TaskNotSupportedError
from visionkit.protocols import Task
from visionkit.results import Detections
from visionkit.sliced import SlicedDetector, SlicedInstanceSegmenter, slice_boxes, sliced
from visionkit.testing.fakes import FakeClassifier, FakeDetector, FakeInstanceSegmenter

pytest.importorskip("supervision", reason="sliced inference merges with supervision (visionkit[supervision])")

RED, GREEN, BLUE = (230, 20, 20), (20, 220, 20), (20, 20, 230)


def _scene() -> np.ndarray:
    """200 x 300: a red square inside one tile, a green one in the overlap of four, a blue bar wider than a tile."""
    img = np.full((200, 300, 3), 90, np.uint8)
    img[20:50, 20:50] = RED
    img[85:95, 85:95] = GREEN
    img[120:190, 150:290] = BLUE
    return img


class AreaScored:
    """A Detector test double: the fake's colour boxes, scored by visible area, so a whole object outranks
    the cut-off parts of it that tiles see. Records every call's batch size."""

    name = "area-scored"
    tasks = (Task.DETECT,)

    def __init__(self) -> None:
        self.inner = FakeDetector()
        self.calls: list[int] = []

    @property
    def options(self) -> Any:
        return self.inner.options

    def detect(self, images: Any, **options: Any) -> Any:
        self.calls.append(len(images) if isinstance(images, list) else 1)
        out = self.inner.detect(images, **options)
        results = out if isinstance(out, list) else [out]
        scored = [
            r.model_copy(update={"confidence": np.minimum(1.0, r.area / 2e4).astype(np.float32)})
            for r in results
        ]
        return scored if isinstance(out, list) else scored[0]


def test_slice_boxes_cover_the_image_with_full_size_tiles() -> None:
    boxes = slice_boxes(480, 640, 320, 0.2)
    assert sorted({int(x) for x in boxes[:, 0]}) == [0, 256, 320]  # last column flush with the edge
    assert sorted({int(y) for y in boxes[:, 1]}) == [0, 160]
    assert (
        len(boxes) == 6
        and np.all(boxes[:, 2] - boxes[:, 0] == 320)
        and np.all(boxes[:, 3] - boxes[:, 1] == 320)
    )
    covered = np.zeros((480, 640), bool)
    for x1, y1, x2, y2 in boxes:
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    assert slice_boxes(100, 150, 640).tolist() == [[0, 0, 150, 100]]  # smaller than a tile: itself
    assert slice_boxes(100, 700, (100, 640), 0.0).tolist() == [[0, 0, 640, 100], [60, 0, 700, 100]]
    with pytest.raises(InvalidOptionError, match=r"overlap must be in \[0, 1\)"):
        slice_boxes(10, 10, 5, 1.0)
    with pytest.raises(InvalidOptionError, match="tile must be a positive int"):
        slice_boxes(10, 10, 0)


def test_all_tiles_go_to_the_backend_in_one_call_and_map_back() -> None:
    spy = AreaScored()
    tiles = sliced(spy, tile=100, overlap=0.2)
    assert isinstance(tiles, SlicedDetector) and not isinstance(tiles, SlicedInstanceSegmenter)
    assert isinstance(tiles, visionkit.Detector) and not isinstance(tiles, visionkit.InstanceSegmenter)
    img = _scene()
    out = tiles.detect([img, img[:100, :150]])
    assert spy.calls == [12 + 2]  # 12 tiles of the big image + 2 of the small one, one backend call
    big, small = out
    assert big.image_shape == (200, 300) and small.image_shape == (100, 150)
    assert big.metadata.backend == "area-scored+sliced" and big.metadata.tiles == 12
    by_class = {name: big.xyxy[big.class_id == i] for i, name in enumerate(("red", "green", "blue"))}
    # red lies inside one tile; green is seen whole by four overlapping tiles: NMS keeps one of each
    assert by_class["red"].tolist() == [[20, 20, 50, 50]]
    assert by_class["green"].tolist() == [[85, 85, 95, 95]]
    # the blue bar is wider than a tile: without the whole image, only pieces of it are found
    assert len(by_class["blue"]) > 1 and all((b[2] - b[0]) <= 100 for b in by_class["blue"])
    assert np.all(np.diff(big.confidence) <= 0)  # most confident first
    assert tiles.last_timing["merge"] >= 0 and tiles.last_timing["forward"] >= 0
    assert tiles.detect([]) == []


def test_full_image_pass_with_nmm_ios_recovers_large_objects() -> None:
    spy = AreaScored()
    tiles = sliced(spy, tile=100, overlap=0.2, full_image=True, merge="nmm", match_metric="ios")
    dets = tiles.detect(_scene())
    assert spy.calls == [13]  # the whole image rides in the same call
    assert dets.metadata.tiles == 12 and dets.metadata.full_image is True
    whole = FakeDetector().detect(_scene())
    assert sorted(map(tuple, dets.xyxy.tolist())) == sorted(map(tuple, whole.xyxy.tolist()))
    assert dets.class_name.count("blue") == 1


def test_per_call_options_reach_every_tile() -> None:
    tiles = sliced(FakeDetector(), tile=100, overlap=0.2)
    img = _scene()
    img[150:160, 30:40] = (150, 60, 60)  # a dull red patch the default margin (60) still counts
    assert "red" in tiles.detect(img, margin=60).class_name
    only_strong = tiles.detect(img, margin=100)
    assert only_strong.xyxy[np.array(only_strong.class_name) == "red"].tolist() == [[20, 20, 50, 50]]


def test_instance_masks_are_pasted_back_at_the_right_place() -> None:
    inner = FakeInstanceSegmenter()
    tiles = sliced(inner, tile=100, overlap=0.2)
    assert isinstance(tiles, SlicedInstanceSegmenter) and isinstance(tiles, visionkit.InstanceSegmenter)
    img = _scene()
    img[120:190, 150:290] = 90  # no object wider than a tile
    got = tiles.segment_instances(img)
    want = inner.segment_instances(img)
    assert got.image_shape == want.image_shape and got.mask.shape == (len(got), 200, 300)
    for name in ("red", "green"):
        g, w = got.class_name.index(name), want.class_name.index(name)
        assert np.array_equal(got.mask[g], want.mask[w])
        assert got.xyxy[g].tolist() == want.xyxy[w].tolist()
    assert isinstance(tiles.detect(img), Detections)


def test_argument_errors() -> None:
    with pytest.raises(TaskNotSupportedError, match="does not do task 'detect'"):
        sliced(FakeClassifier())
    with pytest.raises(InvalidOptionError, match="merge must be one of nms, nmm"):
        sliced(FakeDetector(), merge="wbf")
    with pytest.raises(InvalidOptionError, match="match_metric must be one of iou, ios"):
        sliced(FakeDetector(), match_metric="giou")
    with pytest.raises(InvalidOptionError, match=r"iou must be in \(0, 1\]"):
        sliced(FakeDetector(), iou=0)
    with pytest.raises(LimitExceededError, match="max_tiles=12 exceeds the limit of 4") as info:
        sliced(FakeDetector(), tile=100, max_tiles=4).detect(_scene())
    assert info.value.limit == "max_tiles" and info.value.maximum == 4


def test_batch_size_splits_the_backend_calls() -> None:
    spy = AreaScored()
    one_call = sliced(spy, tile=100, overlap=0.2).detect(_scene())
    spy.calls.clear()
    split = sliced(spy, tile=100, overlap=0.2, batch_size=5).detect(_scene())
    assert spy.calls == [5, 5, 2]
    assert split == one_call


def test_evaluate_runs_a_sliced_detector(tmp_path: Path) -> None:
    pytest.importorskip("pycocotools", reason="COCO mAP needs pycocotools")
    (tmp_path / "images").mkdir()
    images, anns = [], []
    for i in range(3):
        img = _scene()
        Image.fromarray(img).save(tmp_path / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 200, "width": 300})
        for cat, (x, y, w, h) in ((1, (20, 20, 30, 30)), (2, (85, 85, 10, 10)), (3, (150, 120, 140, 70))):
            box = {"bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, **box})
    cats = [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}, {"id": 3, "name": "blue"}]
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    base = visionkit.evaluate(FakeDetector(), coco=ann, images=tmp_path / "images")
    cut = visionkit.evaluate(sliced(FakeDetector(), tile=100), coco=ann, images=tmp_path / "images")
    full = visionkit.evaluate(
        sliced(AreaScored(), tile=100, full_image=True, merge="nmm", match_metric="ios"),
        coco=ann,
        images=tmp_path / "images",
    )
    assert base.bbox.ap == pytest.approx(1.0) and full.bbox.ap == pytest.approx(1.0)
    assert cut.backend == "fake-detector+sliced"
    assert cut.settings.backend_options == {"conf": 0.001}  # COCO practice reaches the wrapped backend
    assert cut.bbox.ap_small == pytest.approx(1.0)  # the small objects survive slicing ...
    assert cut.bbox.ap_large is not None and cut.bbox.ap_large < 0.6  # ... the bar is cut into pieces
    assert cut.bbox.ap is not None and base.bbox.ap is not None and cut.bbox.ap < base.bbox.ap
