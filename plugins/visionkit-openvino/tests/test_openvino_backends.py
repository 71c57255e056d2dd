"""The openvino runtime on the built-in backends: tiny random models vs their torch path, real YOLO.

Tolerances (fp32 OpenVINO vs torch, same random weights; measured ~1e-6 to 1e-5 everywhere):
YOLO boxes 1e-3 px at 64 px, scores/log-probabilities 1e-4; torchvision classifier probabilities
rtol 1e-3; transformers logits/boxes 1e-4; SAM encoder embedding 1e-4, mask logits 1e-3.
Real weights (yolov8n-dq on coco-mini; skipped without VISIONKIT_WEIGHTS / VISIONKIT_DATA): fp32 AP
within 0.003 of torch, INT8 within 0.015 (measured 0.4216 / 0.4212 vs torch 0.4217 on 100 images).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import visionkit


def _need(*modules: str) -> Any:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed")


def _registry(plugin: str) -> visionkit.Registry:
    import visionkit_openvino

    return visionkit.Registry(
        entry_points=[], plugins=[importlib.import_module(plugin), visionkit_openvino], use_environment=False
    )


def _pair(plugin: str, name: str, cache: Path, precision: str = "fp32", **kw: Any) -> tuple[Any, Any]:
    """``(torch, openvino)`` backends with the same random weights."""
    reg = _registry(plugin)
    torch.manual_seed(0)
    ref = visionkit.load(name, weights=None, registry=reg, **kw)
    torch.manual_seed(0)
    ov_ = visionkit.load(
        name,
        weights=None,
        registry=reg,
        precision=precision,
        runtime="openvino",
        runtime_options={"cache_dir": cache, "threads": 2},
        **kw,
    )
    return ref, ov_


# -- YOLO -------------------------------------------------------------------------------------------
@_need("visionkit_yolo", "ultralytics")
def test_yolo_detect_fp32_parity(tmp_path: Path, images: list[np.ndarray]) -> None:
    ref, ov_ = _pair("visionkit_yolo", "yolo", tmp_path, imgsz=64, rect=False)
    x = ref.preprocess(images[:2], ref.options).inputs
    torch.testing.assert_close(ov_.forward(x), ref.forward(x), atol=1e-3, rtol=1e-4)
    a, b = ref.detect(images[0], conf=0.0), ov_.detect(images[0], conf=0.0)
    assert len(a) == len(b) and isinstance(b, visionkit.Detections)


@_need("visionkit_yolo", "ultralytics")
def test_yolo_seg_and_cls_fp32_parity(tmp_path: Path, images: list[np.ndarray]) -> None:
    ref, ov_ = _pair("visionkit_yolo", "yolo-seg", tmp_path, imgsz=64, rect=False)
    x = ref.preprocess(images[:2], ref.options).inputs
    (p, m), (q, n) = ref.forward(x), ov_.forward(x)
    torch.testing.assert_close(q, p, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(n, m, atol=1e-4, rtol=1e-4)
    assert isinstance(ov_.segment_instances(images[0]), visionkit.InstanceMasks)
    ref, ov_ = _pair("visionkit_yolo", "yolo-cls", tmp_path, imgsz=64)
    x = ref.preprocess(images, ref.options).inputs
    torch.testing.assert_close(ov_.forward(x).log(), ref.forward(x).log(), atol=1e-4, rtol=0)


# -- torchvision ------------------------------------------------------------------------------------
@_need("visionkit_torchvision", "torchvision")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchvision_classifier_and_segmenter_fp32_parity(tmp_path: Path, images: list[np.ndarray]) -> None:
    ref, ov_ = _pair(
        "visionkit_torchvision", "tv-classifier", tmp_path, arch="resnet18", crop_size=64, resize_size=72
    )
    x = ref.preprocess(images[:3], ref.options).inputs
    torch.testing.assert_close(ov_.forward(x).softmax(-1), ref.forward(x).softmax(-1), atol=1e-6, rtol=1e-3)
    ref, ov_ = _pair("visionkit_torchvision", "lraspp", tmp_path, resize_size=64)
    for a, b in zip(ref.segment_semantic(images[:2], return_scores=True),
                    ov_.segment_semantic(images[:2], return_scores=True), strict=True):  # fmt: skip
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
        assert np.mean(a.label_map != b.label_map) < 1e-3


# -- transformers -----------------------------------------------------------------------------------
@_need("visionkit_transformers", "transformers")
@pytest.mark.parametrize("name", ["detr", "segformer", "vit"])
def test_transformers_fp32_parity(name: str, tmp_path: Path, images: list[np.ndarray]) -> None:
    ref, ov_ = _pair("visionkit_transformers", name, tmp_path)
    x = ref.preprocess(images[:1], ref.options).inputs
    got, want = ov_.forward(x), ref.forward(x)
    for key, a, b in zip(ref.output_keys, got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=lambda m, k=key: f"{name} {k}: {m}")


# -- SAM --------------------------------------------------------------------------------------------
@_need("visionkit_sam")
def test_sam_both_networks_fp32_parity(tmp_path: Path, images: list[np.ndarray]) -> None:
    ref, ov_ = _pair("visionkit_sam", "sam", tmp_path)
    assert set(ov_.runtime["stages"]) == {"forward", "decoder_forward"}
    assert type(ov_.decoder_forward).__name__ == "OvForward"
    for prompt in ({"points": [(30, 20)]}, {"boxes": [[10, 10, 80, 90], [50, 40, 120, 90]]}):
        a, b = ref.segment_prompt(images[0], **prompt), ov_.segment_prompt(images[0], **prompt)
        np.testing.assert_allclose(b.score, a.score, atol=1e-4)
        np.testing.assert_allclose(b.logits, a.logits, atol=1e-3)


# -- real weights -----------------------------------------------------------------------------------
def _real_paths() -> tuple[Path, Path]:
    wdir, ddir = os.environ.get("VISIONKIT_WEIGHTS"), os.environ.get("VISIONKIT_DATA")
    if not wdir or not ddir:
        pytest.skip("set VISIONKIT_WEIGHTS and VISIONKIT_DATA (e.g. ../shared/data) for real-weight tests")
    weights = Path(wdir.split(os.pathsep)[0]) / "yolov8n-dq.pt"
    data = Path(ddir) / "coco-mini"
    if not weights.exists() or not data.is_dir():
        pytest.skip(f"{weights} or {data} missing")
    return weights, data


@_need("visionkit_yolo", "ultralytics")
@pytest.mark.real_weights
@pytest.mark.slow
def test_yolo_real_weights_ap_on_coco_mini(tmp_path: Path) -> None:
    from visionkit.evaluation import evaluate_coco

    weights, data = _real_paths()
    reg = _registry("visionkit_yolo")
    kw: dict[str, Any] = {"weights": str(weights), "imgsz": 320, "registry": reg}
    ann, imgs = data / "instances.json", data / "images"
    limit = 40  # keeps CI fast; the README's table uses all 100 images at 640

    def ap(backend: Any) -> float:
        return evaluate_coco(backend, ann, imgs, limit=limit, progress_bar=False).bbox.ap

    ref = visionkit.load("yolo", **kw)
    ro = {"cache_dir": tmp_path, "threads": 2, "calib": imgs, "calib_images": 16}
    fp32 = visionkit.load("yolo", runtime="openvino", runtime_options=ro, **kw)
    x = ref.preprocess([visionkit.load_image(next(imgs.iterdir()))], ref.options).inputs
    d = fp32.forward(x) - ref.forward(x)
    assert d[:, :4].abs().max() < 0.05 and d[:, 4:].abs().max() < 1e-3  # boxes in pixels, scores
    torch_ap, fp32_ap = ap(ref), ap(fp32)
    assert abs(fp32_ap - torch_ap) < 0.003, (torch_ap, fp32_ap)
    int8 = visionkit.load("yolo", precision="int8", runtime="openvino", runtime_options=ro, **kw)
    assert int8.runtime["float_ops"] == ["/model/model.22/dfl/conv/Conv"]
    int8_ap = ap(int8)
    assert torch_ap - int8_ap < 0.015, (torch_ap, int8_ap)
    bf16 = visionkit.load("yolo", precision="bf16", runtime="openvino", runtime_options=ro, **kw)
    if bf16.runtime["precision"] == "bf16":
        assert torch_ap - ap(bf16) < 0.015
