"""ImageFolder top-1/top-5 and semantic-segmentation mIoU through visionkit.evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionkit.errors import VisionKitError
from visionkit.evaluation import (
    ClassificationReport,
    SegmentationReport,
    confusion_matrix,
    evaluate,
    iou_from_confusion,
)
from visionkit.registry import Registry
from visionkit.testing.fakes import FakeClassifier, FakeSemanticSegmenter, fake_plugin

REGISTRY = Registry(entry_points=[], plugins=[fake_plugin()])
RGB = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


# -- ImageFolder --------------------------------------------------------------------------------------
@pytest.fixture
def imagefolder(tmp_path: Path) -> Path:
    """root/<colour>/<n>.png; a few images are deliberately mostly another colour (wrong top-1)."""
    rng = np.random.default_rng(1)
    root = tmp_path / "val"
    for c, (label, colour) in enumerate(RGB.items()):
        (root / label).mkdir(parents=True)
        for i in range(5):
            img = rng.integers(60, 100, size=(24, 32, 3), dtype=np.uint8)
            other = list(RGB.values())[(c + 1) % 3]
            img[:, : 20 if i else 8] = colour
            img[:, 20 if i else 8 :] = other
            Image.fromarray(img).save(root / label / f"{i}.png")
    return root


def test_top1_top5_match_the_classifier_run_by_hand(imagefolder: Path) -> None:
    report = evaluate("fake-classifier", imagefolder=imagefolder, registry=REGISTRY)
    assert isinstance(report, ClassificationReport)
    clf = FakeClassifier()
    hits = [clf.classify(str(p)).class_name[0] == p.parent.name for p in sorted(imagefolder.glob("*/*.png"))]
    assert report.num_images == 15
    assert report.top1 == pytest.approx(np.mean(hits))
    assert 0.0 < report.top1 < 1.0  # the mostly-other-colour images are wrong
    assert report.top5 == 1.0  # only 3 classes exist, all returned
    assert report.k == 3 and any("returned only 3 classes" in n for n in report.notes)
    assert report.per_class_top1 == {"blue": 0.8, "green": 0.8, "red": 0.8}
    assert ClassificationReport.model_validate_json(report.to_json()) == report
    assert "top-1 0.8000" in report.table()


def test_label_map_and_unknown_class_directories(imagefolder: Path) -> None:
    (imagefolder / "red").rename(imagefolder / "n0001")
    report = evaluate("fake-classifier", imagefolder=imagefolder, registry=REGISTRY)
    assert report.per_class_top1["n0001"] == 0.0
    assert any("match no model class" in n for n in report.notes)
    mapped = evaluate(
        "fake-classifier", imagefolder=imagefolder, registry=REGISTRY, label_map={"n0001": "red"}
    )
    assert mapped.per_class_top1["n0001"] == 0.8 and mapped.label_mapping["n0001"] == "red"


def test_no_directory_naming_a_model_class_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "val" / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "val" / "cat" / "a.png")
    with pytest.raises(
        VisionKitError, match=r"None of the class directories \(cat .*\) name a class of backend"
    ):
        evaluate("fake-classifier", imagefolder=tmp_path / "val", registry=REGISTRY)


def test_empty_imagefolder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(VisionKitError, match=r"No images found under .* ImageFolder layout"):
        evaluate("fake-classifier", imagefolder=tmp_path, registry=REGISTRY)


# -- semantic segmentation -------------------------------------------------------------------------------
@pytest.fixture
def seg_data(tmp_path: Path) -> tuple[Path, Path]:
    """Images with coloured rectangles; masks that disagree with them in places, with an ignore border."""
    rng = np.random.default_rng(2)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(5):
        h, w = 40 + 4 * i, 48  # images of different sizes
        img = rng.integers(60, 100, size=(h, w, 3), dtype=np.uint8)
        gt = np.zeros((h, w), np.uint8)
        for c, colour in enumerate(RGB.values(), start=1):
            y, x = int(rng.integers(0, h - 12)), int(rng.integers(0, w - 12))
            img[y : y + 10, x : x + 10] = colour
            gt[y : y + 10, x + 2 : x + 12] = c  # ground truth shifted by 2 px: IoU below 1
        gt[:, :2] = 255  # ignore border
        if i == 4:
            gt[:4, :] = 3  # a strip of "blue" the model will not find
        Image.fromarray(img).save(images / f"im{i}.jpg" if i == 0 else images / f"im{i}.png")
        Image.fromarray(gt).save(masks / f"im{i}.png")
    return images, masks


def test_miou_from_one_confusion_matrix_matches_torchmetrics(seg_data: tuple[Path, Path]) -> None:
    tm = pytest.importorskip("torchmetrics", reason="the mIoU cross-check uses torchmetrics")
    import torch

    images, masks = seg_data
    report = evaluate("fake-semantic", masks=masks, images=images, registry=REGISTRY)
    assert isinstance(report, SegmentationReport) and report.num_images == 5

    seg = FakeSemanticSegmenter()
    preds, gts = [], []
    for m in sorted(masks.glob("*.png")):
        img = next(images.glob(m.stem + ".*"))
        preds.append(torch.from_numpy(seg.segment_semantic(str(img)).label_map.astype(np.int64)).flatten())
        gts.append(torch.from_numpy(np.asarray(Image.open(m)).astype(np.int64)).flatten())
    pred, gt = torch.cat(preds), torch.cat(gts)
    per_class = tm.classification.MulticlassJaccardIndex(num_classes=4, average=None, ignore_index=255)(
        pred, gt
    )
    assert [report.per_class_iou[n] for n in ("background", "red", "green", "blue")] == pytest.approx(
        per_class.tolist(), abs=1e-6
    )
    macro = tm.classification.MulticlassJaccardIndex(num_classes=4, average="macro", ignore_index=255)(
        pred, gt
    )
    assert report.miou == pytest.approx(float(macro), abs=1e-6)
    cm = tm.classification.MulticlassConfusionMatrix(num_classes=4, ignore_index=255)(pred, gt)
    assert report.confusion_matrix == cm.tolist()
    acc = tm.classification.MulticlassAccuracy(num_classes=4, average="micro", ignore_index=255)(pred, gt)
    assert report.pixel_accuracy == pytest.approx(float(acc), abs=1e-6)
    assert 0.0 < report.miou < 1.0


def test_dataset_miou_is_not_the_mean_of_per_image_ious() -> None:
    # Image A: a big class-1 region predicted perfectly. Image B: a tiny class-1 region missed.
    gt_a, pred_a = np.ones((10, 10), int), np.ones((10, 10), int)
    gt_b, pred_b = np.zeros((10, 10), int), np.zeros((10, 10), int)
    gt_b[0, 0] = 1
    cm = confusion_matrix(gt_a, pred_a, 2) + confusion_matrix(gt_b, pred_b, 2)
    dataset_iou1 = iou_from_confusion(cm)[1]
    per_image_iou1 = np.mean(
        [iou_from_confusion(confusion_matrix(g, p, 2))[1] for g, p in ((gt_a, pred_a), (gt_b, pred_b))]
    )
    assert dataset_iou1 == pytest.approx(100 / 101)
    assert per_image_iou1 == pytest.approx(0.5)


def test_ignore_index_none_and_absent_classes() -> None:
    gt = np.array([[0, 0], [1, 255]])
    pred = np.array([[0, 1], [1, 1]])
    with pytest.raises(VisionKitError, match=r"label values \[255\] outside the model's 3 classes"):
        confusion_matrix(gt, pred, 3, ignore_index=None)
    cm = confusion_matrix(gt, pred, 3, ignore_index=255)
    iou = iou_from_confusion(cm)
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(0.5) and np.isnan(iou[2])


def test_mask_errors_name_the_file(seg_data: tuple[Path, Path]) -> None:
    images, masks = seg_data
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(masks / "im1.png")
    with pytest.raises(
        VisionKitError, match=r"im1.png' has shape \(5, 5\) but its image has shape \(44, 48\)"
    ):
        evaluate("fake-semantic", masks=masks, images=images, registry=REGISTRY)
    Image.fromarray(np.zeros((44, 48, 3), np.uint8)).save(masks / "im1.png")
    with pytest.raises(VisionKitError, match=r"has shape \(44, 48, 3\); expected a single-channel"):
        evaluate("fake-semantic", masks=masks, images=images, registry=REGISTRY)
    empty = images.parent / "empty"
    empty.mkdir()
    with pytest.raises(
        VisionKitError, match=r"No image in .* has a mask with the same file stem .*\(5 images, 0 masks\)"
    ):
        evaluate("fake-semantic", masks=empty, images=images, registry=REGISTRY)


def test_segmentation_report_json_and_table(seg_data: tuple[Path, Path]) -> None:
    images, masks = seg_data
    (images / "extra.png").write_bytes((images / "im1.png").read_bytes())  # an image without a mask
    report = evaluate("fake-semantic", masks=masks, images=images, registry=REGISTRY)
    assert any("1 images have no mask" in n for n in report.notes)
    data = json.loads(report.to_json())
    assert data["kind"] == "semantic" and data["ignore_index"] == 255
    assert SegmentationReport.model_validate_json(report.to_json()) == report
    assert "mIoU" in report.table() and "background" in report.table()
