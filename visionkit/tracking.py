"""Multi-object tracking for any Detector or InstanceSegmenter: ids that persist from frame to frame.

::

    tracker = visionkit.track(visionkit.load("yolo"), tracker="bytetrack")
    for frame in tracker.track("traffic.mp4"):       # streams: one TrackedFrame at a time
        frame.index, frame.result.tracker_id         # Detections (or InstanceMasks) with ids

The association is done by Roboflow's ``trackers`` library (ByteTrack, SORT, OC-SORT, BoT-SORT);
visionkit runs the detector, hands each frame's boxes to the tracker and maps its answer back onto the
detector's own result, so masks, class names and metadata are kept exactly and only ``tracker_id`` is
added. Nothing is accumulated: iteration yields frame after frame, so memory stays flat on long videos.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from visionkit.draw import annotate, color_for
from visionkit.errors import (
    BackendUnavailableError,
    InvalidImageError,
    InvalidOptionError,
    TaskNotSupportedError,
    unknown_option_error,
)
from visionkit.images import ImageInput, load_image
from visionkit.protocols import Detector, InstanceSegmenter, Task
from visionkit.results import Detections

__all__ = [
    "TRACKERS",
    "ByteTrackOptions",
    "MultiObjectTracker",
    "OCSortOptions",
    "SortOptions",
    "TrackedFrame",
    "TrackerOptions",
    "TrailDrawer",
    "VideoTracker",
    "VideoWriter",
    "evaluate_mot",
    "iter_frames",
    "mot_lines",
    "track",
]

_INSTALL = "pip install 'visionkit-core[track]'"


class TrackerOptions(BaseModel):
    """Options every tracker takes; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The class name in the ``trackers`` library.
    library_class: ClassVar[str] = ""

    lost_track_buffer: int = Field(30, ge=0, description="Frames (at 30 fps) a lost track is kept.")
    frame_rate: float = Field(30.0, gt=0, description="Frame rate of the video, scales the buffer.")
    minimum_consecutive_frames: int = Field(
        2, ge=1, description="Frames a track must be seen before it gets an id."
    )
    keep_unconfirmed: bool = Field(
        False, description="Also return detections that have no confirmed track yet (tracker_id -1)."
    )


class ByteTrackOptions(TrackerOptions):
    """ByteTrack: two-stage association that revives occluded tracks from low-score boxes."""

    library_class: ClassVar[str] = "ByteTrackTracker"

    track_activation_threshold: float = Field(0.7, ge=0, le=1, description="Confidence to start a track.")
    minimum_iou_threshold: float = Field(0.1, ge=0, le=1, description="IoU to associate a box.")
    high_conf_det_threshold: float = Field(0.6, ge=0, le=1, description="High/low confidence split.")


class SortOptions(TrackerOptions):
    """SORT: Kalman filter plus IoU matching."""

    library_class: ClassVar[str] = "SORTTracker"

    minimum_consecutive_frames: int = Field(3, ge=1, description="Frames before a track gets an id.")
    track_activation_threshold: float = Field(0.25, ge=0, le=1, description="Confidence to start a track.")
    minimum_iou_threshold: float = Field(0.3, ge=0, le=1, description="IoU to associate a box.")


class OCSortOptions(TrackerOptions):
    """OC-SORT: observation-centric SORT, robust to non-linear motion and occlusion."""

    library_class: ClassVar[str] = "OCSORTTracker"

    minimum_consecutive_frames: int = Field(3, ge=1, description="Frames before a track gets an id.")
    minimum_iou_threshold: float = Field(0.3, ge=0, le=1, description="IoU to associate a box.")
    direction_consistency_weight: float = Field(0.2, ge=0, description="Weight of the motion direction.")
    high_conf_det_threshold: float = Field(0.6, ge=0, le=1, description="High/low confidence split.")
    delta_t: int = Field(3, ge=1, description="Frames back used to estimate the velocity.")


#: Tracker names accepted by :func:`track`, with their options.
TRACKERS: Mapping[str, type[TrackerOptions]] = {
    "bytetrack": ByteTrackOptions,
    "sort": SortOptions,
    "ocsort": OCSortOptions,
}


