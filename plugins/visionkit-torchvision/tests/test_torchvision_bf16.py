"""``precision="bf16"``: autocast over the network, float32 where numbers are sensitive, close to fp32.

Each test loads the same random weights twice (same seed), fp32 and bf16, and compares on the same
images. Tolerances (random weights move further under bf16 than trained ones: no decisive features):

* classifier: same top-1, probabilities within 0.01;
* semantic: label maps agree on at least 97 % of pixels;
* Mask R-CNN: at least 4 of fp32's 5 best boxes have a bf16 box with IoU >= 0.9, scores within 0.05.

The tail checks fail when the float32 tail is removed: under plain autocast the logits and boxes come
out of bf16 layers, so every value sits on the bf16 grid (8 significant bits), or the dtype is bf16.
Inputs are tiny: this CPU has no bf16 instructions and runs bf16 convolutions several times slower
than fp32.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

import visionkit
from visionkit import Task
from visionkit.testing import make_test_image

DETECTION = {
    "min_size": 48,
    "max_size": 64,
    "proposals": 20,
    "detections_per_image": 10,
    "score_threshold": 0.001,
}


@functools.cache
def _pair(name: str, **options: Any) -> tuple[Any, Any]:
    """The backend loaded in fp32 and in bf16 with the same random weights."""
    out = []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        out.append(visionkit.load(name, weights=None, precision=precision, **options))
    return out[0], out[1]


@pytest.fixture(scope="module", autouse=True)
def _free_models() -> Any:
    yield
    _pair.cache_clear()


def _on_bf16_grid(x: torch.Tensor) -> bool:
    """Every value exactly representable in bf16 (what a bf16 layer's output is, cast to float32)."""
    x = torch.as_tensor(x).float()
    return bool((x == x.bfloat16().float()).all())


@pytest.fixture
def images() -> list[np.ndarray]:
    return [make_test_image(60, 80, seed=3), make_test_image(64, 48, seed=4)]


def test_bf16_is_registered_and_reported() -> None:
    spec = visionkit.Registry().get("resnet50")
    assert "bf16" in spec.precisions
    fp32, bf16 = _pair("tv-classifier", arch="resnet18", resize_size=40, crop_size=32)
    assert (bf16.precision, bf16.runtime, bf16.runtime_name) == ("bf16", None, "torch")
    assert fp32.float32_tail == [] and bf16.float32_tail == ["fc (float32)"]
    # channels-last under bf16 only: the fp32 path keeps torchvision's own layout (exact parity)
    assert bf16.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert fp32.model.conv1.weight.is_contiguous()


def _run(backend: Any, images: list[np.ndarray], task: Task) -> tuple[Any, list[Any]]:
    """The raw network outputs and the results, from one forward."""
    batch = backend.preprocess(images, backend.options)
    raw = backend.forward(batch.inputs)
    return raw, backend.postprocess(raw, batch, task)


def test_classifier_bf16_matches_fp32(images: list[np.ndarray]) -> None:
    fp32, bf16 = _pair("tv-classifier", arch="resnet18", resize_size=40, crop_size=32)
    logits, results = _run(bf16, images, Task.CLASSIFY)
    for a, b in zip(fp32.classify(images), results, strict=True):
        assert a.class_id[0] == b.class_id[0]
        np.testing.assert_allclose(b.confidence, a.confidence, atol=0.01)
    # the tail: the logits come from a float32 layer (a cast of bf16 logits would stay on the grid)
    assert logits.dtype == torch.float32 and not _on_bf16_grid(logits)


def test_semantic_bf16_matches_fp32(images: list[np.ndarray]) -> None:
    fp32, bf16 = _pair("lraspp", resize_size=32, return_scores=True)
    logits, results = _run(bf16, images, Task.SEGMENT_SEMANTIC)
    for a, b in zip(fp32.segment_semantic(images), results, strict=True):
        assert (a.label_map == b.label_map).mean() >= 0.97
        assert b.scores is not None and b.scores.dtype == np.float32
    assert logits.dtype == torch.float32 and not _on_bf16_grid(logits)


def test_maskrcnn_bf16_boxes_stay_close_and_decode_in_float32() -> None:
    image = [make_test_image(60, 80, seed=3)]
    fp32, bf16 = _pair("maskrcnn", **DETECTION)
    (out,), (b,) = _run(bf16, image, Task.SEGMENT_INSTANCES)
    (a,) = fp32.segment_instances(image)
    assert len(a) >= 5 and len(b) >= 5
    iou = box_iou(torch.tensor(a.xyxy[:5]), torch.tensor(b.xyxy)).max(dim=1)
    assert int((iou.values >= 0.9).sum()) >= 4, iou.values
    matched = iou.values >= 0.9
    np.testing.assert_allclose(
        b.confidence[iou.indices[matched].numpy()], a.confidence[:5][matched.numpy()], atol=0.05
    )
    # the tail: anchors + deltas decoded in float32 give boxes off the bf16 grid (at 40-80 px a bf16
    # coordinate moves in steps of 0.25-0.5 px); the soft masks were pasted from float32 logits
    assert out["boxes"].dtype == out["scores"].dtype == out["masks"].dtype == torch.float32
    assert not _on_bf16_grid(out["boxes"]) and not _on_bf16_grid(out["masks"])
