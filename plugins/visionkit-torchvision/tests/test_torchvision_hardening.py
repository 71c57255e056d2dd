"""Hardening of the torchvision backends: limits, extreme aspect ratios, safe loading, threads."""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import visionkit
from visionkit import (
    BackendError,
    Classifications,
    InstanceMasks,
    InvalidOptionError,
    LimitExceededError,
    SemanticMask,
    UnsafeWeightsError,
)
from visionkit.testing import make_test_image

SMALL = {"min_size": 64, "max_size": 96, "proposals": 30, "detections_per_image": 8, "score_threshold": 0.0}


@functools.cache
def _load(name: str, **options: Any) -> Any:
    torch.manual_seed(0)
    return visionkit.load(name, weights=None, **options)


@pytest.fixture(scope="module", autouse=True)
def _free_models() -> Any:
    yield
    _load.cache_clear()


# -- limits -------------------------------------------------------------------------------------------
def test_size_options_are_limited_at_load() -> None:
    with pytest.raises(
        LimitExceededError, match=r"max_imgsz=4096 exceeds the limit of 2048.*max_size"
    ) as info:
        visionkit.load("fasterrcnn-mobilenet", weights=None, max_size=4096)
    assert (info.value.limit, info.value.value, info.value.maximum) == ("max_imgsz", 4096, 2048)
    with pytest.raises(LimitExceededError, match="max_imgsz"):
        visionkit.load("lraspp", weights=None, resize_size=5000)
    with pytest.raises(LimitExceededError, match="max_imgsz=300 exceeds the limit of 256"):
        visionkit.load("resnet50", weights=None, crop_size=300, max_imgsz=256)
    with pytest.raises(LimitExceededError, match="max_detections=1000 exceeds the limit of 300"):
        visionkit.load("fasterrcnn-mobilenet", weights=None, detections_per_image=1000)


def test_size_options_are_limited_per_call() -> None:
    det = _load("fasterrcnn-mobilenet", **SMALL)
    image = make_test_image(64, 80, seed=0)
    for overrides, limit in [
        ({"min_size": 3000}, "max_imgsz"),
        ({"max_size": 2049}, "max_imgsz"),
        ({"max_imgsz": 4096}, "max_imgsz"),  # a call may lower a limit, never raise it
        ({"detections_per_image": 301}, "max_detections"),
    ]:
        with pytest.raises(LimitExceededError) as info:
            det.detect(image, **overrides)
        assert info.value.limit == limit, overrides
    assert det.detect(image, min_size=32, max_size=48) is not None  # a smaller size is fine
    seg = _load("lraspp", resize_size=64)
    with pytest.raises(LimitExceededError, match="max_imgsz=3000"):
        seg.segment_semantic(image, resize_size=3000)


def test_trust_pickle_is_load_time_only() -> None:
    det = _load("fasterrcnn-mobilenet", **SMALL)
    with pytest.raises(InvalidOptionError, match=r"'trust_pickle' .* can only be given at load time"):
        det.detect(make_test_image(64, 80, seed=0), trust_pickle=True)


# -- extreme aspect ratios ----------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    """One intra-op thread: on a shared 2-core runner OpenMP threads only contend (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("maskrcnn", (1, 1000)),
        ("maskrcnn", (3000, 2)),
        ("fasterrcnn-mobilenet", (1, 1000)),
        ("fasterrcnn-mobilenet", (3000, 2)),
        ("fasterrcnn-mobilenet", (1, 1)),
    ],
)
def test_thin_images_give_valid_detections(name: str, shape: tuple[int, int]) -> None:
    backend = _load(name, **SMALL)
    image = np.full((*shape, 3), 120, np.uint8)
    task = backend.tasks[-1]
    res = backend.predict(image, task)
    h, w = shape
    assert res.metadata.image_shape == shape
    assert np.all(res.xyxy[:, 2] <= w) and np.all(res.xyxy[:, 3] <= h) and np.all(res.xyxy >= 0)
    if isinstance(res, InstanceMasks):
        assert res.mask.shape[1:] == shape
    if name != "maskrcnn":  # the same image in a batch with a normal one: each keeps its own size
        both = backend.predict([image, make_test_image(64, 80, seed=1)], task)
        assert both[0].metadata.image_shape == shape


