"""YOLO instance-segmentation deploy artifacts: masks from the prototypes in numpy, no torch (issue 14)."""

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
from visionkit_onnx._runtime import wrap

import visionkit
from visionkit.testing import DetectorConformance, InstanceSegmenterConformance

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("visionkit_yolo") is None or importlib.util.find_spec("ultralytics") is None,
    reason="visionkit-yolo (and ultralytics) not installed",
)

HEAVY = ("torch", "torchvision", "ultralytics", "transformers", "segment_anything")


def _registry() -> visionkit.Registry:
    import visionkit_onnx
    import visionkit_yolo

    return visionkit.Registry(entry_points=[], plugins=[visionkit_yolo, visionkit_onnx])


def _random_seg(**options: Any) -> Any:
    """A random ``yolov8n-seg`` whose head is perturbed: the stock init scores every anchor ~0."""
    import torch

    torch.manual_seed(0)
    be = visionkit.load("yolo-seg", weights=None, imgsz=64, max_det=20, registry=_registry(), **options)
    head = be.model.model[-1]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for seq in head.cv3:
            seq[-1].bias.zero_()
        for conv in (head.proto.cv3.conv, *(seq[-1] for seq in (*head.cv2, *head.cv3, *head.cv4))):
            conv.weight.add_(torch.randn(conv.weight.shape, generator=gen) * 0.5)
    return be


def assert_same_instances(
    a: Any, b: Any, *, box: float = 1.0, score: float = 1e-3, iou: float = 0.98
) -> float:
    """Same classes, boxes within ``box`` px, scores within ``score``, mask IoU >= ``iou``; the worst IoU."""
    assert len(a) == len(b)
    if not len(a):
        return 1.0
    # canonical order (tied scores may leave NMS in either order); the mask area breaks exact ties
    ka = np.lexsort((a.mask.sum((1, 2)), a.xyxy[:, 0], a.class_id, -a.confidence))
    kb = np.lexsort((b.mask.sum((1, 2)), b.xyxy[:, 0], b.class_id, -b.confidence))
    np.testing.assert_array_equal(a.class_id[ka], b.class_id[kb])
    np.testing.assert_allclose(a.xyxy[ka], b.xyxy[kb], atol=box)
    np.testing.assert_allclose(a.confidence[ka], b.confidence[kb], atol=score)
    ma, mb = a.mask[ka], b.mask[kb]
    ious = (ma & mb).sum((1, 2)) / np.maximum((ma | mb).sum((1, 2)), 1)
    assert ious.min() >= iou, ious
    return float(ious.min())


def no_heavy_imports(code: str) -> str:
    """Run ``code`` in a fresh interpreter; its stdout, after checking no heavy library was imported."""
    probe = f"\nimport sys\nprint('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
    env = {**os.environ, "VISIONKIT_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code + probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def seg_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    tmp = tmp_path_factory.mktemp("deploy-seg")
    backend = _random_seg(conf=0.05)
    report = export(backend, precision="fp32", output=tmp / "seg.onnx", cache_dir=tmp / "c")
    assert report["deploy"] == {"artifact": True, "reason": None}
    # the SDK path on the same network: the exported backend with its forward in ONNX Runtime
    sdk = wrap(backend, precision="fp32", cache_dir=tmp / "c")
    assert sdk.runtime["cache_hit"], "the SDK path and the artifact share one network"
    return tmp / "seg.onnx", sdk


def test_seg_artifact_describes_its_masks(seg_artifact: tuple[Path, Any]) -> None:
    path, _ = seg_artifact
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["visionkit"])
    assert meta["kind"] == "yolo-segment" and meta["tasks"] == ["detect", "segment_instances"]
    assert meta["output"]["protos"] == "output1" and meta["output"]["num_classes"] == 80
    assert meta["defaults"]["retina_masks"] is True and meta["source"]["backend"] == "yolo-seg"