def _tracker_options(model: type[TrackerOptions], options: dict[str, Any], tracker: str) -> TrackerOptions:
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        errors = exc.errors()
        unknown = [e for e in errors if e["type"] == "extra_forbidden"]
        if unknown:
            key = str(unknown[0]["loc"][0])
            raise unknown_option_error(f"tracker {tracker}", key, list(model.model_fields)) from None
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg']}" for e in errors)
        raise InvalidOptionError(f"Invalid option for tracker {tracker!r}: {problems}.") from None


def _library() -> Any:
    try:
        import trackers
    except ImportError as exc:
        raise BackendUnavailableError("tracking", ["trackers"], _INSTALL) from exc
    return trackers


@dataclass(frozen=True)
class TrackedFrame:
    """One frame of a tracked video.

    Attributes:
        index: 0-based frame index in the source.
        source: the source as given (path, URL or camera index).
        result: the detector's result for this frame with ``tracker_id`` set (``Detections`` or
            ``InstanceMasks``).
        image: the decoded RGB frame (for drawing); only this frame is held, never the video.
    """

    index: int
    source: str
    result: Detections
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def masks(self) -> np.ndarray | None:
        """``(n, H, W)`` bool masks when the result has them (instance segmenters, SAM 2), else None."""
        return getattr(self.result, "mask", None)

    @property
    def object_ids(self) -> np.ndarray:
        """``(n,)`` int64 track ids of this frame's objects."""
        ids = self.result.tracker_id
        return np.zeros(0, np.int64) if ids is None else ids


@runtime_checkable
class VideoTracker(Protocol):
    """Follows objects through a video: ``track`` yields one :class:`TrackedFrame` per frame, streaming.

    :class:`MultiObjectTracker` (any detector + a tracker) and promptable video segmenters such as
    ``sam2`` (``track(source, prompts=...)``) satisfy it.
    """

    def track(self, source: Any, *args: Any, **kwargs: Any) -> Iterator[TrackedFrame]:
        """Yield the tracked frames of ``source`` one at a time."""


class MultiObjectTracker:
    """Runs a detector frame by frame and gives its objects ids that persist (see :func:`track`)."""

    def __init__(
        self,
        detector: Any,
        tracker: str = "bytetrack",
        *,
        task: Task | str | None = None,
        **options: Any,
    ) -> None:
        self.task = _pick_task(detector, task)
        key = tracker.strip().lower().replace("-", "").replace("_", "")
        if key not in TRACKERS:
            raise InvalidOptionError(f"Unknown tracker {tracker!r}; expected one of: {', '.join(TRACKERS)}.")
        self.detector = detector
        self.tracker_name = key
        self.options = _tracker_options(TRACKERS[key], options, key)
        self._impl: Any = None
        self.reset()

    def reset(self) -> None:
        """Forget every track (call between unrelated videos; :meth:`track` does it for you)."""
        lib = _library()
        cls = getattr(lib, self.options.library_class)
        kwargs = self.options.model_dump(exclude={"keep_unconfirmed"})
        self._impl = cls(**kwargs)

    def update(self, image: ImageInput, **detect_options: Any) -> Detections:
        """Detect on one frame and associate: the result carries ``tracker_id``."""
        arr = load_image(image)
        result = _run(self.detector, self.task, arr, detect_options)
        return self.associate(result)

    def associate(self, result: Detections) -> Detections:
        """Give the objects of one frame's ``result`` their track ids (the detector already ran)."""
        import supervision as sv

        n = len(result)
        dets = sv.Detections(
            xyxy=np.asarray(result.xyxy, np.float32).reshape(n, 4),
            confidence=np.asarray(result.confidence, np.float32),
            class_id=np.asarray(result.class_id, np.int64),
            data={"_row": np.arange(n)},
        )
        out = self._impl.update(dets)
        rows = np.asarray(out.data.get("_row", np.zeros(0, np.int64)), np.int64)
        ids = np.asarray(out.tracker_id if out.tracker_id is not None else [], np.int64)
        if not self.options.keep_unconfirmed:
            keep = ids >= 0
            rows, ids = rows[keep], ids[keep]
        picked = result[rows]
        fields = {name: getattr(picked, name) for name in type(picked).model_fields}
        fields["tracker_id"] = ids
        return type(picked).model_validate(fields)

    def track(
        self,
        source: str | os.PathLike[str] | int | Iterable[ImageInput],
        *,
        every: int = 1,
        **detect_options: Any,
    ) -> Iterator[TrackedFrame]:
        """Track every ``every``-th frame of ``source``: a video file, a camera index or stream URL that
        OpenCV can open, a folder of frames, or any iterable of images. Yields one frame at a time."""
        self.reset()
        name = str(source) if isinstance(source, (str, os.PathLike, int)) else "<frames>"
        for index, frame in iter_frames(source, every=every):
            yield TrackedFrame(index, name, self.update(frame, **detect_options), frame)

    def __repr__(self) -> str:
        return (
            f"<MultiObjectTracker {self.tracker_name} over {getattr(self.detector, 'name', self.detector)!r}>"
        )


