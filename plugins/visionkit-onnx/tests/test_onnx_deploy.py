"""Deploy artifacts: exported with torch, run with onnxruntime + numpy + OpenCV alone (issue 14)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from visionkit_onnx._export import export

import visionkit
from visionkit import InvalidOptionError
from visionkit.export import ExportNotSupportedError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("visionkit_yolo") is None or importlib.util.find_spec("ultralytics") is None,
    reason="visionkit-yolo (and ultralytics) not installed",
)


def _registry() -> visionkit.Registry:
    import visionkit_onnx
    import visionkit_yolo

    return visionkit.Registry(entry_points=[], plugins=[visionkit_yolo, visionkit_onnx])


def _pairs(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Detections in one canonical order (tied scores may come out of NMS in either order)."""
    ka = np.lexsort((a.xyxy[:, 0], a.class_id, -a.confidence))
    kb = np.lexsort((b.xyxy[:, 0], b.class_id, -b.confidence))
    return ka, kb


@pytest.fixture(scope="module")
def random_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import torch

    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("deploy")
    be = visionkit.load("yolo", weights=None, imgsz=64, conf=1e-4, max_det=20, registry=_registry())
    report = export(be, precision="fp32", output=tmp / "tiny.onnx", cache_dir=tmp / "cache")
    assert report["deploy"] == {"artifact": True, "reason": None}
    return tmp / "tiny.onnx", tmp / "cache"


def test_artifact_describes_itself(random_artifact: tuple[Path, Path]) -> None:
    path, _ = random_artifact
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["visionkit.schema"] == "1"
    meta = json.loads(props["visionkit"])
    assert meta["kind"] == "yolo-detect" and meta["tasks"] == ["detect"] and len(meta["class_names"]) == 80
    assert meta["input"]["rect"] is True and meta["input"]["stride"] == 32 and meta["input"]["imgsz"] == 64
    assert meta["defaults"] == {"conf": 1e-4, "iou": 0.7, "max_det": 20}
    assert meta["precision"] == "fp32" and meta["source"]["backend"] == "yolo"
    assert meta["source"]["fingerprint"].startswith("yolo-detect-random")
    assert {"normalize", "output", "calibration", "gate", "quantization", "created"} <= set(meta)


def test_deployed_matches_the_sdk_path_on_the_same_network(random_artifact: tuple[Path, Path]) -> None:
    import torch

    path, cache = random_artifact
    torch.manual_seed(0)
    sdk = visionkit.load(
        "yolo",
        weights=None,
        imgsz=64,
        conf=1e-4,
        max_det=20,
        runtime="onnxruntime",
        runtime_options={"cache_dir": cache},
        registry=_registry(),
    )
    dep = visionkit.load(str(path), registry=_registry())
    assert dep.runtime["deployed"] is True
    rng = np.random.default_rng(1)
    for shape in [(48, 64, 3), (64, 40, 3), (100, 150, 3)]:
        img = rng.integers(0, 255, shape, np.uint8)
        a, b = sdk.detect(img), dep.detect(img)
        assert len(a) == len(b) > 0
        ka, kb = _pairs(a, b)
        np.testing.assert_array_equal(a.class_id[ka], b.class_id[kb])
        np.testing.assert_allclose(a.xyxy[ka], b.xyxy[kb], atol=1.0)
        np.testing.assert_allclose(a.confidence[ka], b.confidence[kb], atol=1e-3)
        assert a.metadata.input_shape == b.metadata.input_shape  # the same rect letterbox
    # per-call thresholds reach the in-graph NMS
    img = rng.integers(0, 255, (64, 64, 3), np.uint8)
    assert len(dep.detect(img, conf=0.9)) < len(dep.detect(img))
    assert len(dep.detect(img, max_det=2)) <= 2


