"""Parity with ``ultralytics.YOLO(...).predict`` on the same weights and pixels.

Tolerances (stated by the issue): identical classes, boxes within 1 px, scores within 1e-3, mask IoU
>= 0.98 against ultralytics' ``retina_masks=True`` masks at the original resolution. Both sides get
the same decoded RGB pixels (ultralytics the BGR view of them), so JPEG decoders do not differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import visionkit

BOX_TOL_PX = 1.0
SCORE_TOL = 1e-3
MASK_IOU = 0.98


def ultralytics_predict(weights: Path | str, rgb: np.ndarray, **kwargs) -> object:
    from ultralytics import YOLO

    return YOLO(str(weights)).predict(np.ascontiguousarray(rgb[..., ::-1]), verbose=False, **kwargs)[0]


def assert_boxes_match(ours: visionkit.Detections, ref: object) -> None:
    boxes = ref.boxes  # type: ignore[attr-defined]
    assert len(ours) == len(boxes), f"{len(ours)} detections vs ultralytics' {len(boxes)}"
    np.testing.assert_array_equal(ours.class_id, boxes.cls.numpy().astype(np.int64))
    np.testing.assert_allclose(ours.xyxy, boxes.xyxy.numpy(), atol=BOX_TOL_PX, rtol=0)
    np.testing.assert_allclose(ours.confidence, boxes.conf.numpy(), atol=SCORE_TOL, rtol=0)
    assert ours.class_name == tuple(ref.names[int(c)] for c in boxes.cls)  # type: ignore[attr-defined]


def assert_masks_match(ours: visionkit.InstanceMasks, ref: object) -> None:
    theirs = ref.masks.data.numpy().astype(bool)  # type: ignore[attr-defined]
    assert ours.mask.shape == theirs.shape
    for i, (a, b) in enumerate(zip(ours.mask, theirs, strict=True)):
        iou = np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)
        assert iou >= MASK_IOU, f"mask {i}: IoU {iou:.4f} < {MASK_IOU}"


# -- real COCO-trained weights (skipped without VISIONKIT_WEIGHTS / VISIONKIT_DATA) -------------------
def _images(bus: np.ndarray, name: str, coco_image) -> np.ndarray:
    return bus if name == "bus.jpg" else visionkit.load_image(coco_image(name))


IMAGES = ("bus.jpg", "000000039769.png", "000000551780.jpg", "000000549055.jpg")


@pytest.mark.real_weights
@pytest.mark.parametrize("image", IMAGES)
def test_detect_parity_real_weights(bus: np.ndarray, image: str, weights_file, coco_image) -> None:
    path = weights_file("yolov8n-dq.pt")
    rgb = _images(bus, image, coco_image)
    ours = visionkit.load("yolo", weights=path).detect(rgb)
    ref = ultralytics_predict(path, rgb)
    assert len(ours) > 0
    assert_boxes_match(ours, ref)


@pytest.mark.real_weights
@pytest.mark.parametrize("image", IMAGES[:3])
def test_segment_parity_real_weights(bus: np.ndarray, image: str, weights_file, coco_image) -> None:
    path = weights_file("yolov8n-seg-dq.pt")
    rgb = _images(bus, image, coco_image)
    ours = visionkit.load("yolo-seg", weights=path).segment_instances(rgb)
    ref = ultralytics_predict(path, rgb, retina_masks=True)
    assert len(ours) > 0 and ours.mask.shape[1:] == rgb.shape[:2]
    assert_boxes_match(ours, ref)
    assert_masks_match(ours, ref)


@pytest.mark.real_weights
def test_detect_parity_real_weights_320(bus: np.ndarray, weights_file) -> None:
    path = weights_file("yolov8n-dq.pt")
    ours = visionkit.load("yolo", weights=path, imgsz=320, conf=0.1).detect(bus)
    assert_boxes_match(ours, ultralytics_predict(path, bus, imgsz=320, conf=0.1))


@pytest.mark.real_weights
@pytest.mark.parametrize(
    ("name", "backend"), [("yolov8n_int8.onnx", "yolo"), ("yolov8n-seg_int8.onnx", "yolo-seg")]
)
def test_onnx_export_parity(bus: np.ndarray, name: str, backend: str, weights_file) -> None:
    """Ultralytics' own .onnx exports load and match ultralytics running the same file."""
    pytest.importorskip(
        "onnxruntime", reason="loading .onnx weights needs onnxruntime (visionkit-yolo[onnx])"
    )
    path = weights_file(name)
    model = visionkit.load(backend, weights=path)
    ours = model.detect(bus)
    ref = ultralytics_predict(path, bus)
    assert len(ours) > 0 and ours.class_name.count("person") >= 3
    assert_boxes_match(ours, ref)
    assert model.export_spec is not None
    with pytest.raises(visionkit.VisionKitError, match="already runs the ONNX file"):
        model.export_spec()


