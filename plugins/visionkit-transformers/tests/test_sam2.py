"""SAM 2 (transformers): image prompts and video tracking vs transformers' own inference, tiny random model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import visionkit
from visionkit import InvalidPromptError, LimitExceededError, PromptSegmenter

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("transformers.models.sam2_video", reason="needs transformers with SAM 2")

H, W = 90, 120


def _clip(n: int) -> list[np.ndarray]:
    """A bright square moving right over a dark, slightly noisy background."""
    rng = np.random.RandomState(0)
    frames = []
    for t in range(n):
        img = (rng.rand(H, W, 3) * 40).astype(np.uint8)
        img[30:60, 10 + 2 * t : 40 + 2 * t] = (230, 200, 40)
        return_img = img
        frames.append(return_img)
    return frames


@pytest.fixture(scope="module")
def sam2() -> Any:
    backend = visionkit.load("sam2", weights=None)
    # random weights would call every object "absent"; bias the presence head so objects show up
    with torch.no_grad():
        backend.video_model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(8.0)
        backend.image_model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(8.0)
    return backend


def test_sam2_is_a_prompt_segmenter_with_image_parity(sam2: Any) -> None:
    from visionkit.tracking import VideoTracker

    assert isinstance(sam2, PromptSegmenter) and isinstance(sam2, VideoTracker)
    img = _clip(1)[0]
    got = sam2.segment_prompt(img, points=[(25, 45)], labels=[1])
    proc, model = sam2.processor, sam2.image_model
    inputs = proc(images=img, input_points=[[[[25.0, 45.0]]]], input_labels=[[[1]]], return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs, multimask_output=True)
    ref = proc.post_process_masks(out.pred_masks, inputs["original_sizes"], binarize=False)[0][0].numpy()
    scores = out.iou_scores[0, 0].numpy()
    order = np.argsort(-scores, kind="stable")
    assert got.mask.shape == (3, H, W)
    np.testing.assert_array_equal(got.mask, ref[order] > 0)
    np.testing.assert_allclose(got.score, scores[order], atol=1e-5)
    np.testing.assert_allclose(got.logits, out.pred_masks[0, 0].numpy()[order], atol=1e-5)
    # the embedding cache gives the same answer for a second prompt on the same image
    again = sam2.segment_prompt(img, points=[(25, 45)], labels=[1])
    assert again == got
    boxes = sam2.segment_prompt(img, boxes=[[10, 30, 40, 60], [50, 10, 90, 50]], multimask_output=False)
    assert boxes.prompt_index.tolist() == [0, 1]
    refined = sam2.segment_prompt(img, points=[(25, 45)], mask_input=got.logits[0], multimask_output=False)
    assert len(refined) == 1


def _reference_video(sam2: Any, frames: list[np.ndarray], box: list[float]) -> list[np.ndarray]:
    """transformers' own whole-video propagation (every frame held in the session)."""
    proc, model = sam2.processor, sam2.video_model
    session = proc.init_video_session(video=frames, inference_device="cpu")
    proc.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=[1], input_boxes=[[box]])
    masks = []
    with torch.inference_mode():
        for out in model.propagate_in_video_iterator(session, start_frame_idx=0):
            masks.append(proc.post_process_masks([out.pred_masks], [[H, W]], binarize=False)[0][0, 0].numpy())
    return masks


def test_streamed_pruned_tracking_equals_transformers_whole_video_propagation(sam2: Any) -> None:
    frames = _clip(24)  # longer than the 16-frame object-pointer window, so pruning is exercised
    box = [10.0, 30.0, 40.0, 60.0]
    logits = _reference_video(sam2, frames, box)
    # random weights put every logit below 0; a threshold inside their range makes real masks to compare
    threshold = float(np.percentile(logits[0], 70))
    tracker = visionkit.load("sam2", weights=None, mask_threshold=threshold)
    tracker.video_model.load_state_dict(sam2.video_model.state_dict())
    got = list(tracker.track(frames, prompts={1: {"frame": 0, "boxes": [box]}}))
    ref = [m > threshold for m in logits]
    assert [f.index for f in got] == list(range(24))
    for f, want in zip(got, ref, strict=True):
        if want.any():
            assert f.object_ids.tolist() == [1]
            np.testing.assert_array_equal(f.result.mask[0], want)
        else:
            assert len(f.result) == 0
    assert sum(len(f.result) for f in got) > 12  # the object is followed on most frames


def test_session_memory_stays_bounded(sam2: Any) -> None:
    window = max(sam2.video_model.config.num_maskmem, sam2.video_model.config.max_object_pointers_in_encoder)
    sizes = []
    for f in sam2.track(_clip(40), prompts={3: {"frame": 2, "points": [(25, 45)], "labels": [1]}}):
        s = sam2._session
        sizes.append(
            (
                len(s.processed_frames or {}),
                max((len(o["non_cond_frame_outputs"]) for o in s.output_dict_per_obj.values()), default=0),
            )
        )
        if f.index < 2:
            assert len(f.result) == 0  # the object appears from its prompt's frame on
    assert max(p for p, _ in sizes) <= 1
    assert max(n for _, n in sizes) <= window + 1  # the window plus the frame just processed


