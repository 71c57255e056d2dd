"""The embedding cache: the encoder runs once per image content; explicit handles; bounded; thread-safe."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from visionkit import InvalidPromptError
from visionkit.testing import make_test_image


@pytest.fixture
def sam(load_seeded: Any) -> Any:
    return load_seeded("sam", cache_size=2)


@pytest.fixture
def encoder_calls(sam: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count real encoder forward passes by wrapping the module's forward."""
    calls: list[int] = []
    original = sam.model.image_encoder.forward

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(int(x.shape[0]))
        return original(x)

    monkeypatch.setattr(sam.model.image_encoder, "forward", counting)
    return calls


def test_repeated_prompts_run_the_encoder_once(sam: Any, encoder_calls: list[int], image: np.ndarray) -> None:
    first = sam.segment_prompt(image, points=[(30, 20)])
    for x in (10, 40, 70, 100):
        sam.segment_prompt(image.copy(), points=[(x, 50)])  # a copy: same content, new array
    sam.segment_prompt(image, boxes=[(10, 10, 50, 40), (60, 30, 110, 80)])
    again = sam.segment_prompt(image, points=[(30, 20)])
    assert len(encoder_calls) == 1
    assert sam.cache_info() == {"hits": 6, "misses": 1, "size": 1, "maxsize": 2}
    assert sam.last_timing["cache_hit"] == 1.0 and sam.last_timing["forward"] == 0.0
    assert first == again


def test_same_file_reuses_the_embedding(
    sam: Any, encoder_calls: list[int], image: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    sam.segment_prompt(str(path), points=[(30, 20)])
    sam.segment_prompt(path, points=[(31, 21)])
    sam.segment_prompt(image, points=[(32, 22)])  # the decoded file has the same pixels
    assert len(encoder_calls) == 1


def test_different_image_is_a_miss(sam: Any, encoder_calls: list[int], image: np.ndarray) -> None:
    other = image.copy()
    other[0, 0, 0] ^= 1  # one pixel differs
    sam.segment_prompt(image, points=[(30, 20)])
    sam.segment_prompt(other, points=[(30, 20)])
    assert len(encoder_calls) == 2


def test_lru_is_bounded(sam: Any, encoder_calls: list[int]) -> None:
    a, b, c = (make_test_image(40, 48, seed=s) for s in range(3))
    for img in (a, b, a, c, a, b):  # cache_size=2: c evicts b, then b evicts c
        sam.segment_prompt(img, points=[(5, 5)])
    assert len(encoder_calls) == 4
    assert sam.cache_info()["size"] == 2
    sam.clear_cache()
    assert sam.cache_info() == {"hits": 0, "misses": 0, "size": 0, "maxsize": 2}


def test_cache_can_be_disabled(load_seeded: Any, image: np.ndarray) -> None:
    sam = load_seeded("sam", cache_size=0)
    sam.segment_prompt(image, points=[(30, 20)])
    sam.segment_prompt(image, points=[(30, 20)])
    assert sam.cache_info() == {"hits": 0, "misses": 2, "size": 0, "maxsize": 0}


def test_embed_handle_replaces_the_image(sam: Any, encoder_calls: list[int], image: np.ndarray) -> None:
    emb = sam.embed(image)
    assert emb.image_shape == (96, 128) and tuple(emb.features.shape) == (1, 256, 16, 16)
    sam.clear_cache()  # the handle itself carries the embedding
    via_handle = sam.segment_prompt(emb, boxes=[(10, 10, 50, 40)])
    via_image = sam.segment_prompt(image, boxes=[(10, 10, 50, 40)])
    assert len(encoder_calls) == 2  # embed + the image call after clear_cache; the handle call ran none
    assert via_handle == via_image
    embs = sam.embed([image, make_test_image(40, 48, seed=3)])
    assert isinstance(embs, list) and len(embs) == 2 and embs[0] is not emb


def test_handle_from_another_model_is_refused(sam: Any, tiny_sam: Any, image: np.ndarray) -> None:
    emb = tiny_sam.embed(image)
    with pytest.raises(InvalidPromptError, match="made by another model"):
        sam.segment_prompt(emb, points=[(3, 3)])


def test_concurrent_prompts_share_one_encoder_run(
    sam: Any, encoder_calls: list[int], image: np.ndarray
) -> None:
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def work(i: int) -> None:
        try:
            barrier.wait()
            results.append(sam.segment_prompt(image, points=[(10 + 10 * i, 30)]))
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 6
    assert len(encoder_calls) == 1
    assert sam.cache_info()["misses"] == 1 and sam.cache_info()["hits"] == 5
