"""Hardening of the transformers backends: limits, thin images, safe loading, threads."""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from visionkit import (
    Detections,
    InstanceMasks,
    InvalidOptionError,
    LimitExceededError,
    SemanticMask,
    UnsafeWeightsError,
)

from .conftest import decisive_classes, hf_image, load


@functools.cache
def _tiny(name: str, **options: Any) -> Any:
    torch.manual_seed(0)
    return load(name, weights=None, **options)


# -- limits -------------------------------------------------------------------------------------------
def test_sizes_are_limited() -> None:
    with pytest.raises(LimitExceededError, match="max_imgsz=4096 exceeds the limit of 2048") as info:
        load("detr", weights=None, shortest_edge=4096)
    assert (info.value.limit, info.value.value) == ("max_imgsz", 4096)
    # The processor's own sizes count too: the tiny DETR processor resizes up to 160 pixels.
    with pytest.raises(LimitExceededError, match="max_imgsz=160 exceeds the limit of 128"):
        load("detr", weights=None, max_imgsz=128)
    rtdetr = _tiny("rtdetr")
    image = hf_image(60, 90, 0)
    for overrides in ({"image_size": 5000}, {"image_size": (64, 3000)}, {"max_imgsz": 4096}):
        with pytest.raises(LimitExceededError, match="max_imgsz"):
            rtdetr.detect(image, **overrides)
    assert isinstance(rtdetr.detect(image, image_size=64), Detections)


def test_max_detections_keeps_the_best_in_query_order() -> None:
    detr = decisive_classes(_tiny("detr", threshold=0.0), no_object=-10.0)
    image = hf_image(60, 90, 0)
    everything = detr.detect(image)
    assert len(everything) == 12  # one per query of the tiny model
    top = detr.detect(image, max_detections=3)
    best = np.sort(np.argsort(-everything.confidence, kind="stable")[:3])
    np.testing.assert_array_equal(top.confidence, everything.confidence[best])
    np.testing.assert_array_equal(top.xyxy, everything.xyxy[best])
    with pytest.raises(LimitExceededError, match="max_detections"):
        detr.detect(image, max_detections=301)


def test_panoptic_max_detections_keeps_the_best() -> None:
    pan = _tiny("detr-panoptic")
    image = hf_image(4, 6, 0)
    seg = torch.tensor([[1, 1, 2, 2, 3, 3]] * 4)
    info = [{"id": i, "label_id": i, "score": s} for i, s in ((1, 0.6), (2, 0.9), (3, 0.7))]
    result = {"segmentation": seg, "segments_info": info}
    assert pan._instances(result, image).confidence.tolist() == pytest.approx([0.9, 0.7, 0.6])  # best first
    top = pan._instances(result, image, max_detections=2)
    assert top.confidence.tolist() == pytest.approx([0.9, 0.7])  # the best two, best first
    assert top.mask[0, 0].tolist() == [False, False, True, True, False, False]
    with pytest.raises(LimitExceededError, match="max_detections"):
        pan.segment_instances(image, max_detections=301)


def test_load_time_options_are_refused_per_call() -> None:
    vit = _tiny("vit")
    for key, value in (("trust_pickle", True), ("trust_remote_code", True), ("config", {"num_labels": 2})):
        with pytest.raises(
            InvalidOptionError, match=f"Option '{key}' of backend 'vit' applies when the model"
        ):
            vit.classify(hf_image(32, 32, 0), **{key: value})


# -- thin images --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1000), (3000, 2), (1, 1)])
def test_detr_thin_images_give_valid_results(shape: tuple[int, int]) -> None:
    detr = decisive_classes(_tiny("detr", threshold=0.0), no_object=-10.0)
    image = np.full((*shape, 3), 120, np.uint8)
    dets = detr.detect(image)
    h, w = shape
    assert isinstance(dets, Detections) and dets.metadata.image_shape == shape
    assert np.all(dets.xyxy >= 0) and np.all(dets.xyxy[:, [0, 2]] <= w) and np.all(dets.xyxy[:, [1, 3]] <= h)
    both = detr.detect([image, hf_image(60, 90, 0)])  # in a batch with an ordinary image
    assert [d.metadata.image_shape for d in both] == [shape, (60, 90)]


@pytest.mark.parametrize("shape", [(1, 1000), (3000, 2)])
def test_panoptic_and_segformer_thin_images(shape: tuple[int, int]) -> None:
    image = np.full((*shape, 3), 120, np.uint8)
    pan = _tiny("detr-panoptic", threshold=0.0, mask_threshold=0.0, overlap_mask_area_threshold=0.0)
    inst = pan.segment_instances(image)
    assert isinstance(inst, InstanceMasks) and inst.mask.shape[1:] == shape
    assert pan.segment_semantic(image).label_map.shape == shape
    seg = _tiny("segformer").segment_semantic(image)
    assert isinstance(seg, SemanticMask) and seg.label_map.shape == shape


