"""Streaming folders, globs and videos: batching, outputs, resume, failures (fake backends, real files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import visionkit
import visionkit.stream as vstream
from visionkit.registry import Registry
from visionkit.stream import expand_inputs, iter_items, predict_iter, predict_stream, read_records
from visionkit.testing import FakeDetector, fake_plugin, make_test_image

cv2 = pytest.importorskip("cv2")


def _registry() -> Registry:
    return Registry(entry_points=[], plugins=[fake_plugin()], use_environment=False)


@pytest.fixture
def detector() -> Any:
    return visionkit.load("fake-detector", weights=None, registry=_registry())


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """7 good images (one in a sub-folder, sizes differ), one corrupt file, one hidden file."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / ".cache").mkdir()
    for i in range(6):
        Image.fromarray(make_test_image(48 + 4 * i, 64, seed=i)).save(root / f"img{i}.png")
    Image.fromarray(make_test_image(40, 40, seed=9)).save(root / "sub" / "deep.jpg", quality=95)
    Image.fromarray(make_test_image(40, 40, seed=9)).save(root / ".cache" / "hidden.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (root / "notes.txt").write_text("not an image suffix: ignored when walking a directory")
    return root


def _write_video(path: Path, frames: int = 12, size: tuple[int, int] = (64, 48)) -> list[np.ndarray]:
    """An MJPG .avi; returns the frames as OpenCV decodes them (RGB), the reference for results."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for f in range(frames):
        rgb = make_test_image(size[1], size[0], seed=f)
        rgb[:, : 2 + f] = (230, 20, 20)  # a red band growing frame by frame
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(out) == frames
    return out


# -- inputs ---------------------------------------------------------------------------------------
def test_expand_inputs_walks_directories_and_globs(photos: Path, tmp_path: Path) -> None:
    paths, failures = expand_inputs([photos, str(photos / "img*.png"), tmp_path / "missing.jpg"])
    names = [Path(p).relative_to(photos).as_posix() for p in paths]
    # sorted, recursive, hidden folders and non-image suffixes skipped, glob matches de-duplicated
    assert names == ["broken.jpg", *[f"img{i}.png" for i in range(6)], "sub/deep.jpg"]
    assert [str(f) for f in failures] == [f"{tmp_path / 'missing.jpg'}: no such file or directory"]


def test_expand_inputs_reports_empty_directory_and_unmatched_glob(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _, failures = expand_inputs([tmp_path / "empty", str(tmp_path / "*.webp")])
    assert [f.message for f in failures] == [
        "directory holds no image or video files",
        "no file matches this pattern",
    ]


def test_is_stream_input(photos: Path, tmp_path: Path) -> None:
    _write_video(tmp_path / "clip.avi", frames=2)
    assert vstream.is_stream_input(str(photos))
    assert vstream.is_stream_input(str(photos / "*.png"))
    assert vstream.is_stream_input(str(tmp_path / "clip.avi"))
    assert not vstream.is_stream_input(str(photos / "img0.png"))


def test_iter_items_is_lazy(photos: Path) -> None:
    items = list(iter_items([photos]))
    assert all(it.array is None for it in items)  # nothing decoded until load()
    assert [it.index for it in items] == list(range(8))


def test_every_must_be_positive(photos: Path) -> None:
    with pytest.raises(
        visionkit.InvalidOptionError, match="every must be a positive number of frames, but got 0"
    ):
        list(iter_items([photos], every=0))


# -- predictions ----------------------------------------------------------------------------------
def test_jsonl_records_match_single_image_calls(detector: Any, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    summary = predict_stream(detector, [photos], out=out, batch_size=3, progress=False)
    assert summary.processed == 7 and summary.skipped == 0
    assert [f.source for f in summary.failed] == [str(photos / "broken.jpg")]
    assert "Cannot decode" in summary.failed[0].message
    records = list(read_records(out))
    assert [Path(r["source"]).name for r in records] == [*(f"img{i}.png" for i in range(6)), "deep.jpg"]
    for rec in records:
        assert rec["task"] == "detect" and rec["type"] == "Detections" and rec["frame"] is None
        expected = detector.detect(rec["source"])  # batching must not change any result
        assert visionkit.Detections.from_dict(rec["result"]) == expected


def test_rerun_skips_done_inputs_and_writes_nothing_twice(
    detector: Any, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    predict_stream(detector, [photos / "img0.png", photos / "img1.png"], out=out, progress=False)
    first = out.read_bytes()
    summary = predict_stream(detector, [photos], out=out, batch_size=2, progress=False)
    assert (summary.processed, summary.skipped, len(summary.failed)) == (5, 2, 1)
    assert out.read_bytes().startswith(first)
    again = predict_stream(detector, [photos], out=out, progress=False)
    assert (again.processed, again.skipped) == (0, 7)
    sources = [r["source"] for r in read_records(out)]
    assert len(sources) == len(set(sources)) == 7


def test_half_written_last_line_is_cut_before_resuming(detector: Any, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    predict_stream(detector, [photos / "img0.png", photos / "img1.png"], out=out, progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(lines[0] + lines[1][: len(lines[1]) // 2])  # killed in the middle of a write
    summary = predict_stream(detector, [photos], out=out, progress=False)
    assert (summary.processed, summary.skipped) == (6, 1)
    text = out.read_text().splitlines()
    assert len(text) == 7 and all(json.loads(line)["task"] == "detect" for line in text)


def test_resume_refuses_a_file_of_another_task(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    classifier = visionkit.load("fake-classifier", weights=None, registry=_registry())
    predict_stream(classifier, [photos / "img0.png"], out=out, progress=False)
    det = visionkit.load("fake-detector", weights=None, registry=_registry())
    with pytest.raises(
        visionkit.InvalidOptionError, match=r"holds results of task 'classify'.*does 'detect'"
    ):
        predict_stream(det, [photos], out=out, progress=False)


def test_output_suffix_is_checked(detector: Any, photos: Path, tmp_path: Path) -> None:
    with pytest.raises(visionkit.InvalidOptionError, match=r"must end in \.jsonl .* or \.json"):
        predict_stream(detector, [photos], out=tmp_path / "out.csv", progress=False)
    sem = visionkit.load("fake-semantic", weights=None, registry=_registry())
    with pytest.raises(
        visionkit.InvalidOptionError, match=r"COCO results JSON holds boxes .* not 'segment_semantic'"
    ):
        predict_stream(sem, [photos], out=tmp_path / "out.json", progress=False)


def test_video_every_nth_frame(detector: Any, tmp_path: Path) -> None:
    frames = _write_video(tmp_path / "clip.avi", frames=12)
    out = tmp_path / "frames.jsonl"
    summary = predict_stream(
        detector, [tmp_path / "clip.avi"], out=out, every=5, batch_size=2, progress=False
    )
    assert summary.processed == 3 and summary.ok
    records = list(read_records(out))
    assert [r["frame"] for r in records] == [0, 5, 10]
    for rec in records:
        assert visionkit.Detections.from_dict(rec["result"]) == detector.detect(frames[rec["frame"]])
    # resuming a video skips the frames already written, without decoding them again
    again = predict_stream(detector, [tmp_path / "clip.avi"], out=out, every=5, progress=False)
    assert (again.processed, again.skipped) == (0, 3)


def test_unreadable_video_is_reported(detector: Any, tmp_path: Path) -> None:
    (tmp_path / "fake.mp4").write_bytes(b"not a video at all")
    summary = predict_stream(detector, [tmp_path / "fake.mp4"], progress=False)
    assert summary.processed == 0
    assert [f.message for f in summary.failed] == ["OpenCV cannot open this file as a video"]


def test_coco_results_json(detector: Any, photos: Path, tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    files = [f"img{i}.png" for i in range(6)]
    ann = {
        "images": [
            {"id": 100 + i, "file_name": f, "height": 48 + 4 * i, "width": 64} for i, f in enumerate(files)
        ],
        "annotations": [],
        "categories": [{"id": 7, "name": "red"}, {"id": 8, "name": "green"}, {"id": 9, "name": "blue"}],
    }
    ann_path = tmp_path / "instances.json"
    ann_path.write_text(json.dumps(ann))
    out = tmp_path / "results.json"
    summary = predict_stream(
        detector, [str(photos / "img*.png")], out=out, categories=ann_path, progress=False
    )
    records = json.loads(out.read_text())
    expected = sum(len(detector.detect(photos / f)) for f in files)
    assert summary.coco_records == len(records) == expected > 0
    assert {r["image_id"] for r in records} <= {100 + i for i in range(6)}
    assert {r["category_id"] for r in records} <= {7, 8, 9}
    gt = COCO(str(ann_path))
    assert len(gt.loadRes(str(out)).anns) == expected
    # resumable like JSONL: the progress file sits next to the results
    again = predict_stream(detector, [str(photos / "img*.png")], out=out, categories=ann_path, progress=False)
    assert again.skipped == 6 and json.loads(out.read_text()) == records


def test_a_failing_batch_is_retried_image_by_image(photos: Path, tmp_path: Path) -> None:
    class Picky(FakeDetector):
        def preprocess(self, images: list[np.ndarray], options: Any) -> Any:
            if any(im.shape[0] == 52 for im in images):  # img1.png is 52 pixels high
                raise visionkit.BackendError("cannot handle an image 52 pixels high")
            return super().preprocess(images, options)

    summary = predict_stream(
        Picky(), [str(photos / "img*.png")], out=tmp_path / "o.jsonl", batch_size=4, progress=False
    )
    assert summary.processed == 5
    assert [(Path(f.source).name, f.message) for f in summary.failed] == [
        ("img1.png", "cannot handle an image 52 pixels high")
    ]


def test_images_are_decoded_a_few_batches_ahead_at_most(
    photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = 0
    real = vstream.load_image

    def counting(x: Any) -> np.ndarray:
        nonlocal decoded
        decoded += 1
        return real(x)

    monkeypatch.setattr(vstream, "load_image", counting)
    seen: list[int] = []

    class Recording(FakeDetector):
        def detect(self, images: Any, **options: Any) -> Any:
            seen.append(decoded)
            return super().detect(images, **options)

    for i in range(20):
        Image.fromarray(make_test_image(16, 16, seed=i)).save(photos / f"more{i:02d}.png")
    list(predict_iter(Recording(), [str(photos / "*.png")], batch_size=2, decode_workers=2))
    assert len(seen) == 13  # 26 images, batches of 2
    for k, n in enumerate(seen):  # when batch k runs, at most batches k and the 2-batch window are decoded
        assert n <= 2 * (k + 1) + 4


def test_segment_prompt_over_a_folder(photos: Path, tmp_path: Path) -> None:
    sam = visionkit.load("fake-prompt", weights=None, registry=_registry())
    with pytest.raises(visionkit.InvalidOptionError, match="needs a prompt applied to every image"):
        predict_stream(sam, [photos], task="segment_prompt", progress=False)
    summary = predict_stream(
        sam,
        [str(photos / "img*.png")],
        out=tmp_path / "m.jsonl",
        task="segment_prompt",
        prompt={"points": [[5, 5]]},
        progress=False,
    )
    assert summary.processed == 6
    rec = next(read_records(tmp_path / "m.jsonl"))
    assert visionkit.PromptMasks.from_dict(rec["result"]) == sam.segment_prompt(
        rec["source"], points=[[5, 5]]
    )


def test_summary_text(detector: Any, photos: Path) -> None:
    summary = predict_stream(detector, [photos], progress=False)
    text = str(summary)
    assert text.startswith("7 processed, 0 skipped (already done), 1 failed in ")
    assert "img/s" in text
