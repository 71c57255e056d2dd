"""Shared fixtures of the visionkit-transformers tests: tiny random models, small images."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="visionkit-transformers tests need transformers")
torch = pytest.importorskip("torch", reason="visionkit-transformers tests need torch")
# Tiny models gain nothing from intra-op threads, and on a shared 2-core runner threads only contend.
torch.set_num_threads(1)


def registry() -> object:
    """A registry holding only this plugin, so other installed plugins (and name clashes) cannot interfere."""
    import visionkit_transformers

    import visionkit

    return visionkit.Registry(entry_points=[], plugins=[visionkit_transformers], use_environment=False)


def load(name: str, **kwargs: object) -> object:
    """``visionkit.load`` through this plugin's own registry."""
    import visionkit

    return visionkit.load(name, registry=registry(), **kwargs)


def hf_image(height: int, width: int, seed: int) -> np.ndarray:
    """A deterministic RGB uint8 image with some structure (blocks + noise)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    img[height // 4 : height // 2, width // 5 : width // 2] = (230, 40, 40)
    return img


@pytest.fixture
def two_images() -> list[np.ndarray]:
    """Two images of different sizes and aspect ratios (landscape, portrait)."""
    return [hf_image(60, 90, 0), hf_image(88, 48, 1)]


def decisive_classes(backend: object, no_object: float | None = None) -> object:
    """Give a tiny random DETR's class head a spread-out bias so each query's class is not a near tie.

    Random heads score all classes almost equally, so float noise (e.g. batch padding) could flip the
    argmax; real checkpoints are decisive. ``no_object`` sets the "no object" logit bias (DETR's last).
    """
    import torch

    model = backend.model  # type: ignore[attr-defined]
    head = model.detr.class_labels_classifier if hasattr(model, "detr") else model.class_labels_classifier
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        head.bias.copy_(torch.randn(head.bias.shape, generator=gen) * 4.0)
        if no_object is not None:
            head.bias[-1] = no_object
    return backend