def test_thin_padding_leaves_ordinary_images_alone() -> None:
    detr = _tiny("detr")
    size = detr._effective_size(detr.options)  # tiny processor: shortest_edge 96, longest_edge 160
    assert detr._thin_padding(np.zeros((60, 90, 3), np.uint8), size) == (0, 0)
    assert detr._thin_padding(np.zeros((1, 1000, 3), np.uint8), size) == (7, 0)  # ceil(1000 / 160) + 1
    assert _tiny("rtdetr")._thin_padding(np.zeros((1, 1000, 3), np.uint8), {"height": 96, "width": 96}) == (
        0,
        0,
    )


# -- safe loading -------------------------------------------------------------------------------------
class _Marker:
    """Unpickling this creates a file: stands for a checkpoint that runs code when loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (str(self.path), "w"))


def _save_tiny(directory: Path) -> Any:
    backend = _tiny("detr")
    backend.model.save_pretrained(directory)
    backend.processor.save_pretrained(directory)
    return backend


def test_malicious_bin_does_not_run_by_default(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "ckpt"
    backend = _save_tiny(ckpt)
    (ckpt / "model.safetensors").unlink()
    state = dict(backend.model.state_dict())
    state["evil"] = _Marker(marker)
    torch.save(state, ckpt / "pytorch_model.bin")
    with pytest.raises(UnsafeWeightsError, match=r"GLOBAL .*open.*trust_pickle=True \(CLI: --trust-pickle\)"):
        load("detr", weights=ckpt)
    assert not marker.exists(), "loading ran code from the pickle"
    trusted = load("detr", weights=ckpt, trust_pickle=True)  # opted in: unpickled in full, tensors kept
    assert marker.exists(), "trust_pickle=True must really unpickle (it is the documented opt-in)"
    assert torch.equal(
        trusted.model.state_dict()["class_labels_classifier.bias"], state["class_labels_classifier.bias"]
    )


def test_plain_bin_still_loads(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    backend = _save_tiny(ckpt)
    (ckpt / "model.safetensors").unlink()
    torch.save(dict(backend.model.state_dict()), ckpt / "pytorch_model.bin")  # tensors only: safe
    loaded = load("detr", weights=ckpt)
    for name, tensor in backend.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name


def test_remote_code_does_not_run_by_default(tmp_path: Path) -> None:
    marker = tmp_path / "remote-code-ran"
    ckpt = tmp_path / "ckpt"
    _save_tiny(ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["model_type"] = "evil_detr"  # unknown to transformers: only the shipped code can build it
    config["auto_map"] = {
        "AutoConfig": "evil_code.EvilConfig",
        "AutoModelForObjectDetection": "evil_code.EvilModel",
    }
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "evil_code.py").write_text(
        f"open({str(marker)!r}, 'w')\n"
        "from transformers import DetrConfig, DetrForObjectDetection\n"
        "class EvilConfig(DetrConfig):\n    model_type = 'evil_detr'\n"
        "class EvilModel(DetrForObjectDetection):\n    config_class = EvilConfig\n"
    )
    with pytest.raises(UnsafeWeightsError, match="trust_remote_code=True"):
        load("detr", weights=ckpt)
    assert not marker.exists()
    with contextlib.suppress(Exception):
        load("detr", weights=ckpt, trust_remote_code=True)
    assert marker.exists(), "trust_remote_code=True is the documented opt-in"


# -- threads ------------------------------------------------------------------------------------------
def test_detr_from_threads_equals_sequential() -> None:
    detr = decisive_classes(_tiny("detr", threshold=0.0), no_object=-10.0)
    images = [hf_image(60, 90, 0), hf_image(88, 48, 1)]
    calls = [{"threshold": 0.0, "shortest_edge": 96}, {"threshold": 0.5, "shortest_edge": 64}]
    cases = [(i % 2, i // 2 % 2) for i in range(16)]
    want = {c: detr.detect(images[c[0]], **calls[c[1]]) for c in set(cases)}
    results: list[Any] = [None] * len(cases)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(k: int) -> None:
        start.wait()
        for i in range(k, len(cases), 4):
            try:
                image, call = cases[i]
                results[i] = detr.detect(images[image], **calls[call])
            except BaseException as exc:  # reported below
                errors.append(exc)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    assert not errors, errors
    assert results == [want[c] for c in cases]
