"""The onnxruntime runtime on yolo-seg and yolo-cls (visionkit-yolo): random-init parity, INT8, real weights.

Tolerances: fp32 ONNX vs torch is float rounding only (raw outputs within 1e-3 on pixel-scale boxes,
results equal up to 1e-2 px / 1e-4 confidence / mask IoU >= 0.99). INT8 is judged per task below.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from visionkit_onnx._runtime import wrap

import visionkit

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("visionkit_yolo") is None or importlib.util.find_spec("ultralytics") is None,
    reason="visionkit-yolo (and ultralytics) not installed",
)

#: Real-weight test budget: first N coco-mini images (by COCO id) for bbox mAP, and for masks.
MAP_IMAGES = 32
MASK_IMAGES = 16
#: bbox mAP50-95 points INT8 may lose on MAP_IMAGES images (measured: 1.8; 0.8 on all 100 images;
#: 32 images are a noisy sample, hence more room than the issue's 1.5-point gate over the whole set).
MAX_MAP_DROP = 3.0


@pytest.fixture
def yolo_registry() -> visionkit.Registry:
    import visionkit_onnx
    import visionkit_yolo

    return visionkit.Registry(entry_points=[], plugins=[visionkit_yolo, visionkit_onnx])


def _spread(backend: Any, class_scale: float = 1.0) -> Any:
    """Re-initialise a random yolo network so its outputs depend on the image, without near ties.

    Ultralytics' init (default conv init, identity BatchNorm, class-prior bias) shrinks activations layer
    by layer: every image and anchor then gets the same ~0.0002 scores, masks near the 0.5 cut and
    identical class probabilities, so NMS order, mask pixels and top-1 would hinge on float noise.
    He-normal convs keep the activation scale; ``class_scale`` spreads the detection class logits.
    The yolo export key of a random model names only its seed: use a fresh ``cache_dir`` per test.
    """
    model = backend.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and "dfl" not in name:
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    head = model.model[-1]
    with torch.no_grad():
        for branch in getattr(head, "cv3", ()):  # detect/segment class branches
            branch[-1].weight.mul_(class_scale)
            branch[-1].bias.zero_()
    return backend


def _load(registry: visionkit.Registry, name: str, class_scale: float = 1.0, **kw: Any) -> Any:
    return _spread(visionkit.load(name, weights=None, registry=registry, **kw), class_scale)


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def _matched_masks(ref: visionkit.InstanceMasks, cand: visionkit.InstanceMasks, conf: float) -> list[float]:
    """Mask IoU of each ``ref`` detection scoring >= conf with its twin (same class, best box IoU >= 0.5);
    NaN when it has none."""
    out = []
    for k in np.flatnonzero(ref.confidence >= conf):
        same = np.flatnonzero(cand.class_id == ref.class_id[k])
        ious = _box_iou(ref.xyxy[k], cand.xyxy[same]) if len(same) else np.zeros(0)
        if not len(ious) or ious.max() < 0.5:
            out.append(float("nan"))
            continue
        out.append(_mask_iou(ref.mask[k], cand.mask[same[ious.argmax()]]))
    return out


# -- yolo-seg ---------------------------------------------------------------------------------------
def test_yolo_seg_random_init_fp32_onnx_matches_torch(
    yolo_registry: visionkit.Registry, tmp_path: Path, images: list[np.ndarray]
) -> None:
    kw: dict[str, Any] = {"imgsz": 160, "rect": False, "class_scale": 40.0}
    ref = _load(yolo_registry, "yolo-seg", **kw)
    ort = wrap(_load(yolo_registry, "yolo-seg", **kw), "fp32", cache_dir=tmp_path)
    assert ort.runtime["precision"] == "fp32" and ort.runtime["model_path"].startswith(str(tmp_path))
    x = ref.preprocess(images[:2], ref.options).inputs
    (preds, protos), (o_preds, o_protos) = ref.forward(x), ort.forward(x)
    torch.testing.assert_close(o_preds, preds, atol=1e-3, rtol=1e-4)  # boxes in pixels, scores, coefficients
    torch.testing.assert_close(o_protos, protos, atol=1e-5, rtol=1e-4)
    for a, b in zip(ref.segment_instances(images[:4]), ort.segment_instances(images[:4]), strict=True):
        assert isinstance(b, visionkit.InstanceMasks) and len(a) == len(b) > 10
        np.testing.assert_array_equal(b.class_id, a.class_id)
        np.testing.assert_allclose(b.xyxy, a.xyxy, atol=1e-2)
        np.testing.assert_allclose(b.confidence, a.confidence, atol=1e-4)
        assert a.mask.any(axis=(1, 2)).all()
        ious = [_mask_iou(m, n) for m, n in zip(a.mask, b.mask, strict=True)]
        assert min(ious) >= 0.99, ious


def test_yolo_seg_random_init_int8_runs_close_to_fp32(
    yolo_registry: visionkit.Registry, tmp_path: Path, images: list[np.ndarray], calib_dir: Path
) -> None:
    kw: dict[str, Any] = {"imgsz": 160, "rect": False, "class_scale": 40.0}
    ref = _load(yolo_registry, "yolo-seg", **kw)
    int8 = wrap(
        _load(yolo_registry, "yolo-seg", **kw), "int8", cache_dir=tmp_path, calib=calib_dir, calib_images=4
    )
    info = int8.runtime
    # the head tail, the convs feeding it and the anchor arithmetic of the dynamic H/W graph stay float
    assert info["quantization"] == "static" and 0 < info["float_nodes"] < 150, info
    a, b = ref.segment_instances(images[:2]), int8.segment_instances(images[:2])
    for r, c, im in zip(a, b, images[:2], strict=True):
        assert c.mask.shape[1:] == im.shape[:2] == c.metadata.image_shape
        ious = np.array(_matched_masks(r, c, conf=0.5))
        # measured: 98% / 97% of ~185 confident instances matched, mask IoU mean 0.96
        assert len(ious) > 20 and np.mean(~np.isnan(ious)) >= 0.9, ious
        assert np.nanmean(ious) >= 0.9, ious


# -- yolo-cls ---------------------------------------------------------------------------------------
def test_yolo_cls_random_init_fp32_parity_and_int8(
    yolo_registry: visionkit.Registry, tmp_path: Path, images: list[np.ndarray], calib_dir: Path
) -> None:
    """Compared as log-probabilities: a random 1000-class net is near uniform (p ~ 0.001 everywhere), so
    an absolute probability tolerance would pass anything; log p keeps the logits' resolution."""
    kw: dict[str, Any] = {"imgsz": 64}
    ref = _load(yolo_registry, "yolo-cls", **kw)
    ort = wrap(_load(yolo_registry, "yolo-cls", **kw), "fp32", cache_dir=tmp_path)
    int8 = wrap(
        _load(yolo_registry, "yolo-cls", **kw), "int8", cache_dir=tmp_path, calib=calib_dir, calib_images=4
    )
    assert int8.runtime["quantization"] == "static"
    assert int8.runtime["float_nodes"] >= 1, "the softmax output stays float"
    x = ref.preprocess(images, ref.options).inputs
    logp = ref.forward(x).log()
    spread = (logp.amax(1) - logp.amin(1)).min()
    assert (logp[0] - logp[1]).abs().max() > 0.1 * spread, "the random net must depend on the image"

    torch.testing.assert_close(ort.forward(x).log(), logp, atol=1e-4, rtol=0)
    for a, b in zip(ref.classify(images), ort.classify(images), strict=True):
        np.testing.assert_array_equal(b.class_id, a.class_id)
        np.testing.assert_allclose(b.confidence, a.confidence, rtol=1e-4)

    q = int8.forward(x).log()
    # measured: max |d log p| 0.004 against a log p spread of ~0.07; correlation >= 0.9998; top-1 6/6
    assert (q - logp).abs().max() < 0.25 * spread
    corr = [np.corrcoef(u.numpy(), v.numpy())[0, 1] for u, v in zip(logp, q, strict=True)]
    assert min(corr) >= 0.99, corr
    assert (q.argmax(1) == logp.argmax(1)).sum() >= len(images) - 1


