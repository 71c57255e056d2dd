"""COCO mAP through visionkit.evaluate: same numbers as pycocotools by hand, label spaces, COCO practice."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip(
    "pycocotools", reason="COCO evaluation needs pycocotools (pip install 'visionkit-core[coco]')"
)
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visionkit import Backend, BackendOptions, Batch, Detections, Detects, Task
from visionkit.errors import InvalidOptionError, TaskNotSupportedError, VisionKitError
from visionkit.evaluation import DetectionReport, evaluate
from visionkit.registry import Registry
from visionkit.testing.fakes import FakeDetector, FakeInstanceSegmenter, fake_plugin

REGISTRY = Registry(entry_points=[], plugins=[fake_plugin()])
RGB = {"red": (220, 30, 30), "green": (30, 210, 40), "blue": (20, 40, 230)}


def make_coco(
    root: Path, categories: list[dict[str, Any]], paint: dict[int, tuple[int, int, int]], n: int = 8
) -> Path:
    """Images with coloured rectangles and COCO annotations for them, written under ``root``.

    Ground truth is made imperfect on purpose (shifted boxes, a missed category, two same-colour
    objects merged by the fake detector) so AP, AP50 and AP75 all differ and are below 1.
    """
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        h, w = 72, 96
        img = rng.integers(70, 110, size=(h, w, 3), dtype=np.uint8)
        for cat_id, colour in paint.items():
            copies = 2 if (i % 4 == 0 and cat_id == min(paint)) else 1
            for _ in range(copies):
                x, y = int(rng.integers(0, w - 30)), int(rng.integers(0, h - 30))
                bw, bh = int(rng.integers(6, 30)), int(rng.integers(6, 30))
                img[y : y + bh, x : x + bw] = colour
                dx = int(rng.integers(0, 5))  # imperfect ground truth: localisation matters for AP75
                box = [x + dx, y, bw, bh]
                poly = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": i + 1,
                        "category_id": cat_id,
                        "bbox": box,
                        "area": bw * bh,
                        "iscrowd": 0,
                        "segmentation": [poly],
                    }
                )
        unpainted = [c["id"] for c in categories if c["id"] not in paint]
        if unpainted and i % 3 == 0:  # an object the model cannot find: recall below 1
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": unpainted[0],
                    "bbox": [2, 2, 20, 20],
                    "area": 400,
                    "iscrowd": 0,
                    "segmentation": [[2, 2, 22, 2, 22, 22, 2, 22]],
                }
            )
        Image.fromarray(img).save(root / "images" / f"{i:04d}.png")
        images.append({"id": i + 1, "file_name": f"{i:04d}.png", "height": h, "width": w})
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path


# Non-contiguous ids, as in COCO: a model's 0/1/2 ids are NOT these category ids.
COLOUR_CATS = [
    {"id": 1, "name": "red"},
    {"id": 5, "name": "green"},
    {"id": 9, "name": "blue"},
    {"id": 12, "name": "person"},
]


@pytest.fixture
def colour_coco(tmp_path: Path) -> Path:
    return make_coco(tmp_path, COLOUR_CATS, {1: RGB["red"], 5: RGB["green"], 9: RGB["blue"]})


def cocoeval_by_hand(ann_file: Path, records: list[dict[str, Any]], iou_type: str = "bbox") -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(records), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats]


def test_bbox_numbers_equal_pycocotools_run_by_hand(colour_coco: Path) -> None:
    report = evaluate(
        "fake-detector", coco=colour_coco, images=colour_coco.parent / "images", registry=REGISTRY
    )
    assert isinstance(report, DetectionReport)

    # By hand: the same backend, the same threshold, our own export, pycocotools' own summary.
    det = FakeDetector(conf=0.001)
    data = json.loads(colour_coco.read_text())
    cat_of = {c["name"]: c["id"] for c in data["categories"]}
    records = []
    for im in data["images"]:
        for d in det.detect(str(colour_coco.parent / "images" / im["file_name"])):
            x1, y1, x2, y2 = d.xyxy
            records.append(
                {
                    "image_id": im["id"],
                    "category_id": cat_of[d.class_name],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": d.confidence,
                }
            )
    expected = cocoeval_by_hand(colour_coco, records)
    assert report.bbox.stats() == pytest.approx(expected, abs=1e-12)
    assert report.segm is None
    assert 0.0 < report.bbox.ap < report.bbox.ap50 <= 1.0  # a non-trivial dataset
    assert report.bbox.ap75 is not None and report.bbox.ap75 < report.bbox.ap50
    assert report.bbox.per_class["person"] is not None and report.bbox.per_class["person"] == 0.0
    assert set(report.bbox.per_class) == {"red", "green", "blue", "person"}
    assert report.num_images == 8 and report.num_detections == len(records)
    assert report.class_mapping == {"red": 1, "green": 5, "blue": 9}


def test_results_file_rescored_by_hand_gives_the_report(tmp_path: Path, colour_coco: Path) -> None:
    out = tmp_path / "results.json"
    report = evaluate(
        "fake-instance",
        coco=colour_coco,
        images=colour_coco.parent / "images",
        registry=REGISTRY,
        results_path=out,
    )
    records = json.loads(out.read_text())
    assert all("segmentation" in r for r in records)
    assert report.segm is not None and report.settings.iou_types == ["bbox", "segm"]
    assert report.bbox.stats() == cocoeval_by_hand(colour_coco, records, "bbox")
    assert report.segm.stats() == cocoeval_by_hand(colour_coco, records, "segm")
    assert report.segm.ap != report.bbox.ap
    assert "Average Precision" in report.segm.summary


def test_segm_can_be_turned_off_and_is_refused_for_plain_detectors(colour_coco: Path) -> None:
    images = colour_coco.parent / "images"
    report = evaluate("fake-instance", coco=colour_coco, images=images, registry=REGISTRY, segm=False)
    assert report.segm is None
    with pytest.raises(TaskNotSupportedError, match="segment_instances"):
        evaluate("fake-detector", coco=colour_coco, images=images, registry=REGISTRY, segm=True)


# -- label spaces ----------------------------------------------------------------------------------
# COCO ids of three real classes; the YOLO (contiguous 0-79) and DETR (91-id) indices of the same classes.
REAL_CATS = [
    {"id": 1, "name": "person"},
    {"id": 2, "name": "bicycle"},
    {"id": 3, "name": "car"},
    {"id": 18, "name": "dog"},
]
AS_COCO_NAME = {"red": "person", "green": "car", "blue": "dog"}
YOLO_IDS = {"person": 0, "car": 2, "dog": 16}
DETR_IDS = {"person": 1, "car": 3, "dog": 18}


class _Relabelled(FakeDetector):
    """The fake detector speaking a real model's label space."""

    ids: dict[str, int] = {}

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        out = []
        for d in super().postprocess(outputs, batch, task):
            names = tuple(AS_COCO_NAME[n] for n in d.class_name)
            out.append(
                Detections(
                    xyxy=d.xyxy,
                    confidence=d.confidence,
                    class_name=names,
                    class_id=np.array([self.ids[n] for n in names], np.int64),
                    metadata=d.metadata,
                )
            )
        return out


