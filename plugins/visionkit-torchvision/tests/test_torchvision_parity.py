"""Parity: visionkit's torchvision backends return exactly what the torchvision model returns.

The reference is the torchvision model built directly (``torchvision.models.get_model``) with the
same seed and configured through torchvision's own constructor arguments (``box_score_thresh`` ...),
fed the weights' own ``transforms()``. Random weights stand in for the official checkpoints, which
cannot be downloaded here; a ``.pth`` round trip covers loading real files. Tolerance: exact equality
(same network, same inputs, same CPU kernels), masks after the same 0.5 threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import get_model, get_model_weights

import visionkit
from visionkit.testing import make_test_image

# Small inputs and few proposals keep two-stage models fast on 2 cores; a very low score threshold
# makes random-weight models return boxes.
SCORE, NMS, PER_IMAGE, PROPOSALS, MIN_SIZE, MAX_SIZE = 0.001, 0.5, 12, 40, 96, 128

DETECTORS = [
    # backend name, arch, torchvision constructor kwargs matching the visionkit options below
    ("maskrcnn", "maskrcnn_resnet50_fpn_v2", "rcnn"),
    ("fasterrcnn", "fasterrcnn_resnet50_fpn_v2", "rcnn"),
    ("fasterrcnn-mobilenet", "fasterrcnn_mobilenet_v3_large_fpn", "rcnn"),
    ("retinanet", "retinanet_resnet50_fpn_v2", "one-stage"),
    ("ssdlite", "ssdlite320_mobilenet_v3_large", "ssd"),
]


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.copy()).permute(2, 0, 1)


def _detector_kwargs(kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(torchvision constructor kwargs, equivalent visionkit options)."""
    options: dict[str, Any] = {
        "score_threshold": SCORE,
        "nms_threshold": NMS,
        "detections_per_image": PER_IMAGE,
    }
    if kind == "rcnn":
        ref = {
            "box_score_thresh": SCORE,
            "box_nms_thresh": NMS,
            "box_detections_per_img": PER_IMAGE,
            "rpn_post_nms_top_n_test": PROPOSALS,
            "min_size": MIN_SIZE,
            "max_size": MAX_SIZE,
        }
        return ref, {**options, "proposals": PROPOSALS, "min_size": MIN_SIZE, "max_size": MAX_SIZE}
    ref = {"score_thresh": SCORE, "nms_thresh": NMS, "detections_per_img": PER_IMAGE}
    if kind == "one-stage":
        ref.update(min_size=MIN_SIZE, max_size=MAX_SIZE)
        options.update(min_size=MIN_SIZE, max_size=MAX_SIZE)
    return ref, options


def _reference_detections(
    model: torch.nn.Module, arch: str, images: list[np.ndarray]
) -> list[dict[str, Any]]:
    transform = get_model_weights(arch).DEFAULT.transforms()
    with torch.no_grad():
        return model.eval()([transform(_chw(im)) for im in images])  # type: ignore[no-any-return]


def _assert_same_detections(ours: list[Any], ref: list[dict[str, Any]], masks: bool) -> None:
    assert len(ours) == len(ref)
    for result, expected in zip(ours, ref, strict=True):
        assert len(result) > 0, "random weights at a very low threshold must give boxes to compare"
        np.testing.assert_array_equal(result.xyxy, expected["boxes"].numpy())
        np.testing.assert_array_equal(result.confidence, expected["scores"].numpy())
        np.testing.assert_array_equal(result.class_id, expected["labels"].numpy())
        categories = get_model_weights("maskrcnn_resnet50_fpn_v2").DEFAULT.meta["categories"]
        assert list(result.class_name) == [categories[i] for i in expected["labels"].tolist()]
        if masks:
            np.testing.assert_array_equal(result.mask, (expected["masks"][:, 0] > 0.5).numpy())
            assert result.mask.any(), "thresholded masks should not all be empty"


IMAGES = [make_test_image(120, 150, seed=3), make_test_image(96, 80, seed=4)]  # two sizes, two aspect ratios


@dataclass
class DetectorCase:
    name: str
    arch: str
    ref: torch.nn.Module
    backend: Any
    expected: list[dict[str, Any]]