# -- real weights -----------------------------------------------------------------------------------
def _real_paths() -> tuple[Path, Path]:
    wdir, ddir = os.environ.get("VISIONKIT_WEIGHTS"), os.environ.get("VISIONKIT_DATA")
    if not wdir or not ddir:
        pytest.skip("set VISIONKIT_WEIGHTS and VISIONKIT_DATA (e.g. ../shared/data) for real-weight tests")
    weights = Path(wdir.split(os.pathsep)[0]) / "yolov8n-seg-dq.pt"
    data = Path(ddir) / "coco-mini"
    if not weights.exists() or not (data / "instances.json").is_file():
        pytest.skip(f"{weights} or {data / 'instances.json'} missing")
    return weights, data


@pytest.mark.real_weights
@pytest.mark.slow
def test_yolo_seg_int8_real_weights_close_to_fp32_on_coco_mini(
    yolo_registry: visionkit.Registry, tmp_path: Path
) -> None:
    weights, data = _real_paths()
    kw: dict[str, Any] = {"weights": str(weights), "imgsz": 320, "rect": False, "registry": yolo_registry}
    fp32 = visionkit.load("yolo-seg", **kw)
    int8 = visionkit.load(
        "yolo-seg",
        precision="int8",
        runtime_options={"cache_dir": tmp_path, "calib": data / "images", "calib_images": 16, "threads": 2},
        **kw,
    )
    assert int8.runtime["quantization"] == "static" and int8.runtime["float_nodes"] > 0

    # bbox mAP50-95 against coco-mini's real labels (pycocotools through visionkit.evaluate)
    coco, images = data / "instances.json", data / "images"
    ap = {
        be.precision: visionkit.evaluate(
            be, coco=coco, images=images, limit=MAP_IMAGES, segm=False, progress=False
        ).bbox.ap
        for be in (fp32, int8)
    }
    assert ap["fp32"] > 0.3, ap  # yolov8n-seg at 320 on coco-mini: ~0.37-0.41
    assert 100 * (ap["fp32"] - ap["int8"]) <= MAX_MAP_DROP, ap

    # masks: every confident fp32 instance has an INT8 twin whose mask overlaps it closely
    files = sorted(images.iterdir())[:MASK_IMAGES]
    imgs = [visionkit.load_image(f) for f in files]
    ious: list[float] = []
    for a, b in zip(fp32.segment_instances(imgs), int8.segment_instances(imgs), strict=True):
        ious += _matched_masks(a, b, conf=0.5)
    found = np.array(ious)
    assert len(found) >= 15
    # measured on the 16 images: 24/24 matched, mask IoU mean 0.966, 10th percentile 0.93, min 0.85
    assert np.mean(~np.isnan(found)) >= 0.9, found
    assert np.nanmean(found) >= 0.9 and np.nanpercentile(found, 10) >= 0.8, found