class YoloStyle(_Relabelled):
    ids = YOLO_IDS


class DetrStyle(_Relabelled):
    ids = DETR_IDS


@pytest.fixture
def real_coco(tmp_path: Path) -> Path:
    return make_coco(tmp_path, REAL_CATS, {1: RGB["red"], 3: RGB["green"], 18: RGB["blue"]})


def test_yolo_and_detr_label_spaces_score_the_same(real_coco: Path) -> None:
    images = real_coco.parent / "images"
    yolo = evaluate(YoloStyle(), coco=real_coco, images=images)
    detr = evaluate(DetrStyle(), coco=real_coco, images=images)
    assert yolo.bbox.stats() == detr.bbox.stats()
    assert yolo.bbox.ap is not None and yolo.bbox.ap > 0.2
    assert yolo.class_mapping == detr.class_mapping == {"person": 1, "car": 3, "dog": 18}

    # Control: taking YOLO's class ids as category ids (the classic bug) scores differently.
    data = json.loads(real_coco.read_text())
    naive = []
    for im in data["images"]:
        for d in YoloStyle(conf=0.001).detect(str(images / im["file_name"])):
            x1, y1, x2, y2 = d.xyxy
            naive.append(
                {
                    "image_id": im["id"],
                    "category_id": d.class_id,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": d.confidence,
                }
            )
    assert cocoeval_by_hand(real_coco, naive)[0] < yolo.bbox.ap - 0.1