@pytest.fixture(scope="module", params=[d[0] for d in DETECTORS])
def detector_case(request: pytest.FixtureRequest) -> DetectorCase:
    """The torchvision model built directly and the visionkit backend, same seed, and the reference output."""
    name, arch, kind = next(d for d in DETECTORS if d[0] == request.param)
    ref_kwargs, options = _detector_kwargs(kind)
    torch.manual_seed(0)
    ref = get_model(arch, weights=None, weights_backbone=None, num_classes=91, **ref_kwargs).eval()
    torch.manual_seed(0)
    backend = visionkit.load(name, weights=None, **options)
    return DetectorCase(name, arch, ref, backend, _reference_detections(ref, arch, IMAGES))


def test_detector_builds_the_same_network(detector_case: DetectorCase) -> None:
    ours = detector_case.backend.model.state_dict()
    for key, value in detector_case.ref.state_dict().items():  # same seed, same builder: same network
        assert torch.equal(value, ours[key]), key


def test_detector_per_call_options(detector_case: DetectorCase) -> None:
    """Per-call options set the same torchvision knobs; torchvision sorts kept boxes by score, so a cap keeps the first k."""
    case = detector_case
    unique = np.unique(case.expected[0]["scores"].numpy())
    cut = float(np.median(unique)) if len(unique) > 1 else SCORE  # some random heads score every box alike
    task = "segment_instances" if case.name == "maskrcnn" else "detect"
    extra = {"mask_threshold": 0.9} if case.name == "maskrcnn" else {}
    ours = case.backend.predict(IMAGES, task, score_threshold=cut, detections_per_image=3, **extra)
    for result, exp in zip(ours, case.expected, strict=True):
        keep = torch.nonzero(exp["scores"] > cut)[
            :3, 0
        ]  # torchvision keeps scores strictly above the threshold
        np.testing.assert_array_equal(result.confidence, exp["scores"][keep].numpy())
        np.testing.assert_array_equal(result.xyxy, exp["boxes"][keep].numpy())
        if extra:
            np.testing.assert_array_equal(result.mask, (exp["masks"][keep, 0] > 0.9).numpy())
    assert 0 < len(ours[0]) <= 3


def test_detector_parity_random_init(detector_case: DetectorCase) -> None:
    # Runs after the per-call test on the same backend: per-call settings must not have stuck.
    case = detector_case
    task = "segment_instances" if case.name == "maskrcnn" else "detect"
    _assert_same_detections(case.backend.predict(IMAGES, task), case.expected, masks=case.name == "maskrcnn")
    if case.name == "maskrcnn":  # the Detector view of Mask R-CNN: the same boxes, no masks
        dets = case.backend.detect(IMAGES)
        assert type(dets[0]) is visionkit.Detections
        _assert_same_detections(dets, case.expected, masks=False)


@pytest.mark.parametrize("detector_case", ["maskrcnn"], indirect=True)
def test_maskrcnn_state_dict_round_trip(tmp_path: Path, detector_case: DetectorCase) -> None:
    """A .pth in torchvision's layout (model.state_dict()) loads with torch.load(weights_only=True)."""
    _, options = _detector_kwargs("rcnn")
    path = tmp_path / "my_maskrcnn.pth"
    torch.save(detector_case.ref.state_dict(), path)
    torch.manual_seed(123)  # a different seed: everything must come from the file
    backend = visionkit.load("maskrcnn", weights=str(path), **options)
    assert backend.weights_source == str(path)
    _assert_same_detections(backend.segment_instances(IMAGES), detector_case.expected, masks=True)


# -- semantic segmentation ------------------------------------------------------------------------
SEGMENTERS = [("lraspp", "lraspp_mobilenet_v3_large"), ("deeplabv3", "deeplabv3_resnet50")]


