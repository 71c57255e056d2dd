"""SAM on the backend contract: the core's prompt driver and device rule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from visionkit.backend import Encoded, SegmentsPrompts


def test_sam_auto_device_considers_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    """SAM's "auto" once went from CUDA straight to the CPU; it follows the core rule now."""
    from visionkit_sam import _backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert _backend.resolve_torch_device("auto").type == "mps"


def test_sam_runs_the_core_prompt_driver(tiny_sam: Any, image: np.ndarray) -> None:
    assert isinstance(tiny_sam, SegmentsPrompts) and tiny_sam.runtime_name == "torch"
    tiny_sam.clear_cache()
    encoded = tiny_sam.encode_image(image)
    assert isinstance(encoded, Encoded) and not encoded.cached
    assert encoded.image_shape == image.shape[:2] and set(encoded.timing) == {"preprocess", "forward"}
    again = tiny_sam.encode_image(image.copy())
    assert again.cached and again.timing == {} and again.embedding is encoded.embedding
    handle = tiny_sam.embed(image)
    assert tiny_sam.encode_image(handle).cached
    result = tiny_sam.segment_prompt(handle, points=[(20, 20)])
    assert tiny_sam.last_timing["cache_hit"] == 1.0 and tiny_sam.last_timing["decode"] > 0
    assert result.metadata.points == [[20.0, 20.0]]


def test_sam_prompt_grammar_is_the_core_one() -> None:
    from visionkit_sam import _prompts

    import visionkit.prompts

    assert _prompts.parse_prompts is visionkit.prompts.parse_prompts