def test_explicit_class_to_category_mapping(real_coco: Path) -> None:
    images = real_coco.parent / "images"
    by_id = evaluate(YoloStyle(), coco=real_coco, images=images, class_to_category={0: 1, 2: 3, 16: 18})
    by_name = evaluate(YoloStyle(), coco=real_coco, images=images)
    assert by_id.bbox.stats() == by_name.bbox.stats()


def test_model_classes_outside_the_dataset_are_dropped_and_listed(tmp_path: Path) -> None:
    cats = [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]
    ann = make_coco(tmp_path, cats, {1: RGB["red"], 2: RGB["green"]})
    img = np.asarray(Image.open(tmp_path / "images" / "0000.png")).copy()
    img[60:70, 80:95] = RGB["blue"]  # a blue object the dataset has no category for
    Image.fromarray(img).save(tmp_path / "images" / "0000.png")
    report = evaluate("fake-detector", coco=ann, images=tmp_path / "images", registry=REGISTRY)
    assert report.unmatched_classes == ["blue"]
    assert "blue" not in report.class_mapping
    assert "dropped classes not in the dataset: blue" in report.table()


def test_no_class_name_matching_the_dataset_is_an_error(tmp_path: Path) -> None:
    ann = make_coco(tmp_path, [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}], {1: RGB["red"]})
    with pytest.raises(
        VisionKitError, match=r"None of the model's class names .* match the dataset's categories"
    ):
        evaluate("fake-detector", coco=ann, images=tmp_path / "images", registry=REGISTRY)


# -- COCO practice -----------------------------------------------------------------------------------
def test_coco_practice_options_are_applied_and_reported(colour_coco: Path) -> None:
    report = evaluate(
        "fake-detector", coco=colour_coco, images=colour_coco.parent / "images", registry=REGISTRY
    )
    assert report.settings.score_threshold == 0.001 and report.settings.max_dets == 100
    assert report.settings.backend_options == {"conf": 0.001}
    assert report.notes == []
    assert "score threshold 0.001, max 100 detections/image" in report.table()


def test_user_options_win_over_coco_practice(colour_coco: Path) -> None:
    images = colour_coco.parent / "images"
    low = evaluate(FakeDetector(), coco=colour_coco, images=images)
    high = evaluate(FakeDetector(), coco=colour_coco, images=images, options={"conf": 0.99})
    assert high.settings.backend_options == {"conf": 0.99}
    assert high.num_detections < low.num_detections
    by_name = evaluate(
        "fake-detector", coco=colour_coco, images=images, registry=REGISTRY, options={"conf": 0.99}
    )
    assert by_name.settings.backend_options == {"conf": 0.99}  # a load-time option is not overridden either
    assert by_name.num_detections == high.num_detections


class _NoThreshold(BackendOptions):
    pass


class BareDetector(FakeDetector):
    """A detector whose options have no score threshold and no max-detections knob."""

    Options = _NoThreshold  # type: ignore[assignment]

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        from visionkit.testing.fakes import FakeOptions

        opts = FakeOptions(conf=0.0)
        return [self._instances(m, im, opts, False) for m, im in zip(outputs, batch.images, strict=True)]

    def preprocess(self, images: list[np.ndarray], options: Any) -> Batch[Any]:
        from visionkit.testing.fakes import color_masks

        return Batch(images, [color_masks([im], 60)[0] for im in images], [{} for _ in images], options)


def test_backend_without_threshold_option_gets_a_note_and_max_dets_still_applies(colour_coco: Path) -> None:
    report = evaluate(BareDetector(), coco=colour_coco, images=colour_coco.parent / "images", max_dets=1)
    assert report.settings.backend_options == {}
    assert any("has no score-threshold option" in n for n in report.notes)
    assert report.num_detections <= report.num_images  # at most one detection per image was kept
    assert report.settings.max_dets == 1 and "AR1 " in report.table()


def test_no_detections_scores_zero_not_an_error(colour_coco: Path) -> None:
    report = evaluate(FakeDetector(margin=255), coco=colour_coco, images=colour_coco.parent / "images")
    assert report.num_detections == 0
    assert report.bbox.ap == 0.0 and report.bbox.ap50 == 0.0


def test_limit_evaluates_only_the_first_images(colour_coco: Path) -> None:
    report = evaluate(
        "fake-detector", coco=colour_coco, images=colour_coco.parent / "images", registry=REGISTRY, limit=3
    )
    assert report.num_images == 3


