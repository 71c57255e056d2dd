"""Batches: one forward per batch (per distinct size for segmenters), uint8 upload on accelerators.

On cuda/mps the backends upload uint8 pixels and convert/normalise on the device (``upload_uint8``);
there is no GPU here, so the tests force that path on CPU and hold it to the per-image CPU path: the
same network inputs (float32 rounding of the same arithmetic: within 1e-6) and the same results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import visionkit
from visionkit.testing import make_test_image


def _load(name: str, **options: Any) -> Any:
    torch.manual_seed(0)
    return visionkit.load(name, weights=None, **options)


@pytest.fixture
def mixed() -> list[np.ndarray]:
    """Three images, two of one size: two distinct network input sizes."""
    return [make_test_image(60, 80, seed=1), make_test_image(50, 90, seed=2), make_test_image(60, 80, seed=3)]


def test_uint8_upload_gives_the_same_inputs(mixed: list[np.ndarray]) -> None:
    cases = [
        ("tv-classifier", {"arch": "resnet18", "resize_size": 40, "crop_size": 32}),
        ("lraspp", {"resize_size": 32}),
        ("fasterrcnn-mobilenet", {"min_size": 48, "max_size": 64}),
    ]
    for name, options in cases:
        backend = _load(name, **options)
        assert backend.upload_uint8 is False  # CPU default: the weights' transforms per image
        per_image = backend.preprocess(mixed, backend.options).inputs
        backend.upload_uint8 = True
        on_device = backend.preprocess(mixed, backend.options).inputs
        if isinstance(per_image, tuple):  # (padded images, sizes): compare each image's own pixels
            assert torch.equal(per_image[1], on_device[1])
            for (h, w), a, b in zip(per_image[1].tolist(), per_image[0], on_device[0], strict=True):
                torch.testing.assert_close(b[:, :h, :w], a[:, :h, :w], rtol=0, atol=1e-6)
        else:
            torch.testing.assert_close(on_device, per_image, rtol=0, atol=1e-6)


def test_semantic_runs_one_pass_per_distinct_size(mixed: list[np.ndarray]) -> None:
    backend = _load("lraspp", resize_size=32)
    calls: list[tuple[int, ...]] = []
    backend.net.register_forward_hook(lambda m, args, out: calls.append(tuple(args[0].shape)))
    batched = backend.segment_semantic(mixed)
    assert sorted(c[0] for c in calls) == [1, 2]  # the two 60x80 images share a pass
    calls.clear()
    alone = [backend.segment_semantic(im) for im in mixed]
    for a, b in zip(batched, alone, strict=True):
        np.testing.assert_array_equal(a.label_map, b.label_map)