def test_thin_padding_leaves_normal_images_alone() -> None:
    det = _load("fasterrcnn-mobilenet", **SMALL)
    assert det._thin_padding(np.zeros((480, 640, 3), np.uint8)) == (0, 0)
    assert det._thin_padding(np.zeros((3000, 2, 3), np.uint8)) == (0, 31)  # ceil(3000 / 96) + 1 = 33 wide
    assert det._thin_padding(np.zeros((1, 1000, 3), np.uint8)) == (11, 0)


@pytest.mark.parametrize("shape", [(1, 5000), (3000, 2)])
def test_elongated_images_are_fitted_into_max_imgsz(shape: tuple[int, int]) -> None:
    """The preset resizes the short side: a 3000x2 image would become 96 000 pixels long at 64."""
    seg = _load("lraspp", resize_size=64, max_imgsz=512)
    image = np.full((*shape, 3), 120, np.uint8)
    batch = seg.preprocess([image], seg.options)
    assert max(batch.inputs[0].shape[-2:]) == 512
    res = seg.segment_semantic(image)
    assert isinstance(res, SemanticMask) and res.label_map.shape == shape
    cls = _load("resnet50", resize_size=72, crop_size=64, max_imgsz=512)
    assert isinstance(cls.classify(image), Classifications)


def test_fitting_keeps_the_preset_for_ordinary_images() -> None:
    from visionkit_torchvision._backend import _fit_resize

    seg = _load("lraspp", resize_size=64)
    transform = seg.transform(seg.options)
    assert _fit_resize(transform, np.zeros((120, 150, 3), np.uint8), 2048) is transform
    fitted = _fit_resize(transform, np.zeros((10, 2000, 3), np.uint8), 2048)
    assert fitted.resize_size == [10, 2048] and transform.resize_size == [64]


# -- safe loading -------------------------------------------------------------------------------------
class _Marker:
    """Unpickling this creates a file: stands for a checkpoint that runs code when loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (str(self.path), "w"))


def test_malicious_pickle_does_not_run_by_default(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"backbone.weight": _Marker(marker)}, path)
    with pytest.raises(UnsafeWeightsError, match=r"GLOBAL .*open.*trust_pickle=True \(CLI: --trust-pickle\)"):
        visionkit.load("lraspp", weights=path)
    assert not marker.exists(), "loading ran code from the pickle"
    with pytest.raises(BackendError):  # opted in: it unpickles (runs the code), then finds no state dict
        visionkit.load("lraspp", weights=path, trust_pickle=True)
    assert marker.exists()


def test_trusted_pickled_model_loads(tmp_path: Path) -> None:
    seg = _load("lraspp", resize_size=64)
    path = tmp_path / "whole_model.pth"
    torch.save(seg.model, path)  # the whole nn.Module, pickled
    with pytest.raises(UnsafeWeightsError, match="trust_pickle=True"):
        visionkit.load("lraspp", weights=path, resize_size=64)
    trusted = visionkit.load("lraspp", weights=path, resize_size=64, trust_pickle=True)
    image = make_test_image(64, 80, seed=0)
    assert trusted.segment_semantic(image) == seg.segment_semantic(image)


# -- threads ------------------------------------------------------------------------------------------
def test_detector_from_threads_equals_sequential() -> None:
    """Per-call options live on the shared torchvision model (score/NMS knobs, resize sizes)."""
    det = _load("fasterrcnn-mobilenet", **SMALL)
    images = [make_test_image(64, 80, seed=s) for s in range(2)]
    calls = [
        {"score_threshold": 0.0, "detections_per_image": 8, "min_size": 64},
        {"score_threshold": 0.3, "detections_per_image": 2, "min_size": 48},
    ]
    cases = [(i % 2, i // 2 % 2) for i in range(16)]
    want = {c: det.detect(images[c[0]], **calls[c[1]]) for c in set(cases)}
    results: list[Any] = [None] * len(cases)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(k: int) -> None:
        start.wait()
        for i in range(k, len(cases), 4):
            try:
                image, call = cases[i]
                results[i] = det.detect(images[image], **calls[call])
            except BaseException as exc:  # reported below
                errors.append(exc)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    assert not errors, errors
    assert results == [want[c] for c in cases]
