"""Hardening of the SAM backends: ragged prompts, limits, extreme aspect ratios, safe loading, threads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import visionkit
from visionkit import (
    BackendError,
    InstanceMasks,
    InvalidOptionError,
    InvalidPromptError,
    LimitExceededError,
    PromptMasks,
    UnsafeWeightsError,
)
from visionkit.testing import make_test_image


# -- ragged prompts: a typed error, never numpy's ValueError ----------------------------------------
@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"points": [[1, 2], [3]]}, r"points must be a regular array .* ragged list \[\[1, 2\], \[3\]\]"),
        ({"points": [[[1, 2]], [[3, 4], [5, 6]]]}, "points must be a regular array"),
        ({"boxes": [[1, 2, 3, 4], [1, 2, 3]]}, "boxes must be a regular array"),
        ({"boxes": [1, 2, 3]}, r"boxes must have shape \(b, 4\) .* but got shape \(3,\)"),
        ({"points": [[1, 2], [3, 4]], "labels": [[1], [1, 0]]}, "labels must be a regular array"),
        ({"points": [[1, 2], [3, [4, 5]]]}, "points must be a regular array"),
    ],
)
def test_ragged_prompts_raise_invalid_prompt(
    tiny_sam: Any, image: np.ndarray, kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidPromptError, match=fragment):
        tiny_sam.segment_prompt(image, **kwargs)


def test_error_message_of_a_huge_ragged_prompt_stays_short(tiny_sam: Any, image: np.ndarray) -> None:
    points = [[1, 2]] * 5000 + [[3]]
    with pytest.raises(InvalidPromptError) as info:
        tiny_sam.segment_prompt(image, points=points)
    assert len(str(info.value)) < 300


# -- limits -------------------------------------------------------------------------------------------
def test_points_per_prompt_are_limited(
    tiny_sam: Any, image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 000 points in one prompt used to allocate ~12.8 GB in the decoder: refused before decoding."""
    monkeypatch.setattr(tiny_sam, "decode", lambda *a: pytest.fail("the decoder ran on a refused prompt"))
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 90, size=(20_000, 2))
    with pytest.raises(LimitExceededError, match=r"max_points=20000 exceeds the limit of 64") as info:
        tiny_sam.segment_prompt(image, points=points)
    assert (info.value.limit, info.value.value, info.value.maximum) == ("max_points", 20_000, 64)
    assert isinstance(info.value, InvalidOptionError)
    with pytest.raises(LimitExceededError, match="max_points"):  # (b, n, 2): n per prompt
        tiny_sam.segment_prompt(image, points=np.full((2, 65, 2), 5.0))


def test_prompts_per_call_are_limited(tiny_sam: Any, image: np.ndarray) -> None:
    boxes = np.tile([10.0, 10.0, 50.0, 40.0], (65, 1))
    with pytest.raises(LimitExceededError, match="max_prompts=65 exceeds the limit of 64") as info:
        tiny_sam.segment_prompt(image, boxes=boxes)
    assert info.value.limit == "max_prompts"
    with pytest.raises(LimitExceededError, match="max_prompts"):
        tiny_sam.segment_prompt(image, points=np.full((65, 1, 2), 5.0))
    assert len(tiny_sam.segment_prompt(image, boxes=boxes[:64])) == 64  # the default allows 64


def test_limits_are_options(load_seeded: Any, image: np.ndarray) -> None:
    sam = load_seeded("sam", max_points=2, max_prompts=2)
    assert len(sam.segment_prompt(image, points=[(5, 5), (6, 6)])) == 3
    with pytest.raises(LimitExceededError, match="max_points=3 exceeds the limit of 2"):
        sam.segment_prompt(image, points=[(5, 5), (6, 6), (7, 7)])
    with pytest.raises(LimitExceededError, match="max_prompts=3"):
        sam.segment_prompt(image, boxes=[(0, 0, 9, 9)] * 3)
    free = load_seeded("sam", max_points=None, max_prompts=None)
    assert len(free.segment_prompt(image, boxes=np.tile([10.0, 10.0, 50.0, 40.0], (65, 1)))) == 65