class _Interrupting(FakeInstanceSegmenter):
    calls = 0

    def forward(self, inputs: Any) -> Any:
        type(self).calls += 1
        if type(self).calls == 3:
            raise KeyboardInterrupt
        return inputs


def test_ctrl_c_returns_partial_results(colour_coco: Path) -> None:
    report = evaluate(_Interrupting(batch_size=1), coco=colour_coco, images=colour_coco.parent / "images")
    assert report.interrupted and report.num_images == 2
    assert "INTERRUPTED" in report.table()
    assert report.bbox.ap is not None


def test_report_json_round_trip(colour_coco: Path) -> None:
    report = evaluate(
        "fake-instance", coco=colour_coco, images=colour_coco.parent / "images", registry=REGISTRY
    )
    again = DetectionReport.model_validate_json(report.to_json())
    assert again == report
    data = json.loads(report.to_json())
    assert data["schema_version"] == 1 and data["kind"] == "coco"
    assert set(data["bbox"]) >= {
        "ap",
        "ap50",
        "ap75",
        "ap_small",
        "ap_medium",
        "ap_large",
        "ar100",
        "per_class",
    }


# -- errors ------------------------------------------------------------------------------------------
def test_dataset_argument_errors(colour_coco: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match="Give exactly one dataset"):
        evaluate("fake-detector", registry=REGISTRY)
    with pytest.raises(InvalidOptionError, match="Give exactly one dataset"):
        evaluate("fake-detector", coco=colour_coco, imagefolder=tmp_path, registry=REGISTRY)
    with pytest.raises(InvalidOptionError, match="coco= needs images="):
        evaluate("fake-detector", coco=colour_coco, registry=REGISTRY)
    with pytest.raises(VisionKitError, match="is not a directory"):
        evaluate("fake-detector", coco=colour_coco, images=tmp_path / "nope", registry=REGISTRY)
    with pytest.raises(VisionKitError, match="does not exist"):
        evaluate("fake-detector", coco=tmp_path / "nope.json", images=tmp_path, registry=REGISTRY)


def test_missing_images_and_bad_annotation_files_are_named(colour_coco: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VisionKitError, match=r"8 of 8 images listed in .* are not in .*first: \['0000.png'"):
        evaluate("fake-detector", coco=colour_coco, images=empty, registry=REGISTRY)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(VisionKitError, match="is not a COCO instances file"):
        evaluate("fake-detector", coco=bad, images=empty, registry=REGISTRY)


def test_a_classifier_cannot_be_scored_with_coco_map(colour_coco: Path) -> None:
    with pytest.raises(TaskNotSupportedError, match="'detect'"):
        evaluate("fake-classifier", coco=colour_coco, images=colour_coco.parent / "images", registry=REGISTRY)


class _Unrelated(Backend[BackendOptions], Detects):
    name = "unrelated"
    tasks = (Task.DETECT,)

    def preprocess(self, images: list[np.ndarray], options: BackendOptions) -> Batch[BackendOptions]:
        return Batch(images, None, [{} for _ in images], options)

    def forward(self, inputs: Any) -> Any:
        return inputs

    def postprocess(self, outputs: Any, batch: Batch[BackendOptions], task: Task) -> list[Any]:
        return [
            Detections(
                xyxy=np.array([[1, 1, 20, 20]], np.float32),
                confidence=np.array([0.9], np.float32),
                class_id=np.array([0], np.int64),
                class_name=("zebra",),
                metadata=self.meta(im),
            )
            for im in batch.images
        ]


def test_only_unmatched_classes_is_an_error_after_the_loop(colour_coco: Path) -> None:
    with pytest.raises(VisionKitError, match=r"None of the model's class names \(zebra"):
        evaluate(_Unrelated(), coco=colour_coco, images=colour_coco.parent / "images")


class _InterruptedAtOnce(FakeInstanceSegmenter):
    def forward(self, inputs: Any) -> Any:
        raise KeyboardInterrupt


def test_ctrl_c_before_any_result_propagates(colour_coco: Path) -> None:
    # Nothing to report yet: the interrupt must reach the caller, not become an empty report.
    with pytest.raises(KeyboardInterrupt):
        evaluate(_InterruptedAtOnce(batch_size=1), coco=colour_coco, images=colour_coco.parent / "images")