def test_objects_prompted_on_later_frames_and_labels(sam2: Any, tmp_path: Path) -> None:
    frames = _clip(8)
    out = list(
        sam2.track(
            frames,
            prompts={
                1: {"frame": 0, "boxes": [[10, 30, 40, 60]]},
                7: [{"frame": 4, "points": [(80, 20)], "labels": [1]}],
            },
            labels={1: "ball"},
        )
    )
    assert 7 not in out[3].object_ids.tolist()
    assert set(out[5].object_ids.tolist()) <= {1, 7}
    assert all(n in ("ball", "object") for f in out for n in f.result.class_name)
    assert "ball" in {n for f in out for n in f.result.class_name}


@pytest.mark.parametrize(
    ("prompts", "error"),
    [
        ({}, InvalidPromptError),
        ({1: {"frame": 0}}, InvalidPromptError),
        ({1: {"frame": -1, "boxes": [[0, 0, 5, 5]]}}, InvalidPromptError),
        ({1: {"frame": 0, "points": [[1, 2], [3]]}}, InvalidPromptError),
        ({1: {"frame": 0, "points": [[1, 2]], "labels": [1, 0]}}, InvalidPromptError),
        ({1: {"frame": 0, "boxes": [[5, 5, 1, 1]]}}, InvalidPromptError),
        ({1: {"frame": 0, "boxes": [[0, 0, 5, 5]], "colour": "red"}}, InvalidPromptError),
        ({"a": {"frame": 0, "boxes": [[0, 0, 5, 5]]}}, InvalidPromptError),
        ({i: {"frame": 0, "boxes": [[0, 0, 5, 5]]} for i in range(65)}, LimitExceededError),
        ({1: {"frame": 0, "points": [[1, 1]] * 65}}, LimitExceededError),
    ],
)
def test_bad_video_prompts_are_typed_errors(sam2: Any, prompts: Any, error: type) -> None:
    with pytest.raises(error):
        next(iter(sam2.track(_clip(2), prompts=prompts)))


def test_bad_image_prompts_are_typed_errors(sam2: Any) -> None:
    img = _clip(1)[0]
    with pytest.raises(InvalidPromptError):
        sam2.segment_prompt(img)
    with pytest.raises(InvalidPromptError, match="outside"):
        sam2.segment_prompt(img, points=[(500, 5)])
    with pytest.raises(LimitExceededError):
        sam2.segment_prompt(img, boxes=[[0, 0, 5, 5]] * 65)


def test_checkpoint_round_trip_in_the_official_layout(sam2: Any, tmp_path: Path) -> None:
    """save_pretrained (what the Hub's facebook/sam2.1-hiera-* hold) → load by path gives the same masks."""
    sam2.video_model.save_pretrained(tmp_path)
    sam2.processor.save_pretrained(tmp_path)
    again = visionkit.load("sam2", weights=str(tmp_path))
    img = _clip(1)[0]
    assert again.segment_prompt(img, boxes=[[10, 30, 40, 60]]) == sam2.segment_prompt(
        img, boxes=[[10, 30, 40, 60]]
    )


def test_track_cli_with_box_and_point_prompts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cv2")
    from visionkit.cli import main
    from visionkit.cli._track import video_prompts
    from visionkit.tracking import VideoWriter

    assert video_prompts(["0:1,2,3,4", "5@2:1,1,9,9"], ["5@2:4,4", "5@2:6,6:0", "3:7,7"]) == {
        1: [{"frame": 0, "boxes": [[1.0, 2.0, 3.0, 4.0]]}],
        5: [
            {"frame": 2, "boxes": [[1.0, 1.0, 9.0, 9.0]]},
            {"frame": 2, "points": [[4.0, 4.0], [6.0, 6.0]], "labels": [1, 0]},
        ],
        6: [{"frame": 3, "points": [[7.0, 7.0]], "labels": [1]}],
    }
    clip = tmp_path / "clip.avi"
    with VideoWriter(clip, fps=5) as writer:
        for frame in _clip(4):
            writer.write(frame)
    out = tmp_path / "masks.jsonl"
    argv = [
        "track",
        "sam2",
        str(clip),
        "--weights",
        "none",
        "--box",
        "0:10,30,40,60",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines() if line]
    assert len(records) == 4 and records[0]["type"] == "InstanceMasks"
    assert main(["track", "sam2", str(clip), "--weights", "none", "--point", "0:500,1"]) == 2
    assert "outside" in capsys.readouterr().err
