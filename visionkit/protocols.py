"""The five task protocols and the :class:`Task` names.

Each task has one verb, so one backend can serve several tasks (a YOLO-seg model is both a
:class:`Detector` and an :class:`InstanceSegmenter`). A single image returns one result; a list or
tuple of images returns a list of results, in order.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, overload, runtime_checkable

from visionkit.errors import InvalidOptionError, close_matches

if TYPE_CHECKING:
    from visionkit.images import ImageInput
    from visionkit.results import Classifications, Detections, InstanceMasks, PromptMasks, SemanticMask

__all__ = [
    "Classifier",
    "Detector",
    "InstanceSegmenter",
    "PromptSegmenter",
    "SemanticSegmenter",
    "Task",
    "TextPromptedDetector",
]


class Task(str, enum.Enum):
    """A task a backend can perform. The value is the name of the protocol's method."""

    CLASSIFY = "classify"
    DETECT = "detect"
    SEGMENT_SEMANTIC = "segment_semantic"
    SEGMENT_INSTANCES = "segment_instances"
    SEGMENT_PROMPT = "segment_prompt"

    def __str__(self) -> str:
        return self.value

    @property
    def protocol(self) -> type:
        """The protocol class a backend offering this task satisfies."""
        return _PROTOCOLS[self]

    @classmethod
    def parse(cls, value: str | Task) -> Task:
        """Accept a :class:`Task`, its value, or a short alias (``"semantic"``, ``"instance"`` ...).

        Raises:
            InvalidOptionError: (a ``ValueError``) an unknown task; the message lists the valid ones.
        """
        if isinstance(value, Task):
            return value
        key = str(value).strip().lower().replace("-", "_")
        found = _TASK_ALIASES.get(key)
        if found is None:
            names = sorted({t.value for t in cls})
            similar = close_matches(key, _TASK_ALIASES)
            hint = f" Did you mean {', '.join(repr(m) for m in similar)}?" if similar else ""
            raise InvalidOptionError(f"Unknown task {value!r}.{hint} Valid tasks: {', '.join(names)}.")
        return found

    @classmethod
    def default(cls, tasks: Iterable[Task | str], *, prompt: bool = True) -> Task | None:
        """The task to run when none is named: the richest output among ``tasks``.

        Instances, then boxes, semantic masks, classes and last prompt segmentation (skipped with
        ``prompt=False``, for callers that have no prompt to give); ``None`` when none applies. Every
        tool (``predict``, ``bench``, streams, Ray) picks with this one rule.
        """
        offered = {cls.parse(t) for t in tasks}
        order = _TASK_PREFERENCE if prompt else _TASK_PREFERENCE[:-1]
        return next((t for t in order if t in offered), None)


@runtime_checkable
class Classifier(Protocol):
    """Assigns class scores to a whole image."""

    @overload
    def classify(self, images: ImageInput, **kwargs: Any) -> Classifications: ...
    @overload
    def classify(self, images: Sequence[ImageInput], **kwargs: Any) -> list[Classifications]: ...
    def classify(self, images: Any, **kwargs: Any) -> Any:
        """Return the top-k classes of each image."""


@runtime_checkable
class Detector(Protocol):
    """Finds objects as boxes with a class and a confidence."""

    @overload
    def detect(self, images: ImageInput, **kwargs: Any) -> Detections: ...
    @overload
    def detect(self, images: Sequence[ImageInput], **kwargs: Any) -> list[Detections]: ...
    def detect(self, images: Any, **kwargs: Any) -> Any:
        """Return the detections of each image, boxes in the input image's pixels."""


@runtime_checkable
class TextPromptedDetector(Detector, Protocol):
    """A :class:`Detector` told what to find by name (open vocabulary): Grounding DINO, OWLv2 ...

    ``detect(images, classes=["red car", "person"])`` returns :class:`Detections` whose ``class_name``
    is the asked name and ``class_id`` its index in ``classes`` (checked by
    :func:`visionkit.prompts.parse_classes`; at most the ``max_classes`` option). ``classes`` is an
    ordinary per-call option, so it can also be given at load time and flows through ``predict``,
    streaming, Ray, ``serve`` and ``eval`` like any option. Such backends register
    ``prompt_types=["text"]``.
    """

    #: Always ``True``: what tells a text-prompted detector from a closed-set one at runtime.
    open_vocabulary: bool


@runtime_checkable
class SemanticSegmenter(Protocol):
    """Labels every pixel with a class."""

    @overload
    def segment_semantic(self, images: ImageInput, **kwargs: Any) -> SemanticMask: ...
    @overload
    def segment_semantic(self, images: Sequence[ImageInput], **kwargs: Any) -> list[SemanticMask]: ...
    def segment_semantic(self, images: Any, **kwargs: Any) -> Any:
        """Return a label map at the input image's resolution."""


@runtime_checkable
class InstanceSegmenter(Protocol):
    """Finds objects as boxes plus a per-object mask."""

    @overload
    def segment_instances(self, images: ImageInput, **kwargs: Any) -> InstanceMasks: ...
    @overload
    def segment_instances(self, images: Sequence[ImageInput], **kwargs: Any) -> list[InstanceMasks]: ...
    def segment_instances(self, images: Any, **kwargs: Any) -> Any:
        """Return detections with boolean masks at the input image's resolution."""


@runtime_checkable
class PromptSegmenter(Protocol):
    """Segments what a prompt (points, boxes, a previous mask) points at."""

    def segment_prompt(
        self,
        image: Any,
        *,
        points: Any = None,
        labels: Any = None,
        boxes: Any = None,
        mask_input: Any = None,
        multimask_output: bool | None = None,
    ) -> PromptMasks:
        """Return the masks, their predicted quality and low-resolution logits for refinement."""


_PROTOCOLS: dict[Task, type] = {
    Task.CLASSIFY: Classifier,
    Task.DETECT: Detector,
    Task.SEGMENT_SEMANTIC: SemanticSegmenter,
    Task.SEGMENT_INSTANCES: InstanceSegmenter,
    Task.SEGMENT_PROMPT: PromptSegmenter,
}

_TASK_ALIASES: dict[str, Task] = {t.value: t for t in Task}
_TASK_ALIASES.update(
    {
        "classification": Task.CLASSIFY,
        "detection": Task.DETECT,
        "semantic": Task.SEGMENT_SEMANTIC,
        "semantic_segmentation": Task.SEGMENT_SEMANTIC,
        "instance": Task.SEGMENT_INSTANCES,
        "instances": Task.SEGMENT_INSTANCES,
        "instance_segmentation": Task.SEGMENT_INSTANCES,
        "segment": Task.SEGMENT_INSTANCES,
        "prompt": Task.SEGMENT_PROMPT,
        "promptable": Task.SEGMENT_PROMPT,
    }
)

# The richest output first: what a user running "yolo-seg" on a folder expects to get back.
_TASK_PREFERENCE = (
    Task.SEGMENT_INSTANCES,
    Task.DETECT,
    Task.SEGMENT_SEMANTIC,
    Task.CLASSIFY,
    Task.SEGMENT_PROMPT,
)