# -- random weights (always run): same checkpoint file on both sides -------------------------------------
def test_detect_parity_random_weights(bus: np.ndarray, random_ckpts: dict[str, Path]) -> None:
    opts = {"imgsz": 160, "conf": 0.05}
    ours = visionkit.load("yolo", weights=random_ckpts["detect"], **opts).detect(bus)
    ref = ultralytics_predict(random_ckpts["detect"], bus, **opts)
    assert len(ours) > 3, "raise the random head's bias: nothing to compare"
    assert_boxes_match(ours, ref)


def test_segment_parity_random_weights(bus: np.ndarray, random_ckpts: dict[str, Path]) -> None:
    opts = {"imgsz": 160, "conf": 0.05}
    ours = visionkit.load("yolo-seg", weights=random_ckpts["segment"], **opts).segment_instances(bus)
    ref = ultralytics_predict(random_ckpts["segment"], bus, retina_masks=True, **opts)
    assert len(ours) > 3
    assert_boxes_match(ours, ref)
    assert_masks_match(ours, ref)


def test_classify_parity_random_weights(bus: np.ndarray, random_ckpts: dict[str, Path]) -> None:
    ours = visionkit.load("yolo-cls", weights=random_ckpts["classify"], imgsz=64, top_k=5).classify(bus)
    ref = ultralytics_predict(random_ckpts["classify"], bus, imgsz=64)
    probs = ref.probs.data.numpy()  # type: ignore[attr-defined]
    np.testing.assert_allclose(ours.confidence, probs[ours.class_id], atol=1e-5)
    np.testing.assert_allclose(ours.confidence, np.sort(probs)[::-1][:5], atol=1e-5)
    assert ours.class_id[0] == int(np.argmax(probs))


@pytest.mark.real_weights
def test_non_retina_masks_close_to_retina(bus: np.ndarray, weights_file) -> None:
    """retina_masks=False still returns masks at the image resolution, close to the retina ones."""
    seg = visionkit.load("yolo-seg", weights=weights_file("yolov8n-seg-dq.pt"))
    retina = seg.segment_instances(bus)
    coarse = seg.segment_instances(bus, retina_masks=False)
    assert coarse.mask.shape == retina.mask.shape
    np.testing.assert_allclose(coarse.xyxy, retina.xyxy, atol=1e-3)
    for a, b in zip(coarse.mask, retina.mask, strict=True):
        assert np.logical_and(a, b).sum() / np.logical_or(a, b).sum() > 0.9


@pytest.mark.slow
def test_rtdetr_parity_random_weights(bus: np.ndarray, tmp_path: Path) -> None:
    """RT-DETR (NMS-free) through ultralytics; visionkit clips boxes to the image, ultralytics does not."""
    import torch
    from ultralytics import RTDETR
    from ultralytics.nn import tasks

    torch.manual_seed(0)
    model = tasks.RTDETRDetectionModel(tasks.yaml_model_load("rtdetr-l.yaml"), verbose=False)
    path = tmp_path / "rtdetr-random.pt"
    torch.save({"model": model, "train_args": {"task": "detect", "imgsz": 160}}, path)
    ours = visionkit.load("yolo-rtdetr", weights=path, imgsz=160, conf=0.01).detect(bus)
    ref = RTDETR(str(path)).predict(
        np.ascontiguousarray(bus[..., ::-1]), imgsz=160, conf=0.01, verbose=False
    )[0]
    assert len(ours) == len(ref.boxes) > 0
    h, w = bus.shape[:2]
    theirs = ref.boxes.xyxy.numpy().clip(0, [w, h, w, h])
    # A random decoder gives exactly tied queries whose order may swap: compare in a canonical order.
    a = np.lexsort((ours.xyxy[:, 1], ours.xyxy[:, 0], ours.class_id, -ours.confidence.round(4)))
    b = np.lexsort((theirs[:, 1], theirs[:, 0], ref.boxes.cls.numpy(), -ref.boxes.conf.numpy().round(4)))
    np.testing.assert_array_equal(ours.class_id[a], ref.boxes.cls.numpy().astype(np.int64)[b])
    np.testing.assert_allclose(ours.confidence[a], ref.boxes.conf.numpy()[b], atol=SCORE_TOL, rtol=0)
    np.testing.assert_allclose(ours.xyxy[a], theirs[b], atol=BOX_TOL_PX, rtol=0)
