"""Multi-object tracking: ids stay stable on a synthetic clip of moving coloured squares."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import visionkit
from visionkit.errors import InvalidImageError, InvalidOptionError, TaskNotSupportedError
from visionkit.protocols import Task
from visionkit.results import Detections, ResultMeta

pytest.importorskip("trackers", reason="tracking needs the trackers library (pip install trackers)")

from visionkit.tracking import (
    TrackedFrame,
    TrailDrawer,
    VideoWriter,
    evaluate_mot,
    iter_frames,
    mot_lines,
    track,
)

COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}
SIZE = 40


def _positions(t: int) -> dict[str, tuple[int, int]]:
    """Top-left corner of each square at frame ``t``: red and blue cross paths, green goes down."""
    return {"red": (10 + 6 * t, 60), "blue": (250 - 6 * t, 70), "green": (140, 5 + 3 * t)}


def _frame(t: int, h: int = 200, w: int = 320) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    for name, (x, y) in _positions(t).items():
        img[y : y + SIZE, x : x + SIZE] = COLOURS[name]
    return img


class ColourDetector:
    """Finds the three coloured squares by colour: a fake Detector with exact, known answers."""

    name = "colour"
    tasks = (Task.DETECT,)

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: Any, **options: Any) -> Detections:
        self.calls += 1
        arr = np.asarray(image).astype(int)
        boxes, names = [], []
        for k, (_name, rgb) in enumerate(COLOURS.items()):
            hit = np.all(np.abs(arr - np.array(rgb)) < 60, axis=-1)
            ys, xs = np.nonzero(hit)
            if len(xs) > 50:
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                names.append(k)
        n = len(boxes)
        return Detections(
            xyxy=np.asarray(boxes, np.float32).reshape(n, 4),
            confidence=np.full(n, 0.9, np.float32),
            class_id=np.zeros(n, np.int64),  # one class: only the tracker can tell them apart
            class_name=("square",) * n,
            data={"colour": np.asarray(names, np.int64)},  # index into COLOURS
            metadata=ResultMeta(image_shape=arr.shape[:2], backend=self.name),
        )


def _ids_by_colour(frames: list[TrackedFrame]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for f in frames:
        for colour, tid in zip(f.result.data["colour"].tolist(), f.object_ids.tolist(), strict=True):
            out.setdefault(list(COLOURS)[colour], set()).add(tid)
    return out


def test_ids_stay_stable_when_tracks_cross() -> None:
    frames = list(track(ColourDetector(), "bytetrack").track(_frame(t) for t in range(40)))
    assert [f.index for f in frames] == list(range(40))
    ids = _ids_by_colour(frames)
    assert set(ids) == set(COLOURS)
    assert all(len(v) == 1 for v in ids.values()), ids  # one id per square for the whole clip
    assert len({next(iter(v)) for v in ids.values()}) == 3  # and three different ids
    # the detector's own per-item data survives the association, row for row
    last = frames[-1].result
    assert len(last) == 3 and last.tracker_id is not None and last.tracker_id.dtype == np.int64


@pytest.mark.parametrize("name", ["sort", "ocsort", "ByteTrack"])
def test_every_tracker_keeps_ids(name: str) -> None:
    frames = list(track(ColourDetector(), name).track([_frame(t) for t in range(25)]))
    ids = _ids_by_colour(frames)
    assert all(len(v) == 1 for v in ids.values()), ids


def test_first_frames_wait_for_confirmation_unless_asked() -> None:
    strict = list(track(ColourDetector(), minimum_consecutive_frames=3).track(_frame(t) for t in range(4)))
    assert len(strict[0].result) == 0 and len(strict[-1].result) == 3
    loose = list(
        track(ColourDetector(), minimum_consecutive_frames=3, keep_unconfirmed=True).track(
            _frame(t) for t in range(4)
        )
    )
    assert len(loose[0].result) == 3 and set(loose[0].object_ids.tolist()) == {-1}


def test_tracker_ids_round_trip_through_json() -> None:
    f = list(track(ColourDetector()).track(_frame(t) for t in range(5)))[-1]
    back = Detections.from_json(f.result.to_json())
    assert back == f.result
    assert back.tracker_id is not None and back.tracker_id.tolist() == f.object_ids.tolist()
    assert back[back.tracker_id == f.object_ids[0]].tracker_id.tolist() == [f.object_ids[0]]


def test_mot_export_scores_perfectly_against_ground_truth(tmp_path: Path) -> None:
    tracker = track(ColourDetector(), minimum_consecutive_frames=1)
    frames = list(tracker.track(_frame(t) for t in range(30)))
    pred = tmp_path / "pred.txt"
    pred.write_text("\n".join(line for f in frames for line in mot_lines(f)) + "\n")
    gt = tmp_path / "gt.txt"
    rows = []
    detector = ColourDetector()
    for t in range(30):  # ground truth: the visible part of each square, one id per colour
        seen = detector.detect(_frame(t))
        for box, colour in zip(seen.xyxy.tolist(), seen.data["colour"].tolist(), strict=True):
            x1, y1, x2, y2 = box
            rows.append(f"{t + 1},{colour + 1},{x1},{y1},{x2 - x1},{y2 - y1},1,1,1")
    gt.write_text("\n".join(rows) + "\n")
    scores = evaluate_mot(gt, pred)
    # ByteTrack confirms new tracks from the second frame on: 3 misses out of 90 boxes, nothing else
    assert scores["MOTA"] == pytest.approx(1 - 3 / 90)
    assert scores["IDF1"] > 0.98
    assert scores["HOTA"] > 0.95
    assert scores["IDSW"] == 0
    # a tracker that swaps two ids half-way is caught by the metrics
    swapped = [
        line.replace(",1,", ",9,", 1) if int(line.split(",")[0]) > 15 and line.split(",")[1] == "1" else line
        for line in pred.read_text().splitlines()
    ]
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(swapped) + "\n")
    assert evaluate_mot(gt, bad)["IDF1"] < 0.95


def test_video_file_round_trip_with_annotated_output(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    clip = tmp_path / "clip.avi"
    with VideoWriter(clip, fps=10) as writer:
        for t in range(20):
            writer.write(_frame(t))
    assert [i for i, _ in iter_frames(clip, every=5)] == [0, 5, 10, 15]
    drawer = TrailDrawer(length=5)
    out = tmp_path / "annotated.avi"
    frames = []
    with VideoWriter(out, fps=10) as writer:
        for f in track(ColourDetector()).track(clip):
            writer.write(drawer.draw(f))
            frames.append(f)
    assert len(frames) == 20
    assert all(len(v) == 1 for v in _ids_by_colour(frames).values())
    assert [i for i, _ in iter_frames(out)] == list(range(20))
    assert len(drawer._trails) <= 3


def test_bad_inputs_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match="Unknown tracker 'deepsort'"):
        track(ColourDetector(), "deepsort")
    with pytest.raises(InvalidOptionError, match="lost_trak_buffer"):
        track(ColourDetector(), lost_trak_buffer=3)
    with pytest.raises(InvalidOptionError):
        track(ColourDetector(), frame_rate=0)

    class Classifier:
        name, tasks = "cls", (Task.CLASSIFY,)

        def classify(self, image: Any) -> None: ...

    with pytest.raises(TaskNotSupportedError):
        track(Classifier())
    with pytest.raises(TaskNotSupportedError):
        track(ColourDetector(), task="segment_instances")
    with pytest.raises(InvalidImageError, match="does not exist"):
        list(track(ColourDetector()).track(tmp_path / "missing.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(InvalidImageError):
        list(track(ColourDetector()).track(junk))


class CountingDetector(ColourDetector):
    """Answers from its call count instead of the pixels: a cheap detector for long streams."""

    def detect(self, image: Any, **options: Any) -> Detections:
        t = self.calls % 40
        self.calls += 1
        boxes = [[x, y, x + SIZE, y + SIZE] for x, y in _positions(t).values()]
        return Detections(
            xyxy=np.asarray(boxes, np.float32),
            confidence=np.full(3, 0.9, np.float32),
            class_id=np.zeros(3, np.int64),
            class_name=("square",) * 3,
            metadata=ResultMeta(image_shape=(8, 8), backend=self.name),
        )


def test_memory_stays_flat_on_a_long_stream() -> None:
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process(os.getpid())
    tracker = track(CountingDetector())
    tiny = np.zeros((8, 8, 3), np.uint8)
    rss = {}
    for f in tracker.track(tiny for _ in range(600)):
        if f.index in (59, 599):
            gc.collect()
            rss[f.index] = proc.memory_info().rss
    assert rss[599] <= rss[59] * 1.10, rss


def test_track_is_exported_from_the_package() -> None:
    from visionkit.tracking import VideoTracker

    assert visionkit.track is track
    assert isinstance(track(ColourDetector()), VideoTracker)
    assert not isinstance(ColourDetector(), VideoTracker)


def test_tracker_ids_round_trip_through_coco_video_records() -> None:
    pytest.importorskip("pycocotools")
    from visionkit.coco import from_coco_results, to_coco_results

    frames = list(track(ColourDetector(), minimum_consecutive_frames=1).track(_frame(t) for t in range(6)))
    records = to_coco_results([f.result for f in frames], [f.index + 1 for f in frames])
    assert {r["track_id"] for r in records} == set(frames[-1].object_ids.tolist())
    back = from_coco_results(
        records, {f.index + 1: (200, 320) for f in frames}, [{"id": 0, "name": "square"}]
    )
    for f in frames[1:]:
        assert back[f.index + 1].tracker_id.tolist() == f.object_ids.tolist()
        np.testing.assert_allclose(back[f.index + 1].xyxy, f.result.xyxy, atol=1e-3)
