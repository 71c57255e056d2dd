"""Sliced inference (SAHI-style): small objects on big images, with any Detector or InstanceSegmenter.

::

    tiles = visionkit.sliced(visionkit.load("yolo"), tile=640, overlap=0.2, full_image=True)
    dets = tiles.detect("aerial.jpg")                         # Detections in the big image's pixels
    visionkit.evaluate(tiles, coco="instances.json", images="val/")   # works wherever a Detector does

Each image is cut into ``tile`` × ``tile`` crops whose neighbours overlap by ``overlap`` (edge tiles
are shifted inwards, so every tile has the full size when the image is large enough). All crops of a
call (and each whole image when ``full_image=True``) go to the wrapped backend in **one**
``detect([...])`` / ``segment_instances([...])`` call, so the backend batches them its own way. Boxes
(and masks) are shifted back to the image's pixels and the duplicates that overlapping tiles produce
are merged with supervision's ``Detections.with_nms`` or ``with_nmm`` (per class unless
``class_agnostic``; ``match_metric="ios"`` compares by intersection over the smaller box, which also
folds a tile's cut-off part of an object into the whole-image box). Needs ``pip install
'visionkit-core[supervision]'``.

Per-call options go to the wrapped backend for every crop, so ``conf`` and ``max_det`` apply per tile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from visionkit.errors import InvalidOptionError, LimitExceededError, TaskNotSupportedError
from visionkit.images import as_batch, load_image
from visionkit.protocols import Detector, InstanceSegmenter, Task
from visionkit.results import Detections
from visionkit.supervision import CLASS_NAME, detections_from_supervision, require_supervision

__all__ = ["MERGES", "METRICS", "SlicedDetector", "SlicedInstanceSegmenter", "slice_boxes", "sliced"]

#: How duplicates from overlapping tiles are resolved: suppression (keep the best) or merging (union box).
MERGES = ("nms", "nmm")
#: Overlap measures for the merge: intersection over union, or over the smaller box.
METRICS = ("iou", "ios")
#: Default cap on crops per image (a 4000 × 3000 photo at tile 640, overlap 0.2 needs 48).
MAX_TILES = 256


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (int(value), int(value)) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise InvalidOptionError(f"{what} must be a positive int or (height, width), but got {value!r}.")
    return pair[0], pair[1]


def _starts(length: int, size: int, stride: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:  # last tile flush with the edge instead of hanging over it
        starts.append(length - size)
    return starts


def slice_boxes(height: int, width: int, tile: int | Sequence[int] = 640, overlap: float = 0.2) -> np.ndarray:
    """The crops :func:`sliced` cuts from a ``height`` × ``width`` image, as ``(k, 4)`` int64 ``x1, y1, x2, y2``.

    Neighbouring tiles overlap by ``overlap`` of the tile size; the last row and column are shifted so
    they end at the image border. An image smaller than the tile is one crop (itself).
    """
    th, tw = _pair(tile, "tile")
    if not 0.0 <= overlap < 1.0:
        raise InvalidOptionError(f"overlap must be in [0, 1), but got {overlap!r}.")
    ys = _starts(height, th, max(1, round(th * (1 - overlap))))
    xs = _starts(width, tw, max(1, round(tw * (1 - overlap))))
    return np.array(
        [(x, y, min(x + tw, width), min(y + th, height)) for y in ys for x in xs], dtype=np.int64
    ).reshape(-1, 4)


def _name(obj: Any) -> str:
    spec = getattr(obj, "spec", None)
    return str(getattr(spec, "name", None) or getattr(obj, "name", None) or type(obj).__name__)


class SlicedDetector:
    """A :class:`visionkit.Detector` that runs a wrapped backend on overlapping tiles; build with :func:`sliced`.

    Attributes:
        backend: the wrapped Detector (or InstanceSegmenter).
        tile, overlap, full_image, merge, iou, match_metric, class_agnostic, batch_size, max_tiles:
            see :func:`sliced`.
        last_timing: the wrapped backend's stage times for the last call, plus ``merge`` (also counted in
            ``postprocess``).
    """

    tasks: tuple[Task, ...] = (Task.DETECT,)

    def __init__(
        self,
        backend: Any,
        *,
        tile: int | Sequence[int] = 640,
        overlap: float = 0.2,
        full_image: bool = False,
        merge: str = "nms",
        iou: float = 0.5,
        match_metric: str = "iou",
        class_agnostic: bool = False,
        batch_size: int | None = None,
        max_tiles: int = MAX_TILES,
    ) -> None:
        self.tile = _pair(tile, "tile")
        slice_boxes(1, 1, self.tile, overlap)  # validates overlap
        if merge not in MERGES:
            raise InvalidOptionError(f"merge must be one of {', '.join(MERGES)}, but got {merge!r}.")
        if match_metric not in METRICS:
            raise InvalidOptionError(
                f"match_metric must be one of {', '.join(METRICS)}, but got {match_metric!r}."
            )
        if not 0.0 < iou <= 1.0:
            raise InvalidOptionError(f"iou must be in (0, 1], but got {iou!r}.")
        if batch_size is not None and batch_size < 1:
            raise InvalidOptionError(f"batch_size must be >= 1 or None, but got {batch_size!r}.")
        self._sv = require_supervision("sliced inference")
        self.backend = backend
        self.overlap = float(overlap)
        self.full_image = bool(full_image)
        self.merge = merge
        self.iou = float(iou)
        self.match_metric = match_metric
        self.class_agnostic = bool(class_agnostic)
        self.batch_size = batch_size
        self.max_tiles = int(max_tiles)
        self.name = f"{_name(backend)}+sliced"
        self.precision = str(getattr(backend, "precision", "fp32"))
        self.device = getattr(backend, "device", "cpu")
        self.last_timing: dict[str, float] = {}

    # The wrapped backend's options are the ones that apply per tile; evaluate/bench read them here.
    @property
    def options(self) -> Any:
        """The wrapped backend's options (``conf``, ``max_det`` ... apply per tile)."""
        return getattr(self.backend, "options", None)

    def with_options(self, overrides: dict[str, Any]) -> Any:
        """Validate per-call ``overrides`` against the wrapped backend's options."""
        check = getattr(self.backend, "with_options", None)
        return check(overrides) if check is not None else overrides

    def tiles(self, height: int, width: int) -> np.ndarray:
        """The ``(k, 4)`` crops of an image of this size (see :func:`slice_boxes`)."""
        boxes = slice_boxes(height, width, self.tile, self.overlap)
        if len(boxes) > self.max_tiles:
            raise LimitExceededError(
                "max_tiles",
                len(boxes),
                self.max_tiles,
                f"A {height}x{width} image at tile {self.tile} and overlap {self.overlap} needs {len(boxes)} "
                "crops; raise max_tiles= or the tile size.",
            )
        return boxes

    def detect(self, images: Any, **options: Any) -> Any:
        """Detections of one image (or a list), from its tiles; ``options`` go to the wrapped backend."""
        verb = getattr(self.backend, "detect", None)
        if verb is None:  # an InstanceSegmenter without detect: use its masks' boxes
            return self._run(images, options, self.backend.segment_instances, masks=False)
        return self._run(images, options, verb, masks=False)

    # -- the work ----------------------------------------------------------------------------------
    def _run(self, images: Any, options: dict[str, Any], verb: Callable[..., Any], *, masks: bool) -> Any:
        inputs, single = as_batch(images)
        arrays = [load_image(x) for x in inputs]
        crops: list[np.ndarray] = []
        plans: list[list[tuple[int, int]]] = []  # offset of each crop; the whole image (0, 0) comes last
        for img in arrays:
            h, w = img.shape[:2]
            boxes = self.tiles(h, w)
            plan = [(int(x1), int(y1)) for x1, y1, _, _ in boxes]
            crops += [img[y1:y2, x1:x2] for x1, y1, x2, y2 in boxes]
            if self.full_image and len(boxes) > 1:  # one tile is the whole image already
                plan.append((0, 0))
                crops.append(img)
            plans.append(plan)
        timing = {"preprocess": 0.0, "forward": 0.0, "postprocess": 0.0}
        step = self.batch_size or max(1, len(crops))
        results: list[Any] = []
        for start in range(0, len(crops), step):  # one call unless batch_size caps it
            results += verb(crops[start : start + step], **options)
            for k, v in (getattr(self.backend, "last_timing", None) or {}).items():
                if k in timing:
                    timing[k] += float(v)
        t0 = time.perf_counter()
        out: list[Detections] = []
        pos = 0
        for img, plan in zip(arrays, plans, strict=True):
            out.append(self._merge(img.shape[:2], plan, results[pos : pos + len(plan)], masks))
            pos += len(plan)
        merge_ms = (time.perf_counter() - t0) * 1e3
        timing["postprocess"] += merge_ms
        self.last_timing = {**timing, "merge": merge_ms}
        return out[0] if single else out

    def _merge(
        self, shape: tuple[int, int], plan: list[tuple[int, int]], parts: list[Any], masks: bool
    ) -> Detections:
        h, w = int(shape[0]), int(shape[1])
        shifts = [np.array([x, y, x, y], np.float32) for x, y in plan]
        nonempty = [r for r in parts if len(r)]
        keys = set.intersection(*(set(r.data) for r in nonempty)) if nonempty else set()
        data = {k: np.concatenate([np.asarray(r.data[k]) for r in nonempty]) for k in sorted(keys)}
        data[CLASS_NAME] = np.array([n for r in parts for n in r.class_name], dtype=str)
        mask = None
        if masks:
            mask = np.zeros((sum(len(r) for r in parts), h, w), bool)
            i = 0
            for (x, y), r in zip(plan, parts, strict=True):
                th, tw = r.mask.shape[1:]
                mask[i : i + len(r), y : y + th, x : x + tw] = r.mask
                i += len(r)
        sv = self._sv
        pooled = sv.Detections(
            xyxy=np.concatenate([r.xyxy + s for r, s in zip(parts, shifts, strict=True)]).reshape(-1, 4),
            mask=mask,
            confidence=np.concatenate([r.confidence for r in parts]).astype(np.float32),
            class_id=np.concatenate([r.class_id for r in parts]).astype(np.int64),
            data=data,
        )
        metric = sv.OverlapMetric.IOS if self.match_metric == "ios" else sv.OverlapMetric.IOU
        reduce = pooled.with_nms if self.merge == "nms" else pooled.with_nmm
        merged = reduce(threshold=self.iou, class_agnostic=self.class_agnostic, overlap_metric=metric)
        first = parts[0].metadata.model_dump() if parts else {}
        meta = {
            **{k: v for k, v in first.items() if k not in ("image_shape", "backend")},
            "backend": self.name,
            "tiles": len(plan) - int(self.full_image and len(plan) > 1),
            "full_image": self.full_image and len(plan) > 1,
            "tile": self.tile,
            "overlap": self.overlap,
        }
        if len(merged):  # highest score first, as backends return them
            merged = merged[np.argsort(-np.asarray(merged.confidence), kind="stable")]
        return detections_from_supervision(merged, image_shape=(h, w), metadata=meta, masks=masks)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {_name(self.backend)!r} tile={self.tile} overlap={self.overlap} "
            f"full_image={self.full_image} merge={self.merge}/{self.match_metric}@{self.iou}>"
        )


