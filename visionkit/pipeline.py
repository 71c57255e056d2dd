"""A Detector plus a PromptSegmenter is an InstanceSegmenter (any pair of backends).

Uses the task protocols only (``detect`` and ``segment_prompt``), nothing SAM-specific, so it
composes YOLO, DETR, the fakes ... with SAM, MobileSAM or any other prompt segmenter. numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from visionkit.errors import TaskNotSupportedError
from visionkit.images import as_batch, load_image
from visionkit.protocols import Detector, PromptSegmenter, Task
from visionkit.results import Detections, InstanceMasks, PromptMasks, ResultMeta

__all__ = ["DetectThenSegment", "pipeline"]


def _name(obj: Any) -> str:
    return str(getattr(obj, "name", None) or type(obj).__name__)


class DetectThenSegment:
    """Boxes from a detector, one mask per box from a prompt segmenter.

    Satisfies :class:`visionkit.Detector` (the detector's boxes) and
    :class:`visionkit.InstanceSegmenter` (the same boxes plus masks). Build it with :func:`pipeline`.

    Attributes:
        detector: the :class:`visionkit.Detector`.
        prompt_segmenter: the :class:`visionkit.PromptSegmenter`.
        clip_to_boxes: whether masks are cut to their box.
    """

    tasks = (Task.DETECT, Task.SEGMENT_INSTANCES)

    def __init__(self, detector: Any, prompt_segmenter: Any, *, clip_to_boxes: bool = True) -> None:
        self.detector = detector
        self.prompt_segmenter = prompt_segmenter
        self.clip_to_boxes = clip_to_boxes
        self.name = f"{_name(detector)}+{_name(prompt_segmenter)}"
        if getattr(detector, "open_vocabulary", False):
            # text → boxes → masks: a TextPromptedDetector in, one out (classes= goes to the detector)
            self.open_vocabulary = True

    def detect(self, images: Any, **options: Any) -> Any:
        """The detector's detections, unchanged; ``options`` go to the detector."""
        return self.detector.detect(images, **options)

    def segment_instances(self, images: Any, **options: Any) -> Any:
        """Detect, then prompt the segmenter with every box of an image in one call.

        Args:
            images: one image or a list; each is decoded once and shared by both models.
            **options: passed to the detector's ``detect`` (e.g. ``conf=0.5``).

        Returns:
            :class:`visionkit.InstanceMasks` per image: the detector's boxes, scores and classes, one mask
            per box (the segmenter's best mask for that box, cut to the box when ``clip_to_boxes``),
            and ``data["mask_score"]``, the segmenter's score of each mask.
        """
        inputs, single = as_batch(images)
        results = [self._one(load_image(x), options) for x in inputs]
        return results[0] if single else results

    def _one(self, image: np.ndarray, options: dict[str, Any]) -> InstanceMasks:
        dets: Detections = self.detector.detect(image, **options)
        h, w = image.shape[:2]
        meta = {
            **dets.metadata.model_dump(),
            "backend": self.name,
            "detector": _name(self.detector),
            "prompt_segmenter": _name(self.prompt_segmenter),
        }
        if not len(dets):
            empty = InstanceMasks.empty((h, w))
            return InstanceMasks.model_validate(
                {
                    **{k: getattr(empty, k) for k in InstanceMasks.model_fields},
                    "data": dict(dets.data),
                    "metadata": meta,
                }
            )
        prompts: PromptMasks = self.prompt_segmenter.segment_prompt(
            image, boxes=dets.xyxy, multimask_output=False
        )
        if len(prompts) != len(dets) or not np.array_equal(prompts.prompt_index, np.arange(len(dets))):
            prompts = prompts.best()  # a segmenter that ignores multimask_output=False
        masks = np.asarray(prompts.mask, bool).copy()
        if self.clip_to_boxes:
            masks &= _box_masks(dets.xyxy, h, w)
        return InstanceMasks(
            xyxy=dets.xyxy,
            confidence=dets.confidence,
            class_id=dets.class_id,
            class_name=dets.class_name,
            mask=masks,
            data={**dets.data, "mask_score": np.asarray(prompts.score, np.float32)},
            metadata=ResultMeta.model_validate(meta),
        )

    def __repr__(self) -> str:
        return f"<DetectThenSegment {self.name!r} clip_to_boxes={self.clip_to_boxes}>"


def _box_masks(xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(n, H, W)`` bool: pixels whose centre lies inside each box."""
    ys = np.arange(height, dtype=np.float32)[None, :, None] + 0.5
    xs = np.arange(width, dtype=np.float32)[None, None, :] + 0.5
    x1, y1, x2, y2 = (xyxy[:, i, None, None] for i in range(4))
    return (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)


def pipeline(detector: Any, prompt_segmenter: Any, *, clip_to_boxes: bool = True) -> DetectThenSegment:
    """Compose a :class:`visionkit.Detector` and a :class:`visionkit.PromptSegmenter` into an InstanceSegmenter.

    >>> grounded = visionkit.pipeline(visionkit.load("yolo"), visionkit.load("sam"))  # doctest: +SKIP
    >>> inst = grounded.segment_instances("kitchen.jpg")                      # doctest: +SKIP

    Args:
        detector: anything with ``detect(image, **options) -> Detections``.
        prompt_segmenter: anything with ``segment_prompt(image, boxes=..., multimask_output=False)``.
        clip_to_boxes: cut each mask to its box, so every mask lies inside its detection.

    Raises:
        TaskNotSupportedError: an argument does not implement the protocol it stands for.
    """
    for obj, proto, task in (
        (detector, Detector, Task.DETECT),
        (prompt_segmenter, PromptSegmenter, Task.SEGMENT_PROMPT),
    ):
        if not isinstance(obj, proto):
            supported = [str(t) for t in getattr(obj, "tasks", ())] or [
                "(none: it is a " + type(obj).__name__ + ")"
            ]
            raise TaskNotSupportedError(_name(obj), task.value, supported)
    return DetectThenSegment(detector, prompt_segmenter, clip_to_boxes=clip_to_boxes)
