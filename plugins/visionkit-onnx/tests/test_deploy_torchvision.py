"""torchvision classifier and semantic-segmenter deploy artifacts, random init, offline (issue 14)."""

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
from visionkit.testing import (
    ClassifierConformance,
    SemanticSegmenterConformance,
)

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("visionkit_torchvision") is None
        or importlib.util.find_spec("torchvision") is None,
        reason="visionkit-torchvision (and torchvision) not installed",
    ),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

HEAVY = ("torch", "torchvision", "ultralytics", "transformers", "segment_anything")
SHAPES = [(48, 64, 3), (90, 50, 3), (64, 64, 3), (120, 200, 3)]


def _registry() -> visionkit.Registry:
    import visionkit_onnx
    import visionkit_torchvision

    return visionkit.Registry(entry_points=[], plugins=[visionkit_torchvision, visionkit_onnx])


def _perturbed(name: str, folder: Path, scale: float, only: str = "", **options: Any) -> str:
    """A checkpoint of the random-init model with jittered weights (random heads tie every output)."""
    import torch

    torch.manual_seed(0)
    model = visionkit.load(name, weights=None, registry=_registry(), **options).model
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.startswith(only):
                p.add_(torch.randn(p.shape, generator=gen) * scale)
    path = folder / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return str(path)


def _deploy(name: str, folder: Path, options: dict[str, Any]) -> tuple[Path, Any]:
    """The artifact, and the SDK path (float backend + its network in ONNX Runtime) on the same file."""
    backend = visionkit.load(name, registry=_registry(), **options)
    report = export(backend, precision="fp32", output=folder / f"{name}.onnx", cache_dir=folder / "c")
    assert report["deploy"] == {"artifact": True, "reason": None}
    sdk = wrap(backend, precision="fp32", cache_dir=folder / "c")  # the exported backend, now on ORT
    assert sdk.runtime["cache_hit"], "the SDK path and the artifact share one network"
    return folder / f"{name}.onnx", sdk


def _no_heavy_imports(code: str) -> str:
    probe = f"\nimport sys\nprint('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
    env = {**os.environ, "VISIONKIT_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code + probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    tmp = tmp_path_factory.mktemp("deploy-tv-cls")
    options: dict[str, Any] = {"arch": "resnet18", "crop_size": 64, "resize_size": 72, "top_k": 3}
    options["weights"] = _perturbed("tv-classifier", tmp, 0.5, only="fc", **options)
    return _deploy("tv-classifier", tmp, options)


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    tmp = tmp_path_factory.mktemp("deploy-tv-seg")
    options: dict[str, Any] = {
        "arch": "lraspp_mobilenet_v3_large",
        "resize_size": 64,
        "categories": ("background", "a", "b", "c"),
    }
    options["weights"] = _perturbed("tv-segmenter", tmp, 0.3, **options)
    return _deploy("tv-segmenter", tmp, options)


def test_torchvision_classifier_artifact_matches_the_sdk_path(classifier: tuple[Path, Any]) -> None:
    path, sdk = classifier
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["visionkit"])
    assert meta["kind"] == "image-classify" and meta["output"]["decoding"] == "logits"
    assert meta["input"]["crop"] == [64, 64] and meta["input"]["resize_to"] == 72
    dep = visionkit.load(str(path), registry=_registry())
    rng = np.random.default_rng(2)
    for shape in SHAPES:
        img = rng.integers(0, 255, shape, np.uint8)
        a, b = sdk.classify(img), dep.classify(img)
        np.testing.assert_array_equal(a.class_id, b.class_id)
        # torch's float antialiased resize is reproduced to one level of 255 on <= 0.05 % of pixels,
        # which this jittered random head turns into up to 1.4e-4 in probability (measured)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=5e-4)
        assert b.metadata.label_space == a.metadata.label_space == "imagenet-1k"
    assert len(dep.classify(img, top_k=1)) == 1