def _reference_label_maps(
    model: torch.nn.Module, arch: str, images: list[np.ndarray], resize: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    transform = get_model_weights(arch).DEFAULT.transforms(resize_size=resize)
    out = []
    with torch.no_grad():
        for im in images:
            logits = model.eval()(transform(_chw(im))[None])["out"]
            up = F.interpolate(logits, size=im.shape[:2], mode="bilinear", align_corners=False)[0]
            out.append((up.argmax(0).numpy().astype(np.int32), up.softmax(0).numpy()))
    return out


@pytest.mark.parametrize(("name", "arch"), SEGMENTERS, ids=[s[0] for s in SEGMENTERS])
def test_semantic_parity_random_init(name: str, arch: str) -> None:
    torch.manual_seed(0)
    ref = get_model(arch, weights=None, weights_backbone=None, num_classes=21).eval()
    torch.manual_seed(0)
    backend = visionkit.load(name, weights=None, resize_size=64, return_scores=True)
    expected = _reference_label_maps(ref, arch, IMAGES, 64)
    results = backend.segment_semantic(IMAGES)  # two aspect ratios: one forward per network input size
    for result, (labels, probs) in zip(results, expected, strict=True):
        np.testing.assert_array_equal(result.label_map, labels)
        np.testing.assert_allclose(result.scores, probs, rtol=0, atol=1e-6)
    same_size = [IMAGES[0], IMAGES[0][:, ::-1].copy()]  # equal sizes: one stacked (2, 3, h, w) batch
    batched = backend.segment_semantic(same_size, return_scores=False)
    for result, (labels, _) in zip(batched, _reference_label_maps(ref, arch, same_size, 64), strict=True):
        assert result.scores is None
        assert np.mean(result.label_map != labels) < 1e-3  # batched convolutions: float noise at ties only


def test_deeplabv3_state_dict_with_aux_head(tmp_path: Path) -> None:
    """Official DeepLabV3 checkpoints carry the auxiliary head; a .pth with it loads strictly."""
    torch.manual_seed(5)
    ref = get_model("deeplabv3_resnet50", weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    path = tmp_path / "deeplab_aux.pth"
    torch.save(ref.state_dict(), path)
    backend = visionkit.load("deeplabv3", weights=path, resize_size=64)
    labels, _ = _reference_label_maps(ref, "deeplabv3_resnet50", IMAGES[:1], 64)[0]
    np.testing.assert_array_equal(backend.segment_semantic(IMAGES[0]).label_map, labels)


# -- classification -------------------------------------------------------------------------------
CLASSIFIERS = [
    ("resnet50", "resnet50", {}),
    ("mobilenet_v3_large", "mobilenet_v3_large", {}),
    ("tv-classifier", "squeezenet1_1", {"arch": "squeezenet1_1"}),
]


@pytest.mark.parametrize(("name", "arch", "extra"), CLASSIFIERS, ids=[c[0] for c in CLASSIFIERS])
def test_classifier_parity_random_init(name: str, arch: str, extra: dict[str, Any]) -> None:
    torch.manual_seed(0)
    ref = get_model(arch, weights=None, num_classes=1000).eval()
    torch.manual_seed(0)
    backend = visionkit.load(name, weights=None, resize_size=72, crop_size=64, top_k=5, **extra)
    transform = get_model_weights(arch).DEFAULT.transforms(resize_size=72, crop_size=64)
    with torch.no_grad():
        logits = ref(torch.stack([transform(_chw(im)) for im in IMAGES]))
    top = logits.softmax(1).topk(5, dim=1)
    categories = get_model_weights(arch).DEFAULT.meta["categories"]
    for result, values, indices in zip(backend.classify(IMAGES), top.values, top.indices, strict=True):
        np.testing.assert_array_equal(result.class_id, indices.numpy())
        np.testing.assert_array_equal(result.confidence, values.numpy())
        assert list(result.class_name) == [categories[i] for i in indices.tolist()]
    assert len(backend.classify(IMAGES[0], top_k=2)) == 2


def test_generic_detector_and_segmenter_parity() -> None:
    """Any torchvision model by name goes through the same code path."""
    torch.manual_seed(0)
    ref = get_model(
        "fasterrcnn_mobilenet_v3_large_320_fpn", weights=None, weights_backbone=None, box_score_thresh=SCORE
    ).eval()
    torch.manual_seed(0)
    det = visionkit.load(
        "tv-detector", arch="fasterrcnn_mobilenet_v3_large_320_fpn", weights=None, score_threshold=SCORE
    )
    expected = _reference_detections(ref, "fasterrcnn_mobilenet_v3_large_320_fpn", IMAGES)
    _assert_same_detections(det.detect(IMAGES), expected, masks=False)

    torch.manual_seed(0)
    seg_ref = get_model("deeplabv3_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=21)
    torch.manual_seed(0)
    seg = visionkit.load("tv-segmenter", arch="deeplabv3_mobilenet_v3_large", weights=None, resize_size=64)
    labels, _ = _reference_label_maps(seg_ref, "deeplabv3_mobilenet_v3_large", IMAGES[:1], 64)[0]
    np.testing.assert_array_equal(seg.segment_semantic(IMAGES[0]).label_map, labels)
