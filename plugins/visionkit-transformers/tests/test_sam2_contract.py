"""SAM 2 on the backend contract: the core's prompt driver and grammar (shared with SAM), its device rule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import visionkit
from visionkit import InvalidPromptError
from visionkit.backend import SegmentsPrompts

torch = pytest.importorskip("torch")
pytest.importorskip("transformers.models.sam2_video", reason="needs transformers with SAM 2")


@pytest.fixture(scope="module")
def sam2() -> Any:
    return visionkit.load("sam2", weights=None)


@pytest.fixture(scope="module")
def img() -> np.ndarray:
    rng = np.random.RandomState(0)
    im = (rng.rand(90, 120, 3) * 40).astype(np.uint8)
    im[30:60, 10:40] = (230, 200, 40)
    return im


def test_sam2_runs_the_core_prompt_driver(sam2: Any, img: np.ndarray) -> None:
    assert isinstance(sam2, SegmentsPrompts) and sam2.runtime_name == "torch"
    sam2._cache.clear()
    sam2.segment_prompt(img, points=[(25, 45)])
    first = dict(sam2.last_timing)
    assert first["cache_hit"] == 0.0 and first["forward"] > 0 and first["decode"] > 0
    sam2.segment_prompt(img, points=[(25, 45)])
    assert sam2.last_timing["cache_hit"] == 1.0 and sam2.last_timing["forward"] == 0.0


def test_sam2_takes_the_whole_sam_grammar(sam2: Any, img: np.ndarray) -> None:
    grouped = sam2.segment_prompt(img, points=[[(25, 45)], [(80, 20)]], multimask_output=False)
    assert grouped.prompt_index.tolist() == [0, 1]
    one = sam2.segment_prompt(img, points=[(80, 20)], multimask_output=False)
    np.testing.assert_allclose(grouped.score[1:], one.score, atol=1e-5)  # prompts do not mix
    shared = sam2.segment_prompt(
        img, points=[(25, 45)], boxes=[[10, 30, 40, 60], [50, 10, 90, 50]], multimask_output=False
    )
    assert shared.prompt_index.tolist() == [0, 1]  # (n, 2) points shared by every box, as SAM
    with pytest.raises(InvalidPromptError, match="labels must be 1"):
        sam2.segment_prompt(img, points=[(25, 45)], labels=[2])
    with pytest.raises(InvalidPromptError, match="mask_input must be low-resolution logits of shape"):
        sam2.segment_prompt(img, points=[(25, 45)], mask_input=np.zeros((7, 7), np.float32))


def test_sam2_auto_device_is_not_forced_to_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from visionkit_transformers import _sam2

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert _sam2.resolve_torch_device("auto").type == "mps"