def track(detector: Any, tracker: str = "bytetrack", **options: Any) -> MultiObjectTracker:
    """Wrap any Detector or InstanceSegmenter so that its objects get ids that persist across frames.

    Args:
        detector: a loaded backend (or any object with ``detect`` / ``segment_instances``).
        tracker: ``"bytetrack"`` (default), ``"sort"`` or ``"ocsort"``.
        **options: the tracker's typed options (see :data:`TRACKERS`), and ``task`` to pick
            ``"detect"`` or ``"segment_instances"`` on a backend that does both.

    Raises:
        InvalidOptionError: unknown tracker or option.
        TaskNotSupportedError: the object neither detects nor segments instances.
        BackendUnavailableError: the ``trackers`` library is not installed.
    """
    return MultiObjectTracker(detector, tracker, **options)


def _pick_task(detector: Any, task: Task | str | None) -> Task:
    tasks = [Task.parse(t) for t in getattr(detector, "tasks", ())]
    if task is not None:
        want = Task.parse(task)
        if want not in (Task.DETECT, Task.SEGMENT_INSTANCES):
            raise InvalidOptionError(
                f"Tracking needs task 'detect' or 'segment_instances', but got {want.value!r}."
            )
        if tasks and want not in tasks:
            raise TaskNotSupportedError(getattr(detector, "name", "?"), want.value, [t.value for t in tasks])
        return want
    if isinstance(detector, InstanceSegmenter) and (not tasks or Task.SEGMENT_INSTANCES in tasks):
        return Task.SEGMENT_INSTANCES
    if isinstance(detector, Detector):
        return Task.DETECT
    name = getattr(detector, "name", type(detector).__name__)
    raise TaskNotSupportedError(name, "detect", [t.value for t in tasks])


def _run(detector: Any, task: Task, image: np.ndarray, options: Mapping[str, Any]) -> Detections:
    verb = detector.segment_instances if task is Task.SEGMENT_INSTANCES else detector.detect
    result = verb(image, **options)
    if not isinstance(result, Detections):
        raise TypeError(f"{task.value} returned {type(result).__name__}, not a visionkit Detections")
    return result