def test_encoder_size_is_limited(tiny_sam: Any, tmp_path: Path) -> None:
    with pytest.raises(LimitExceededError, match="max_image_size=2048 exceeds the limit of 1024"):
        visionkit.load("sam", weights=None, image_size=2048)
    path = tmp_path / "tiny.pth"
    torch.save(tiny_sam.model.state_dict(), path)  # a 256-pixel checkpoint
    with pytest.raises(LimitExceededError, match="max_image_size=256 exceeds the limit of 128"):
        visionkit.load("sam", weights=path, max_image_size=128)


@pytest.fixture(scope="module")
def auto() -> Any:
    torch.manual_seed(0)
    return visionkit.load(
        "sam-auto", weights=None, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )


@pytest.mark.parametrize(
    "overrides, limit",
    [
        ({"points_per_side": 65}, "max_points_per_side"),
        ({"points_per_batch": 257}, "max_points_per_batch"),
        ({"crop_n_layers": 2}, "max_crop_n_layers"),
        ({"max_points_per_side": 100}, "max_points_per_side"),  # a call may not raise a limit
    ],
)
def test_sam_auto_limits(auto: Any, image: np.ndarray, overrides: dict[str, Any], limit: str) -> None:
    with pytest.raises(LimitExceededError) as info:
        auto.segment_instances(image, **overrides)
    assert info.value.limit == limit


def test_sam_auto_max_detections_keeps_the_best(auto: Any, image: np.ndarray) -> None:
    everything = auto.segment_instances(image, box_nms_thresh=1.0)
    assert len(everything) > 2
    top = auto.segment_instances(image, box_nms_thresh=1.0, max_detections=2)
    assert len(top) == 2
    np.testing.assert_array_equal(top.mask, everything.mask[:2])
    np.testing.assert_array_equal(top.data["predicted_iou"], everything.data["predicted_iou"][:2])


def test_sam_auto_refuses_load_time_options_per_call(auto: Any, image: np.ndarray) -> None:
    with pytest.raises(
        InvalidOptionError, match="'trust_pickle' of backend 'sam-auto' applies when the model"
    ):
        auto.segment_instances(image, trust_pickle=True)


# -- extreme aspect ratios ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1000), (3000, 2), (1, 1)])
def test_extreme_aspect_ratios_give_valid_masks(tiny_sam: Any, shape: tuple[int, int]) -> None:
    image = np.full((*shape, 3), 120, np.uint8)
    res = tiny_sam.segment_prompt(image, points=[(0, 0)])
    assert isinstance(res, PromptMasks) and res.mask.shape == (3, *shape)
    boxes = tiny_sam.segment_prompt(image, boxes=[(0, 0, shape[1], shape[0])])
    assert boxes.mask.shape == (1, *shape)


@pytest.mark.parametrize("shape", [(1, 1000), (3000, 2)])
def test_sam_auto_extreme_aspect_ratios(auto: Any, shape: tuple[int, int]) -> None:
    res = auto.segment_instances(np.full((*shape, 3), 120, np.uint8), points_per_side=2)
    assert isinstance(res, InstanceMasks) and res.mask.shape[1:] == shape