def test_torchvision_semantic_artifact_matches_the_sdk_path(segmenter: tuple[Path, Any]) -> None:
    path, sdk = segmenter
    dep = visionkit.load(str(path), registry=_registry())
    assert dep.tasks == (visionkit.Task.SEGMENT_SEMANTIC,)
    rng = np.random.default_rng(2)
    labels = set()
    for shape in SHAPES:
        img = rng.integers(0, 255, shape, np.uint8)
        a, b = sdk.segment_semantic(img, return_scores=True), dep.segment_semantic(img, return_scores=True)
        assert a.label_map.shape == b.label_map.shape == shape[:2]
        assert np.mean(a.label_map != b.label_map) < 1e-3
        # this strongly jittered net saturates its softmax, so an input pixel one level apart (<= 0.05 %)
        # can flip a near-tied output pixel: count pixels, not values
        assert np.mean(np.abs(a.scores - b.scores).max(0) > 1e-4) < 1e-3
        assert b.class_names == a.class_names
        labels |= set(np.unique(a.label_map).tolist())
    assert dep.segment_semantic(img).scores is None
    assert len(labels) > 1, "the jittered head must label pixels differently"


def test_torchvision_deploy_processes_import_no_torch(
    classifier: tuple[Path, Any], segmenter: tuple[Path, Any]
) -> None:
    out = _no_heavy_imports(
        "import numpy as np, visionkit\n"
        f"c = visionkit.load({str(classifier[0])!r}).classify(np.zeros((50, 70, 3), np.uint8))\n"
        f"s = visionkit.load({str(segmenter[0])!r}).segment_semantic(np.zeros((50, 70, 3), np.uint8))\n"
        "print(len(c), s.label_map.shape)"
    )
    assert "3 (50, 70)" in out, out


DETECTION = {"score_threshold": 0.0, "detections_per_image": 8, "categories": ("__background__", "a", "b")}


@pytest.fixture(scope="module")
def maskrcnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    import torch

    torch.manual_seed(0)
    options = {**DETECTION, "min_size": 160, "max_size": 224, "proposals": 40, "weights": None}
    return _deploy("maskrcnn", tmp_path_factory.mktemp("deploy-tv-mrcnn"), options)


def test_maskrcnn_fp32_artifact_matches_the_sdk_path(maskrcnn: tuple[Path, Any]) -> None:
    """Mask R-CNN's graph holds its own post-processing (NMS, box rescaling, mask pasting)."""
    path, sdk = maskrcnn
    dep = visionkit.load(str(path), registry=_registry())
    assert dep.tasks == (visionkit.Task.DETECT, visionkit.Task.SEGMENT_INSTANCES)
    assert dep.runtime["kind"] == "tv-detect"
    from visionkit.testing import make_test_image

    # a 3x500 image is edge-padded first, as the backend does (its resize would give a 0-pixel side)
    for img in (
        make_test_image(200, 240, seed=1),
        make_test_image(180, 160, seed=2),
        make_test_image(3, 500, seed=3),
    ):
        a, b = sdk.segment_instances(img), dep.segment_instances(img)
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a.class_id, b.class_id)
        # measured: identical boxes, scores and masks (one graph, the same float input)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)
        ious = (a.mask & b.mask).sum((1, 2)) / np.maximum((a.mask | b.mask).sum((1, 2)), 1)
        assert ious.min() >= 0.98, ious
    d = dep.detect(img, score_threshold=0.5, detections_per_image=2)  # stricter per call: applied here
    assert type(d) is visionkit.Detections and len(d) <= 2 and (d.confidence > 0.5).all()
    with pytest.raises(visionkit.InvalidOptionError, match="baked in at export"):
        dep.detect(img, detections_per_image=50)
    out = _no_heavy_imports(
        "import numpy as np, visionkit\n"
        f"m = visionkit.load({str(path)!r}).segment_instances(np.full((60, 80, 3), 90, np.uint8))\n"
        "print(type(m).__name__, m.mask.shape[1:])"
    )
    assert "InstanceMasks (60, 80)" in out, out


class TestDeployedTorchvisionClassifier(ClassifierConformance):
    """A deployed torchvision classifier honours the classifier contract (visionkit.testing)."""

    @pytest.fixture
    def backend(self, classifier: tuple[Path, Any]) -> Any:
        return visionkit.load(str(classifier[0]), registry=_registry())


class TestDeployedTorchvisionSemantic(SemanticSegmenterConformance):
    """A deployed torchvision semantic segmenter honours its contract."""

    @pytest.fixture
    def backend(self, segmenter: tuple[Path, Any]) -> Any:
        return visionkit.load(str(segmenter[0]), registry=_registry())