def iter_frames(
    source: str | os.PathLike[str] | int | Iterable[ImageInput], *, every: int = 1
) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, RGB frame)`` for every ``every``-th frame, decoded one at a time (nothing is held).

    Raises:
        InvalidImageError: the source cannot be opened or has no readable frame.
    """
    if every < 1:
        raise InvalidOptionError(f"every must be >= 1, but got {every}.")
    if not isinstance(source, (str, os.PathLike, int)):
        for i, image in enumerate(source):
            if i % every == 0:
                yield i, load_image(image)
        return
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        frames = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in _FRAME_SUFFIXES)
        if not frames:
            raise InvalidImageError(
                f"Folder {str(source)!r} holds no image frames ({', '.join(_FRAME_SUFFIXES)})."
            )
        for i, path in enumerate(frames):
            if i % every == 0:
                yield i, load_image(path)
        return
    yield from _video_frames(source, every)


_FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise BackendUnavailableError(
            "video", ["opencv-python"], "pip install 'visionkit-core[track]'"
        ) from exc
    return cv2


def _video_frames(source: str | os.PathLike[str] | int, every: int) -> Iterator[tuple[int, np.ndarray]]:
    cv2 = _cv2()
    src: str | int = source if isinstance(source, int) else os.fspath(source)
    if isinstance(src, str) and src.isdigit():
        src = int(src)  # a camera index given as text
    if isinstance(src, str) and "://" not in src and not Path(src).exists():
        raise InvalidImageError(f"Video {src!r} does not exist.")
    cap = cv2.VideoCapture(src)
    if not cap.isOpened():
        cap.release()
        raise InvalidImageError(f"Cannot open {src!r} as a video (OpenCV could not decode it).")
    index = 0
    try:
        while True:
            if index % every:
                if not cap.grab():
                    break
            else:
                ok, frame = cap.read()
                if not ok:
                    break
                yield index, np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise InvalidImageError(f"{src!r} has no readable video frames.")


def mot_lines(frame: TrackedFrame) -> list[str]:
    """MOT-challenge text lines for one frame: ``frame,id,left,top,width,height,conf,-1,-1,-1``.

    Frames are 1-based in the MOT format; unconfirmed objects (id < 0) are left out.
    """
    r = frame.result
    ids = frame.object_ids
    lines = []
    for i in range(len(r)):
        if i >= len(ids) or ids[i] < 0:
            continue
        x1, y1, x2, y2 = (float(v) for v in r.xyxy[i])
        lines.append(
            f"{frame.index + 1},{int(ids[i])},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
            f"{float(r.confidence[i]):.4f},-1,-1,-1"
        )
    return lines


def evaluate_mot(
    ground_truth: str | os.PathLike[str], predictions: str | os.PathLike[str], *, threshold: float = 0.5
) -> dict[str, float]:
    """HOTA, MOTA and IDF1 (and their parts) of a MOT-format prediction file against ground truth.

    Computed by the ``trackers`` library's evaluator, which matches TrackEval's logic.
    """
    lib = _library()
    res = lib.eval.evaluate_mot_sequence(
        gt_path=ground_truth,
        tracker_path=predictions,
        metrics=["CLEAR", "HOTA", "Identity"],
        threshold=threshold,
    )
    return {
        "HOTA": float(res.HOTA.HOTA),
        "DetA": float(res.HOTA.DetA),
        "AssA": float(res.HOTA.AssA),
        "MOTA": float(res.CLEAR.MOTA),
        "IDF1": float(res.Identity.IDF1),
        "IDSW": float(res.CLEAR.IDSW),
    }


class TrailDrawer:
    """Draws a tracked frame: boxes labelled ``#id class conf`` and a short trail of each object's centre."""

    def __init__(self, length: int = 30) -> None:
        if length < 0:
            raise InvalidOptionError(f"trail length must be >= 0, but got {length}.")
        self.length = length
        self._trails: dict[int, deque[tuple[float, float]]] = {}

    def draw(self, frame: TrackedFrame, image: ImageInput | None = None) -> Image.Image:
        """The annotated frame as a PIL image (trails are remembered between calls).

        ``image`` defaults to the frame's own decoded image.
        """
        r = frame.result
        if image is None and frame.image is None:
            raise InvalidOptionError("This TrackedFrame holds no image; pass the frame's image to draw on.")
        img = annotate(frame.image if image is None else image, r)
        draw = ImageDraw.Draw(img)
        lw = max(1, round(sum(r.image_shape) / 400))
        seen = set()
        for i, tid in enumerate(frame.object_ids.tolist()):
            x1, y1, x2, y2 = (float(v) for v in r.xyxy[i])
            trail = self._trails.setdefault(tid, deque(maxlen=max(1, self.length)))
            trail.append(((x1 + x2) / 2, (y1 + y2) / 2))
            seen.add(tid)
            color = color_for(tid)
            if self.length and len(trail) > 1:
                draw.line(list(trail), fill=color, width=lw)
        for tid in [t for t in self._trails if t not in seen]:
            # a lost object's trail fades one point per frame, so memory stays bounded
            self._trails[tid].popleft()
            if not self._trails[tid]:
                del self._trails[tid]
        return img


class VideoWriter:
    """Writes RGB frames to a video file with OpenCV (``mp4v`` for .mp4, ``MJPG`` for .avi)."""

    def __init__(self, path: str | os.PathLike[str], fps: float = 30.0) -> None:
        self.path = Path(path)
        self.fps = fps
        self._writer: Any = None

    def write(self, frame: np.ndarray | Image.Image) -> None:
        """Append one RGB frame (the first fixes the size)."""
        cv2 = _cv2()
        arr = np.asarray(frame)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (arr.shape[1], arr.shape[0]))
            if not self._writer.isOpened():
                raise InvalidOptionError(
                    f"Cannot write video {str(self.path)!r} (unsupported suffix or folder)."
                )
        self._writer.write(cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        """Finish the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