def test_safe_resize_keeps_sams_sizes_otherwise() -> None:
    from segment_anything.utils.transforms import ResizeLongestSide
    from visionkit_sam._backend import SafeResizeLongestSide

    for h, w in [(96, 128), (480, 640), (1, 1), (7, 3000), (1024, 1024), (333, 17)]:
        want = ResizeLongestSide.get_preprocess_shape(h, w, 1024)
        got = SafeResizeLongestSide.get_preprocess_shape(h, w, 1024)
        assert got == (max(1, want[0]), max(1, want[1]))


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
    torch.save({"image_encoder.x": _Marker(marker)}, path)
    for name in ("sam", "mobile-sam", "sam-auto"):
        with pytest.raises(UnsafeWeightsError, match=r"trust_pickle=True .*--trust-pickle") as info:
            visionkit.load(name, weights=path)
        assert "GLOBAL" in str(info.value)
    assert not marker.exists(), "loading ran code from the pickle"
    # The opt-in really unpickles (so it is only for trusted files); the result is then not a state dict.
    with pytest.raises(BackendError):
        visionkit.load("sam", weights=path, trust_pickle=True)
    assert marker.exists()


def test_trusted_pickled_model_loads(tiny_sam: Any, image: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "whole_model.pth"
    torch.save(tiny_sam.model, path)  # the whole nn.Module, pickled
    with pytest.raises(UnsafeWeightsError, match="trust_pickle=True"):
        visionkit.load("sam", weights=path)
    trusted = visionkit.load("sam", weights=path, trust_pickle=True)
    assert trusted.segment_prompt(image, points=[(30, 20)]) == tiny_sam.segment_prompt(
        image, points=[(30, 20)]
    )


def test_corrupt_file_is_not_called_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(BackendError, match="Cannot read SAM checkpoint"):
        visionkit.load("sam", weights=path)


# -- threads ------------------------------------------------------------------------------------------
def _run_threads(jobs: list[Any], threads: int = 4) -> list[Any]:
    """Run ``jobs`` (callables) from ``threads`` threads at once, started together; results in order."""
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def worker(k: int) -> None:
        start.wait()
        for i in range(k, len(jobs), threads):
            try:
                results[i] = jobs[i]()
            except BaseException as exc:  # reported by the test below
                errors.append(exc)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_segment_prompt_from_threads_equals_sequential(load_seeded: Any) -> None:
    """4 threads x 4 calls over 3 images with a cache of 1 (evictions, concurrent encodes and hits)."""
    sam = load_seeded("sam", cache_size=1)
    images = [make_test_image(96, 128, seed=s) for s in range(3)]
    prompts = [
        {"points": [(10 + 5 * i, 20)]} if i % 2 else {"boxes": [(5, 5, 40 + i, 60)]} for i in range(16)
    ]
    jobs = [
        (lambda i=i: sam.segment_prompt(images[i % 3], **prompts[i]))  # type: ignore[misc]
        for i in range(16)
    ]
    want = [job() for job in jobs]
    sam.clear_cache()
    got = _run_threads(jobs)
    # Same masks; logits and scores to float rounding: the eager decoder's matrix products with a long
    # inner dimension (4096 image tokens) may sum in another order on another call or OpenMP thread
    # count (1.8e-7 measured). A race would give other masks, not a difference of 1e-7.
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.mask, w.mask)
        np.testing.assert_array_equal(g.prompt_index, w.prompt_index)
        np.testing.assert_allclose(g.score, w.score, atol=1e-5, rtol=0)
        np.testing.assert_allclose(g.logits, w.logits, atol=1e-5, rtol=0)
        assert g.metadata == w.metadata
    assert sam.cache_info()["misses"] >= 3


def test_sam_auto_from_threads_equals_sequential(auto: Any) -> None:
    images = [make_test_image(64, 80, seed=s) for s in range(2)]
    # mask_threshold differs per call and lives on the shared model: calls must not see each other's.
    cases = [(i % 2, 0.4 * (i // 2 % 2)) for i in range(16)]
    want = {
        c: auto.segment_instances(images[c[0]], points_per_side=2, mask_threshold=c[1]) for c in set(cases)
    }
    jobs = [
        (lambda c=c: auto.segment_instances(images[c[0]], points_per_side=2, mask_threshold=c[1]))
        for c in cases
    ]
    assert _run_threads(jobs) == [want[c] for c in cases]
