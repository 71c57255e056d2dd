"""The fast torch paths against the reference arithmetic they replace, on tiny seeded models.

- ``SamDecoderNet.forward_eager`` (folded attention projections, transposed convolutions as matrix
  products, first-block image side cached per embedding) vs ``forward_reference`` (the exported
  graph, ``MaskDecoder.predict_masks``'s order of operations): low-res logits and IoU within 1e-5.
- Mask upscaling (separable, one matrix for the rows) vs ``Sam.postprocess_masks``: within 1e-5.
- All the prompts of a call in ONE decoder forward, and the same masks as one prompt at a time.
- ``precision="bf16"`` (encoder under autocast): mask IoU vs fp32 >= 0.98 on the same prompts.
(Parity of whole calls with ``SamPredictor`` is in test_sam_parity.py.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from visionkit_sam._backend import SamAutoBackend, SamEmbedding

from visionkit import InvalidOptionError
from visionkit.backend import Encoded

ATOL = 1e-5
BOXES = np.array(
    [
        [10, 10, 50, 40],
        [60, 30, 110, 80],
        [0, 0, 128, 96],
        [20, 50, 70, 90],
        [5, 5, 30, 30],
        [90, 60, 127, 95],
    ],
    np.float64,
)


def _inputs(backend: Any, embedding: Any, **prompt: Any) -> tuple[torch.Tensor, ...]:
    encoded = Encoded(embedding, embedding.original_size, cached=True)
    kw = {
        "points": None,
        "labels": None,
        "boxes": None,
        "mask_input": None,
        "multimask_output": None,
        **prompt,
    }
    return backend.decoder_inputs(embedding, backend.parse_prompts(encoded, **kw))


@pytest.mark.parametrize(
    "prompt",
    [
        {"points": [(30, 20)]},
        {"points": [[(30, 20), (5, 90)], [(100, 70), (64, 48)]], "labels": [[1, 0], [1, 1]]},
        {"boxes": BOXES},
        {"boxes": BOXES[:2], "points": [(40, 30)]},
        {"points": [(30, 20)], "mask_input": "one"},
        {"boxes": BOXES[:3], "mask_input": "per-prompt"},
    ],
    ids=["click", "two-prompts", "six-boxes", "boxes+click", "mask", "mask-per-box"],
)
def test_eager_decoder_matches_reference(
    tiny_mobile_sam: Any, image: np.ndarray, prompt: dict[str, Any]
) -> None:
    backend = tiny_mobile_sam
    emb = backend.embed(image)
    s = backend.low_res_size()
    rng = np.random.default_rng(0)
    if prompt.get("mask_input") == "one":
        prompt = {**prompt, "mask_input": rng.normal(size=(s, s)).astype(np.float32)}
    elif prompt.get("mask_input") == "per-prompt":
        prompt = {**prompt, "mask_input": rng.normal(size=(3, s, s)).astype(np.float32)}
    inputs = _inputs(backend, emb, **prompt)
    with torch.inference_mode():
        ref = backend.decoder.forward_reference(*inputs)
        fast = backend.decoder.forward_eager(*inputs)
        again = backend.decoder.forward_eager(*inputs)  # second call: the cached image side
    for r, f, a in zip(ref, fast, again, strict=True):
        assert f.shape == r.shape
        torch.testing.assert_close(f, r, atol=ATOL, rtol=0)
        torch.testing.assert_close(a, f, atol=0, rtol=0)


def test_image_side_cache_follows_the_embedding(tiny_mobile_sam: Any, image: np.ndarray) -> None:
    backend = tiny_mobile_sam
    first, other = backend.embed(image), backend.embed(image[::-1].copy())
    with torch.inference_mode():
        backend.decoder.forward_eager(*_inputs(backend, first, points=[(30, 20)]))
        inputs = _inputs(backend, other, points=[(30, 20)])
        torch.testing.assert_close(
            backend.decoder.forward_eager(*inputs),
            backend.decoder.forward_reference(*inputs),
            atol=ATOL,
            rtol=0,
        )


@pytest.mark.parametrize("shape", [(96, 128), (128, 96), (7, 300), (300, 5), (256, 256)])
def test_upscaling_matches_postprocess_masks(tiny_sam: Any, shape: tuple[int, int]) -> None:
    backend = tiny_sam
    h, w = shape
    size = backend.transform.get_preprocess_shape(h, w, backend.config.image_size)
    emb = SamEmbedding(torch.zeros(1), (h, w), size, "", 0)
    s = backend.low_res_size()
    logits = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(0))
    rows = backend._row_map(s, size[0], h, logits.device)
    with torch.inference_mode():
        ref = backend.model.postprocess_masks(logits, size, (h, w))
    torch.testing.assert_close(backend._upscale(logits, rows, emb), ref, atol=ATOL, rtol=0)


def test_prompts_go_through_one_decoder_forward(load_seeded: Any, image: np.ndarray) -> None:
    backend = load_seeded("mobile-sam")
    calls: list[int] = []
    forward = backend.decoder_forward

    def counting(inputs: Any) -> Any:
        calls.append(int(inputs[1].shape[0]))
        return forward(inputs)

    backend.decoder_forward = counting
    batched = backend.segment_prompt(image, boxes=BOXES)
    assert calls == [len(BOXES)]  # one forward of 6 prompts, not runs of a few
    for i, box in enumerate(BOXES):  # the same masks as one prompt at a time
        alone = backend.segment_prompt(image, boxes=box[None])
        np.testing.assert_array_equal(batched.mask[i], alone.mask[0])
        np.testing.assert_allclose(batched.logits[i], alone.logits[0], atol=ATOL, rtol=0)
        np.testing.assert_allclose(batched.score[i], alone.score[0], atol=ATOL, rtol=0)


def test_runtime_decoder_runs_in_chunks(load_seeded: Any, image: np.ndarray) -> None:
    backend = load_seeded("mobile-sam")
    calls: list[int] = []
    forward = backend.decoder_forward
    backend.runtime = {"name": "stand-in", "precision": "fp32"}  # as an installed runtime would be

    def counting(inputs: Any) -> Any:
        calls.append(int(inputs[1].shape[0]))
        return forward(inputs)

    backend.decoder_forward = counting
    backend.segment_prompt(image, boxes=BOXES)
    assert calls == [4, 2]


def test_bf16_masks_stay_close_to_fp32(load_seeded: Any, tiny_mobile_sam: Any, image: np.ndarray) -> None:
    bf16 = load_seeded("mobile-sam", precision="bf16")
    assert bf16.precision == "bf16"
    emb32, emb16 = tiny_mobile_sam.embed(image), bf16.embed(image)
    assert emb16.features.dtype == torch.float32  # the decoder and its tail stay fp32
    ious = []
    for box in BOXES:
        a = tiny_mobile_sam.segment_prompt(emb32, boxes=box[None]).mask[0]
        b = bf16.segment_prompt(emb16, boxes=box[None]).mask[0]
        ious.append((a & b).sum() / max((a | b).sum(), 1))
    assert min(ious) >= 0.98, ious


def test_bf16_is_refused_by_sam_auto() -> None:
    with pytest.raises(InvalidOptionError, match="bf16"):
        SamAutoBackend(weights=None, precision="bf16")
