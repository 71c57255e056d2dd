"""Parity with the reference implementations on the same (tiny, seeded, random) weights.

- SAM and MobileSAM-layout models vs ``segment_anything.SamPredictor`` (set_image + predict /
  predict_torch): the same preprocessing, prompt encoder and mask decoder must give identical results.
  Tolerance: masks exactly equal; IoU scores and low-res logits within 1e-5 absolute (the same ops in
  the same order on CPU; we allow float noise only for the batched encoder input path).
- MobileSAM-layout models vs ultralytics' MobileSAM implementation (``SAMModel`` + TinyViT, the
  module MobileSAM checkpoints are loaded into there), fed the same state dict.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

ATOL = 1e-5


def _predictor(backend: Any, image: np.ndarray) -> SamPredictor:
    predictor = SamPredictor(backend.model)
    with torch.inference_mode():
        predictor.set_image(image)
    return predictor


def _ranked(masks: np.ndarray, scores: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.argsort(-scores, kind="stable")
    return masks[order], scores[order], logits[order]


def _assert_same(result: Any, masks: np.ndarray, scores: np.ndarray, logits: np.ndarray) -> None:
    np.testing.assert_array_equal(result.mask, masks)
    np.testing.assert_allclose(result.score, scores, atol=ATOL, rtol=0)
    np.testing.assert_allclose(result.logits, logits, atol=ATOL, rtol=0)


@pytest.fixture(params=["tiny_sam", "tiny_mobile_sam"])
def backend(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def test_embedding_matches_set_image(backend: Any, image: np.ndarray) -> None:
    predictor = _predictor(backend, image)
    emb = backend.embed(image)
    assert emb.original_size == predictor.original_size and emb.input_size == predictor.input_size
    torch.testing.assert_close(emb.features, predictor.features, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "points, labels",
    [([(30, 20)], [1]), ([(30, 20), (100, 70), (5, 90)], [1, 1, 0])],
    ids=["one-click", "three-clicks"],
)
def test_points_multimask(backend: Any, image: np.ndarray, points: list[Any], labels: list[int]) -> None:
    predictor = _predictor(backend, image)
    with torch.inference_mode():
        masks, scores, logits = predictor.predict(np.array(points), np.array(labels), multimask_output=True)
    result = backend.segment_prompt(image, points=points, labels=labels, multimask_output=True)
    assert result.prompt_index.tolist() == [0, 0, 0]
    _assert_same(result, *_ranked(masks, scores, logits))


def test_single_box(backend: Any, image: np.ndarray) -> None:
    predictor = _predictor(backend, image)
    box = np.array([10.0, 12.0, 60.0, 50.0])
    with torch.inference_mode():
        masks, scores, logits = predictor.predict(box=box, multimask_output=False)
    _assert_same(backend.segment_prompt(image, boxes=box), masks, scores, logits)


def test_many_boxes_in_one_call(backend: Any, image: np.ndarray) -> None:
    predictor = _predictor(backend, image)
    # 6 boxes in one call (one batched decoder forward), compared to ONE predictor batch
    boxes = np.array(
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
    tb = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float), image.shape[:2])
    with torch.inference_mode():
        masks, scores, logits = predictor.predict_torch(None, None, boxes=tb, multimask_output=False)
    result = backend.segment_prompt(image, boxes=boxes)
    assert result.prompt_index.tolist() == list(range(len(boxes)))
    _assert_same(result, masks[:, 0].numpy(), scores[:, 0].numpy(), logits[:, 0].numpy())


def test_points_with_box(backend: Any, image: np.ndarray) -> None:
    predictor = _predictor(backend, image)
    pts, lab, box = np.array([[40.0, 30.0], [15, 15]]), np.array([1, 0]), np.array([10.0, 10, 80, 60])
    with torch.inference_mode():
        masks, scores, logits = predictor.predict(pts, lab, box=box, multimask_output=False)
    _assert_same(backend.segment_prompt(image, points=pts, labels=lab, boxes=box), masks, scores, logits)


def test_mask_refinement(backend: Any, image: np.ndarray) -> None:
    predictor = _predictor(backend, image)
    first = backend.segment_prompt(image, points=[(30, 20)], labels=[1])
    best = first.logits[0]
    with torch.inference_mode():
        masks, scores, logits = predictor.predict(
            np.array([[30, 20], [90, 60]]),
            np.array([1, 1]),
            mask_input=best[None].copy(),
            multimask_output=False,
        )
    result = backend.segment_prompt(image, points=[(30, 20), (90, 60)], labels=[1, 1], mask_input=best)
    assert len(result) == 1
    _assert_same(result, masks, scores, logits)


def test_mobile_sam_matches_ultralytics_implementation(tiny_mobile_sam: Any, image: np.ndarray) -> None:
    """Our MobileSAM-layout model, loaded into ultralytics' SAMModel, gives the same embedding and masks."""
    from ultralytics.models.sam.modules.decoders import MaskDecoder
    from ultralytics.models.sam.modules.encoders import PromptEncoder
    from ultralytics.models.sam.modules.sam import SAMModel
    from ultralytics.models.sam.modules.tiny_encoder import TinyViT
    from ultralytics.models.sam.modules.transformer import TwoWayTransformer

    cfg = tiny_mobile_sam.config
    s, g = cfg.image_size, cfg.embedding_size
    ref = SAMModel(
        image_encoder=TinyViT(img_size=s, in_chans=3, **cfg.encoder_kwargs),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(g, g), input_image_size=(s, s), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()
    ref.load_state_dict(tiny_mobile_sam.model.state_dict(), strict=True)

    emb = tiny_mobile_sam.embed(image)
    x = tiny_mobile_sam.preprocess([image], tiny_mobile_sam.options).inputs
    boxes = np.array([[10.0, 10, 50, 40], [60, 30, 110, 80]])
    tb = torch.as_tensor(tiny_mobile_sam.transform.apply_boxes(boxes, image.shape[:2]), dtype=torch.float)
    with torch.inference_mode():
        features = ref.image_encoder(x)
        sparse, dense = ref.prompt_encoder(points=None, boxes=tb, masks=None)
        low_res, iou = ref.mask_decoder(features, ref.prompt_encoder.get_dense_pe(), sparse, dense, False)
    torch.testing.assert_close(emb.features, features, atol=ATOL, rtol=0)
    result = tiny_mobile_sam.segment_prompt(emb, boxes=boxes)
    np.testing.assert_allclose(result.score, iou[:, 0].numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(result.logits, low_res[:, 0].numpy(), atol=ATOL, rtol=0)