class SlicedInstanceSegmenter(SlicedDetector):
    """:class:`SlicedDetector` that also satisfies :class:`visionkit.InstanceSegmenter` (masks per tile, pasted back)."""

    tasks: tuple[Task, ...] = (Task.DETECT, Task.SEGMENT_INSTANCES)

    def segment_instances(self, images: Any, **options: Any) -> Any:
        """InstanceMasks of one image (or a list), from its tiles; ``options`` go to the wrapped backend."""
        return self._run(images, options, self.backend.segment_instances, masks=True)


def sliced(
    backend: Any,
    *,
    tile: int | Sequence[int] = 640,
    overlap: float = 0.2,
    full_image: bool = False,
    merge: str = "nms",
    iou: float = 0.5,
    match_metric: str = "iou",
    class_agnostic: bool = False,
    batch_size: int | None = None,
    max_tiles: int = MAX_TILES,
) -> SlicedDetector:
    """Wrap a Detector or InstanceSegmenter so it runs on overlapping tiles (SAHI-style).

    Args:
        backend: a loaded backend (or a name for :func:`visionkit.load`).
        tile: tile size in pixels, an int or ``(height, width)``; crops are resized by the backend as usual,
            so a tile smaller than the model's input size magnifies small objects.
        overlap: fraction of a tile shared with its neighbour, in ``[0, 1)``.
        full_image: also run the whole image (finds large objects that no tile holds whole).
        merge: ``"nms"`` keeps the best of overlapping duplicates; ``"nmm"`` merges them into their union box.
        iou: overlap threshold above which two detections of a class are duplicates.
        match_metric: ``"iou"`` or ``"ios"`` (intersection over the smaller box).
        class_agnostic: merge across classes too.
        batch_size: crops per backend call (default: all crops of the call's images at once).
        max_tiles: refuse images that need more crops than this (:class:`~visionkit.LimitExceededError`).

    Returns:
        A :class:`SlicedInstanceSegmenter` when ``backend`` segments instances, else a :class:`SlicedDetector`.

    Raises:
        TaskNotSupportedError: ``backend`` is neither a Detector nor an InstanceSegmenter.
        BackendUnavailableError: supervision is not installed.
        InvalidOptionError: a bad tile, overlap, merge, metric or threshold.
    """
    if isinstance(backend, str):
        from visionkit.loading import load

        backend = load(backend)
    kw: dict[str, Any] = {
        "tile": tile,
        "overlap": overlap,
        "full_image": full_image,
        "merge": merge,
        "iou": iou,
        "match_metric": match_metric,
        "class_agnostic": class_agnostic,
        "batch_size": batch_size,
        "max_tiles": max_tiles,
    }
    if isinstance(backend, InstanceSegmenter):
        return SlicedInstanceSegmenter(backend, **kw)
    if isinstance(backend, Detector):
        return SlicedDetector(backend, **kw)
    supported = [str(getattr(t, "value", t)) for t in getattr(backend, "tasks", ())] or ["(none)"]
    raise TaskNotSupportedError(_name(backend), Task.DETECT.value, supported)