def test_deploy_process_imports_no_torch(random_artifact: tuple[Path, Path], tmp_path: Path) -> None:
    path, _ = random_artifact
    code = f"""
import sys, numpy as np, visionkit
det = visionkit.load({str(path)!r})
d = det.detect(np.zeros((60, 80, 3), np.uint8))
also = visionkit.load("onnx", weights={str(path)!r})
heavy = [m for m in ("torch", "torchvision", "ultralytics", "transformers", "segment_anything") if m in sys.modules]
print("HEAVY", heavy, type(d).__name__)
"""
    env = {**os.environ, "VISIONKIT_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY [] Detections" in out.stdout, out.stdout + out.stderr[-2000:]


def test_files_that_are_not_artifacts_get_a_clear_error(
    tmp_path: Path, random_artifact: tuple[Path, Path]
) -> None:
    path, _ = random_artifact
    model = onnx.load(str(path))
    del model.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    with pytest.raises(InvalidOptionError, match=r"not a visionkit deploy artifact.*'visionkit\.schema'"):
        visionkit.load(str(plain), registry=_registry())
    future = tmp_path / "future.onnx"
    model = onnx.load(str(path))
    for p in model.metadata_props:
        if p.key == "visionkit.schema":
            p.value = "99"
    onnx.save(model, str(future))
    with pytest.raises(InvalidOptionError, match="schema 99"):
        visionkit.load("onnx", weights=str(future), registry=_registry())


def test_backend_that_cannot_be_deployed_says_why_before_exporting(tmp_path: Path, tiny: Any) -> None:
    # a third party's exportable detector: its pre/post-processing is its own torch code
    other = tiny.TinyDetector(weights=0)
    with pytest.raises(ExportNotSupportedError, match="cannot be deployed without torch"):
        export(other, precision="fp32", output=tmp_path / "d.onnx", deploy=True, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists(), "nothing was exported"


@pytest.mark.real_weights
@pytest.mark.slow
def test_real_weights_int8_deployed_matches_the_sdk_int8_path_on_coco_mini(tmp_path: Path) -> None:
    wdir, ddir = os.environ.get("VISIONKIT_WEIGHTS"), os.environ.get("VISIONKIT_DATA")
    if not wdir or not ddir:
        pytest.skip("set VISIONKIT_WEIGHTS and VISIONKIT_DATA (e.g. ../shared/data) for real-weight tests")
    weights = Path(wdir.split(os.pathsep)[0]) / "yolov8n-dq.pt"
    images = sorted((Path(ddir) / "coco-mini" / "images").glob("*"))[:20]
    if not weights.exists() or not images:
        pytest.skip("yolov8n-dq.pt or coco-mini missing")
    reg = _registry()
    ropts = {"cache_dir": tmp_path / "cache", "threads": 2}
    report = export(
        visionkit.load("yolo", weights=str(weights), registry=reg), output=tmp_path / "y.onnx", **ropts
    )
    assert report["deploy"]["artifact"] and report["calibration"]["source"].startswith(
        "visionkit-onnx bundled"
    )
    sdk = visionkit.load("yolo", weights=str(weights), precision="int8", runtime_options=ropts, registry=reg)
    assert sdk.runtime["cache_hit"], "the SDK's int8 path and the artifact share one network"
    dep = visionkit.load(str(tmp_path / "y.onnx"), registry=reg)
    for p in images:
        img = visionkit.load_image(p)
        a, b = sdk.detect(img, conf=0.001), dep.detect(img, conf=0.001)
        assert len(a) == len(b), p.name
        ka, kb = _pairs(a, b)
        np.testing.assert_array_equal(a.class_id[ka], b.class_id[kb])
        np.testing.assert_allclose(a.xyxy[ka], b.xyxy[kb], atol=1.0)
        np.testing.assert_allclose(a.confidence[ka], b.confidence[kb], atol=1e-3)
    from visionkit.evaluation import evaluate_coco

    coco = Path(ddir) / "coco-mini"
    ap = [
        evaluate_coco(be, coco / "instances.json", coco / "images", progress_bar=False).bbox.ap
        for be in (sdk, dep)
    ]
    assert ap[0] is not None and ap[1] is not None and ap[0] > 0.35, ap
    assert abs(ap[0] - ap[1]) <= 0.002, ap


def test_yolo_classifier_artifact_matches_the_sdk_path(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    reg = _registry()
    be = visionkit.load("yolo-cls", weights=None, imgsz=64, top_k=3, registry=reg)
    report = export(be, precision="fp32", output=tmp_path / "cls.onnx", cache_dir=tmp_path / "c")
    assert report["deploy"]["artifact"]
    torch.manual_seed(0)
    sdk = visionkit.load(
        "yolo-cls",
        weights=None,
        imgsz=64,
        top_k=3,
        runtime="onnxruntime",
        runtime_options={"cache_dir": tmp_path / "c"},
        registry=reg,
    )
    dep = visionkit.load(str(tmp_path / "cls.onnx"), registry=reg)
    assert dep.tasks == (visionkit.Task.CLASSIFY,) and dep.runtime["kind"] == "yolo-classify"
    rng = np.random.default_rng(2)
    for shape in [(48, 64, 3), (90, 50, 3), (64, 64, 3)]:
        img = rng.integers(0, 255, shape, np.uint8)
        a, b = sdk.classify(img), dep.classify(img)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)
        assert len(b) == 3 and set(a.class_id) == set(b.class_id)
    assert len(dep.classify(img, top_k=1)) == 1
    code = (
        "import sys, numpy as np, visionkit\n"
        f"c = visionkit.load({str(tmp_path / 'cls.onnx')!r}).classify(np.zeros((50, 70, 3), np.uint8))\n"
        "print('HEAVY', [m for m in ('torch', 'torchvision', 'ultralytics') if m in sys.modules], len(c))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY [] 3" in out.stdout, out.stdout + out.stderr[-2000:]
