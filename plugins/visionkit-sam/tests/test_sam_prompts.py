"""Prompt handling of the ``sam`` backend: shapes, multimask policy, combinations and every error message."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from visionkit import InvalidPromptError, PromptMasks


def test_one_click_gives_three_ranked_masks(tiny_sam: Any, image: np.ndarray) -> None:
    res = tiny_sam.segment_prompt(image, points=[(30, 20)], labels=[1])
    assert isinstance(res, PromptMasks) and len(res) == 3
    assert res.mask.shape == (3, 96, 128) and res.mask.dtype == bool
    assert res.logits is not None and res.logits.shape == (3, 64, 64)  # image_size 256 / 4
    assert np.all(np.diff(res.score) <= 0), "masks must be ranked best first"
    assert res.metadata.multimask_output is True and res.metadata.model_type == "tiny"


def test_masks_are_upscaled_logits_above_threshold(load_seeded: Any, image: np.ndarray) -> None:
    import torch

    for threshold in (0.0, 0.05):
        sam = load_seeded("sam", mask_threshold=threshold)
        res = sam.segment_prompt(image, points=[(30, 20)])
        emb = sam.embed(image)
        with torch.inference_mode():
            up = sam.model.postprocess_masks(
                torch.as_tensor(np.array(res.logits))[:, None], emb.input_size, emb.original_size
            )
        np.testing.assert_array_equal(res.mask, up[:, 0].numpy() > threshold)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"points": [(30, 20), (50, 40)], "labels": [1, 0]}, [0, 0, 0]),  # several clicks = one prompt
        ({"boxes": [(10, 10, 50, 40)]}, [0]),  # a box is unambiguous: one mask
        ({"boxes": [(10, 10, 50, 40), (60, 30, 110, 80), (0, 0, 20, 20)]}, [0, 1, 2]),
        ({"points": [[(30, 20)], [(90, 60)]], "labels": [[1], [1]]}, [0, 1]),  # (b, n, 2): b prompts
        ({"points": [(30, 20)], "boxes": [(10, 10, 50, 40), (20, 5, 60, 45)]}, [0, 1]),  # shared point
        ({"points": [(30, 20)], "multimask_output": False}, [0]),
        ({"boxes": [(10, 10, 50, 40), (60, 30, 110, 80)], "multimask_output": True}, [0, 0, 0, 1, 1, 1]),
    ],
    ids=["clicks", "box", "boxes", "point-groups", "point+boxes", "forced-single", "forced-multi"],
)
def test_multimask_policy_and_prompt_index(
    tiny_sam: Any, image: np.ndarray, kwargs: dict, expected: list
) -> None:
    res = tiny_sam.segment_prompt(image, **kwargs)
    assert res.prompt_index.tolist() == expected
    assert res.mask.shape == (len(expected), 96, 128)


def test_load_time_multimask_option(load_seeded: Any, image: np.ndarray) -> None:
    sam = load_seeded("sam", multimask_output=False)
    assert len(sam.segment_prompt(image, points=[(30, 20)])) == 1
    assert len(sam.segment_prompt(image, points=[(30, 20)], multimask_output=True)) == 3


def test_refinement_with_previous_logits(tiny_sam: Any, image: np.ndarray) -> None:
    first = tiny_sam.segment_prompt(image, points=[(30, 20)])
    refined = tiny_sam.segment_prompt(image, points=[(30, 20)], mask_input=first.logits[0])
    assert len(refined) == 1  # refinement is not ambiguous
    without = tiny_sam.segment_prompt(image, points=[(30, 20)], multimask_output=False)
    assert not np.allclose(refined.logits, without.logits), "mask_input must change the decoder's output"
    # One shared mask or one per prompt, in any of the documented layouts.
    boxes = [(10, 10, 50, 40), (60, 30, 110, 80)]
    per_prompt = tiny_sam.segment_prompt(image, boxes=boxes, mask_input=first.logits[:2])
    shared = tiny_sam.segment_prompt(image, boxes=boxes, mask_input=first.logits[0][None, None])
    assert len(per_prompt) == len(shared) == 2
    np.testing.assert_allclose(shared.logits[0], per_prompt.logits[0], atol=1e-5)


def test_best_keeps_one_mask_per_prompt(tiny_sam: Any, image: np.ndarray) -> None:
    res = tiny_sam.segment_prompt(image, points=[(30, 20)]).best()
    assert len(res) == 1


def test_boxes_overhanging_the_border_are_clipped(tiny_sam: Any, image: np.ndarray) -> None:
    a = tiny_sam.segment_prompt(image, boxes=[(-0.4, -3, 130.5, 96.2)])
    b = tiny_sam.segment_prompt(image, boxes=[(0, 0, 128, 96)])
    np.testing.assert_array_equal(a.logits, b.logits)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({}, "Received no prompt: give points"),
        ({"points": np.zeros((0, 2))}, "Received no prompt"),
        ({"boxes": []}, "Received no prompt"),
        (
            {"points": [(500, 20)], "labels": [1]},
            r"points \[\[500.0, 20.0\]\] fall outside the image of width 128",
        ),
        ({"points": [(-1, 20)]}, "fall outside"),
        ({"points": [(10, 96)]}, "height 96"),
        ({"points": [(1, 2, 3)]}, r"points must have shape \(n, 2\) .* but got shape \(1, 3\)"),
        ({"points": [[[[1, 2]]]]}, r"but got shape \(1, 1, 1, 2\)"),
        ({"points": [("a", 2)]}, "points must be numbers"),
        ({"points": [(np.nan, 2)]}, "points must be finite"),
        (
            {"points": [(5, 5), (6, 6)], "labels": [1]},
            r"labels must have shape \(2,\) \(one per point\), but got shape \(1,\)",
        ),
        (
            {"points": [(5, 5)], "labels": [2]},
            r"labels must be 1 \(foreground\) or 0 \(background\), but got \[2.0\]",
        ),
        ({"points": [(5, 5)], "labels": [0.5]}, "but got \\[0.5\\]"),
        ({"labels": [1]}, "labels were given without points"),
        ({"boxes": [(1, 2, 3)]}, r"boxes must have shape \(b, 4\) as x1, y1, x2, y2, but got shape \(1, 3\)"),
        ({"boxes": [(50, 10, 10, 40)]}, r"must be \(x1, y1, x2, y2\) with x2 >= x1"),
        ({"boxes": [(200, 10, 300, 40)]}, "lie entirely outside the image of width 128 and height 96"),
        (
            {"points": [[(5, 5)], [(6, 6)], [(7, 7)]], "boxes": [(0, 0, 9, 9), (1, 1, 9, 9)]},
            "give 3 prompts but boxes give 2",
        ),
        (
            {"points": [(5, 5)], "mask_input": np.zeros((32, 32))},
            r"mask_input must be low-resolution logits of shape \(64, 64\)",
        ),
        ({"points": [(5, 5)], "mask_input": np.zeros((2, 3, 64, 64))}, r"but got shape \(2, 3, 64, 64\)"),
        (
            {"boxes": [(0, 0, 9, 9)] * 2, "mask_input": np.zeros((3, 64, 64))},
            r"mask_input holds 3 masks; give 1 \(shared\) or one per prompt \(2\)",
        ),
        ({"mask_input": np.zeros((64, 64))}, "Received only mask_input"),
    ],
)
def test_invalid_prompts(tiny_sam: Any, image: np.ndarray, kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidPromptError, match=fragment):
        tiny_sam.segment_prompt(image, **kwargs)


def test_invalid_prompt_does_not_run_decoder_on_garbage(tiny_sam: Any, image: np.ndarray) -> None:
    """Validation happens against the original image size even when the embedding is cached."""
    emb = tiny_sam.embed(image)
    with pytest.raises(InvalidPromptError, match="width 128 and height 96"):
        tiny_sam.segment_prompt(emb, points=[(128, 0)])


def test_prompts_are_recorded_for_drawing(tiny_sam: Any, image: np.ndarray) -> None:
    from visionkit.draw import annotate

    res = tiny_sam.segment_prompt(image, points=[(30, 20), (5, 5)], labels=[1, 0], boxes=[[10, 10, 80, 90]])
    extra = res.metadata.model_extra
    assert extra["points"] == [[30.0, 20.0], [5.0, 5.0]] and extra["labels"] == [1, 0]
    assert extra["boxes"] == [[10.0, 10.0, 80.0, 90.0]]
    drawn = np.asarray(annotate(image, res, mask_alpha=0.0))
    assert (drawn[20, 30] == (0, 255, 0)).all() and (drawn[5, 5] == (255, 0, 0)).all()