@pytest.mark.parametrize(
    ("input_hw", "image_hw"), [((64, 32), (97, 33)), ((32, 64), (33, 97)), ((96, 128), (480, 640))]
)
@pytest.mark.parametrize("retina", [True, False])
def test_numpy_masks_match_ultralytics_ops(
    input_hw: tuple[int, int], image_hw: tuple[int, int], retina: bool
) -> None:
    """The numpy mask decoder against ultralytics' own torch ops on the same prototypes and boxes."""
    import torch
    from ultralytics.utils import ops
    from visionkit_onnx._deploy import yolo_masks

    rng = np.random.default_rng(0)
    ih, iw = input_hw
    protos = rng.normal(size=(32, ih // 4, iw // 4)).astype(np.float32)
    coeffs = rng.normal(size=(4, 32)).astype(np.float32)
    box_in = np.array(
        [[0, 0, iw, ih], [3, 5, iw / 2, ih / 2], [5.5, 2.2, iw - 3.3, ih / 3], [1, 1, 2, 2]], np.float32
    )
    gain = min(ih / image_hw[0], iw / image_hw[1])
    box = np.clip(box_in / gain, 0, [image_hw[1], image_hw[0]] * 2).astype(np.float32)
    t = [torch.from_numpy(x) for x in (protos, coeffs, box_in, box)]
    if retina:
        want = ops.process_mask_native(t[0], t[1], t[3], image_hw)
    else:
        m = ops.process_mask(t[0], t[1], t[2], input_hw, upsample=True)
        want = ops.scale_masks(m[None].float(), image_hw)[0] > 0.5
    got = yolo_masks(protos, coeffs, box, box_in, input_hw, image_hw, retina)
    assert got.dtype == bool and got.shape == (4, *image_hw)
    want = want.numpy().astype(bool)
    # only float rounding where a value sits on the threshold: without retina, a resized 0/1 mask is
    # exactly 0.5 along some box edges, so at most one line of pixels may flip
    differ = (got != want).sum((1, 2))
    assert differ.max() <= max(image_hw), differ
    ious = (got & want).sum((1, 2)) / np.maximum((got | want).sum((1, 2)), 1)
    assert ious[want.any((1, 2))].min() >= 0.98, ious
    assert got.sum() > 0


def test_seg_artifact_runs_the_sdk_pipeline_at_random_init(seg_artifact: tuple[Path, Any]) -> None:
    """The same detections and mask geometry as the SDK path (a random init ties every score at 0.5, so
    which tied anchor NMS keeps is arbitrary: real-weight parity below compares the masks themselves)."""
    path, sdk = seg_artifact
    dep = visionkit.load(str(path), registry=_registry())
    assert dep.tasks == (visionkit.Task.DETECT, visionkit.Task.SEGMENT_INSTANCES)
    rng = np.random.default_rng(3)
    for retina in (True, False):  # process_mask_native, and process_mask + scale_masks
        for shape in [(33, 97, 3), (97, 33, 3)]:
            img = rng.integers(0, 255, shape, np.uint8)
            a = sdk.segment_instances(img, retina_masks=retina)
            b = dep.segment_instances(img, retina_masks=retina)
            assert isinstance(b, visionkit.InstanceMasks) and b.mask.shape[1:] == shape[:2]
            assert a.metadata.input_shape == b.metadata.input_shape  # the same rect letterbox
            assert len(a) == len(b)
            np.testing.assert_allclose(np.sort(a.confidence), np.sort(b.confidence), atol=1e-3)
    img = rng.integers(0, 255, (64, 48, 3), np.uint8)
    a, b = sdk.detect(img), dep.detect(img)  # detect: no masks, none dropped for an empty one
    assert type(b) is visionkit.Detections and len(a) == len(b) > 0
    np.testing.assert_allclose(np.sort(a.confidence), np.sort(b.confidence), atol=1e-3)


def test_seg_deploy_process_imports_no_torch(seg_artifact: tuple[Path, Any]) -> None:
    path, _ = seg_artifact
    out = no_heavy_imports(
        "import numpy as np, visionkit\n"
        f"s = visionkit.load({str(path)!r}).segment_instances(np.full((97, 33, 3), 30, np.uint8))\n"
        "print(type(s).__name__, s.mask.shape[1:])"
    )
    assert "InstanceMasks (97, 33)" in out, out


@pytest.mark.real_weights
def test_real_seg_weights_deployed_matches_the_sdk_path_on_coco_mini(tmp_path: Path) -> None:
    wdir, ddir = os.environ.get("VISIONKIT_WEIGHTS"), os.environ.get("VISIONKIT_DATA")
    if not wdir or not ddir:
        pytest.skip("set VISIONKIT_WEIGHTS and VISIONKIT_DATA (e.g. ../shared/data) for real-weight tests")
    weights = Path(wdir.split(os.pathsep)[0]) / "yolov8n-seg-dq.pt"
    images = sorted((Path(ddir) / "coco-mini" / "images").glob("*.jpg"))[:4]
    if not weights.exists() or not images:
        pytest.skip("yolov8n-seg-dq.pt or coco-mini missing")
    reg = _registry()
    ropts = {"cache_dir": tmp_path / "cache", "threads": 2}
    be = visionkit.load("yolo-seg", weights=str(weights), registry=reg)
    assert export(be, precision="fp32", output=tmp_path / "seg.onnx", **ropts)["deploy"]["artifact"]
    sdk = visionkit.load(
        "yolo-seg", weights=str(weights), runtime="onnxruntime", runtime_options=ropts, registry=reg
    )
    assert sdk.runtime["cache_hit"], "the SDK path and the artifact share one network"
    dep = visionkit.load(str(tmp_path / "seg.onnx"), registry=reg, threads=2)
    n, worst = 0, 1.0
    for p in images:
        img = visionkit.load_image(p)
        for retina in (True, False):
            a = sdk.segment_instances(img, retina_masks=retina)
            b = dep.segment_instances(img, retina_masks=retina)
            worst = min(worst, assert_same_instances(a, b))
            n += len(b)
    assert n >= 10, n  # real objects were found, so the comparison means something


@pytest.mark.real_weights
@pytest.mark.slow
def test_real_seg_weights_int8_deployed_matches_the_sdk_int8_path(tmp_path: Path) -> None:
    """The INT8 artifact against ``load("yolo-seg", precision="int8")`` on the same cached network."""
    wdir, ddir = os.environ.get("VISIONKIT_WEIGHTS"), os.environ.get("VISIONKIT_DATA")
    if not wdir or not ddir:
        pytest.skip("set VISIONKIT_WEIGHTS and VISIONKIT_DATA (e.g. ../shared/data) for real-weight tests")
    weights = Path(wdir.split(os.pathsep)[0]) / "yolov8n-seg-dq.pt"
    images = sorted((Path(ddir) / "coco-mini" / "images").glob("*.jpg"))[4:10]
    if not weights.exists() or not images:
        pytest.skip("yolov8n-seg-dq.pt or coco-mini missing")
    reg = _registry()
    ropts = {"cache_dir": tmp_path / "cache", "threads": 2, "calib_images": 8}
    be = visionkit.load("yolo-seg", weights=str(weights), imgsz=320, registry=reg)
    assert export(be, precision="int8", output=tmp_path / "seg.onnx", **ropts)["deploy"]["artifact"]
    sdk = visionkit.load(
        "yolo-seg", weights=str(weights), imgsz=320, precision="int8", runtime_options=ropts, registry=reg
    )
    assert sdk.runtime["cache_hit"], "the SDK's int8 path and the artifact share one network"
    dep = visionkit.load(str(tmp_path / "seg.onnx"), registry=reg, threads=2)
    assert dep.runtime["precision"] == "int8"
    n = 0
    for p in images:
        img = visionkit.load_image(p)
        a, b = sdk.segment_instances(img), dep.segment_instances(img)
        assert_same_instances(a, b)
        n += len(b)
    assert n >= 10, n


class TestDeployedSegmenterDetects(DetectorConformance):
    """The deployed segmenter honours the detector contract (visionkit.testing)."""

    @pytest.fixture
    def backend(self, seg_artifact: tuple[Path, Any]) -> Any:
        return visionkit.load(str(seg_artifact[0]), registry=_registry())


class TestDeployedSegmenterSegments(InstanceSegmenterConformance):
    """... and the instance-segmenter contract."""

    @pytest.fixture
    def backend(self, seg_artifact: tuple[Path, Any]) -> Any:
        return visionkit.load(str(seg_artifact[0]), registry=_registry())
