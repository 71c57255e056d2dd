"""Result types shared by every backend.

All results are frozen pydantic v2 models whose array fields are validated (dtype, shape), read-only,
compared by value with ``==`` and serialised to JSON losslessly (``model_dump_json`` /
``model_validate_json``; ``to_dict`` / ``from_dict`` for plain Python). Per-item results
(:class:`Detections`, :class:`InstanceMasks`, :class:`PromptMasks`) support ``len``, iteration and
numpy-style indexing: ``dets[dets.confidence > 0.5]``, ``dets[:3]``, ``dets[[0, 2]]``.

Coordinates are always absolute pixels of the image that was passed in (after EXIF orientation),
never of a resized or letterboxed model input. ``metadata.image_shape`` is ``(height, width)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Any, ClassVar, NamedTuple, TypeVar, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import Self

from visionkit._arrays import ArraySpec, arrays_equal

__all__ = [
    "Classifications",
    "Detection",
    "Detections",
    "InstanceMasks",
    "PromptMasks",
    "Result",
    "ResultMeta",
    "SemanticMask",
]

Boxes = Annotated[np.ndarray, ArraySpec(np.float32, (None, 4))]
Scores = Annotated[np.ndarray, ArraySpec(np.float32, (None,))]
Ids = Annotated[np.ndarray, ArraySpec(np.int64, (None,))]
Masks = Annotated[np.ndarray, ArraySpec(np.bool_, (None, None, None))]
Logits = Annotated[np.ndarray, ArraySpec(np.float32, (None, None, None))]
LabelMap = Annotated[np.ndarray, ArraySpec(np.int32, (None, None))]
AnyArray = Annotated[np.ndarray, ArraySpec()]

R = TypeVar("R", bound="Result")


class ResultMeta(BaseModel):
    """Per-image metadata. Backends may add their own keys (e.g. ``label_space``, ``imgsz``)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    image_shape: tuple[int, int] = Field(description="(height, width) of the input image in pixels.")
    backend: str | None = Field(default=None, description="Name of the backend that produced the result.")

    @field_validator("image_shape")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 0 or v[1] < 0:
            raise ValueError(f"image_shape must be non-negative (height, width), but got {v}")
        return v

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResultMeta):
            return NotImplemented
        return arrays_equal(self.model_dump(), other.model_dump())

    __hash__ = None  # type: ignore[assignment]


def _meta(value: ResultMeta | dict[str, Any] | tuple[int, int]) -> ResultMeta:
    if isinstance(value, ResultMeta):
        return value
    if isinstance(value, tuple):
        return ResultMeta(image_shape=value)
    return ResultMeta.model_validate(value)


class Result(BaseModel):
    """Base of every result: frozen, strict fields, array-aware ``==``, JSON round-trip."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    #: Fields whose first dimension is the item axis; indexing and ``len`` use them.
    _item_fields: ClassVar[tuple[str, ...]] = ()

    metadata: ResultMeta

    @field_validator("metadata", mode="before")
    @classmethod
    def _coerce_meta(cls, v: Any) -> ResultMeta:
        return _meta(v)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(arrays_equal(getattr(self, f), getattr(other, f)) for f in type(self).model_fields)

    __hash__ = None  # type: ignore[assignment]

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the input image."""
        return self.metadata.image_shape

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (arrays as lists; masks bit-packed). Inverse of :meth:`from_dict`."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild a result from :meth:`to_dict` output (or any dict of lists/arrays)."""
        return cls.model_validate(data)

    def to_json(self, **kwargs: Any) -> str:
        """JSON text; inverse of :meth:`from_json`."""
        return self.model_dump_json(**kwargs)

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        """Rebuild a result from :meth:`to_json` output."""
        return cls.model_validate_json(text)

    # -- per-item behaviour (used by subclasses that declare _item_fields) ----------------------
    def __len__(self) -> int:
        if not self._item_fields:
            raise TypeError(f"{type(self).__name__} has no items")
        return len(getattr(self, self._item_fields[0]))

    def is_empty(self) -> bool:
        """True when the result holds no items."""
        return len(self) == 0

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Self:
        """Select items: an int (kept as a length-1 result), a slice, int indices or a boolean mask."""
        n = len(self)
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of range for {type(self).__name__} of length {n}")
            index = np.array([i % n if n else i])
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.size == 0 and index.dtype != bool:
                index = index.astype(np.int64)  # `dets[[]]`: numpy reads `[]` as float64
            if index.dtype == bool and index.shape != (n,):
                raise IndexError(f"boolean index must have shape ({n},), but got shape {index.shape}")
            if index.dtype != bool and index.size and index.dtype.kind not in "iu":
                raise IndexError(f"index must be ints or a boolean mask, but got dtype {index.dtype}")
        fields: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in self._item_fields and value is not None:
                fields[name] = _take(value, index)
            elif name == "data":
                fields[name] = {k: np.asarray(v)[index] for k, v in value.items()}
            else:
                fields[name] = value
        return type(self).model_validate(fields)

    def _check_item_lengths(self) -> None:
        n = len(self)
        for name in self._item_fields:
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(
                    f"{name} must have {n} items to match {self._item_fields[0]}, but got {len(value)}"
                )
        for key, value in getattr(self, "data", {}).items():
            if len(value) != n:
                raise ValueError(
                    f"data[{key!r}] must have {n} items (one per detection), but got {len(value)}"
                )


def _take(value: Any, index: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value[index]
    return tuple(np.asarray(value, dtype=object)[index].tolist()) if len(value) else ()


class Detection(NamedTuple):
    """One detection, as yielded by iterating a :class:`Detections`."""

    xyxy: tuple[float, float, float, float]
    confidence: float
    class_id: int
    class_name: str
    mask: np.ndarray | None = None


class Detections(Result):
    """Boxes found in one image.

    Attributes:
        xyxy: ``(n, 4)`` float32 boxes ``x1, y1, x2, y2`` in absolute pixels of the input image.
        confidence: ``(n,)`` float32 scores in ``[0, 1]``.
        class_id: ``(n,)`` int64 ids in the backend's label space (``metadata.label_space`` says which).
        class_name: ``n`` class names.
        tracker_id: optional ``(n,)`` int64 ids that persist across the frames of a video, set by a
            tracker (:func:`visionkit.track`); ``None`` for a single image.
        data: extra per-item arrays whose first dimension is ``n``.
        metadata: per-image :class:`ResultMeta` (``image_shape``, ``backend`` ...).
    """

    _item_fields: ClassVar[tuple[str, ...]] = ("xyxy", "confidence", "class_id", "class_name", "tracker_id")

    xyxy: Boxes
    confidence: Scores
    class_id: Ids
    class_name: tuple[str, ...]
    tracker_id: Ids | None = None
    data: dict[str, AnyArray] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._check_item_lengths()
        if len(self.xyxy) and np.any(self.xyxy[:, 2:] < self.xyxy[:, :2]):
            bad = np.flatnonzero(np.any(self.xyxy[:, 2:] < self.xyxy[:, :2], axis=1))[:3].tolist()
            raise ValueError(f"xyxy boxes must have x2 >= x1 and y2 >= y1, but rows {bad} do not")
        return self

    @classmethod
    def empty(cls, image_shape: tuple[int, int], **metadata: Any) -> Self:
        """A result with no items for an image of ``image_shape`` = (height, width)."""
        h, w = image_shape
        extra: dict[str, Any] = {"mask": np.zeros((0, h, w), bool)} if "mask" in cls.model_fields else {}
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros(0, np.float32),
            class_id=np.zeros(0, np.int64),
            class_name=(),
            metadata=ResultMeta(image_shape=(h, w), **metadata),
            **extra,
        )

    def __iter__(self) -> Iterator[Detection]:  # type: ignore[override]
        mask = getattr(self, "mask", None)
        for i in range(len(self)):
            x1, y1, x2, y2 = (float(v) for v in self.xyxy[i])
            yield Detection(
                (x1, y1, x2, y2),
                float(self.confidence[i]),
                int(self.class_id[i]),
                self.class_name[i],
                None if mask is None else mask[i],
            )

    @property
    def area(self) -> np.ndarray:
        """``(n,)`` box areas in pixels."""
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return np.asarray(wh[:, 0] * wh[:, 1])

    def to_supervision(self) -> Any:
        """This result as a ``supervision.Detections`` (lossless; see :mod:`visionkit.supervision`)."""
        from visionkit.supervision import to_supervision

        return to_supervision(self)

    @classmethod
    def from_supervision(cls, detections: Any, **kwargs: Any) -> Self:
        """Build from a ``supervision.Detections`` (keywords: see ``visionkit.supervision.detections_from_supervision``).

        An :class:`InstanceMasks` when ``detections.mask`` is set; ``InstanceMasks.from_supervision`` requires masks.
        """
        from visionkit.supervision import detections_from_supervision

        masks = kwargs.pop("masks", None)
        if issubclass(cls, InstanceMasks):
            masks = True
        return cast(Self, detections_from_supervision(detections, masks=masks, **kwargs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, image_shape={self.image_shape}, classes={sorted(set(self.class_name))})"


class InstanceMasks(Detections):
    """Detections plus one boolean mask per item.

    Attributes:
        mask: ``(n, H, W)`` bool, at the input image's resolution ``metadata.image_shape`` (never the
            letterboxed or resized model input).
    """

    _item_fields: ClassVar[tuple[str, ...]] = (*Detections._item_fields, "mask")

    mask: Masks

    @model_validator(mode="after")
    def _check_mask(self) -> Self:
        if self.mask.shape[1:] != tuple(self.image_shape):
            raise ValueError(
                f"mask must be (n, {self.image_shape[0]}, {self.image_shape[1]}) to match metadata.image_shape, "
                f"but got shape {self.mask.shape}"
            )
        return self

    def as_detections(self) -> Detections:
        """Drop the masks."""
        fields = {name: getattr(self, name) for name in Detections.model_fields}
        return Detections.model_validate(fields)


class Classifications(Result):
    """Top-k classes of one image, most confident first.

    Attributes:
        class_id: ``(k,)`` int64 class ids.
        confidence: ``(k,)`` float32 probabilities in ``[0, 1]``, non-increasing.
        class_name: ``k`` class names.
    """

    _item_fields: ClassVar[tuple[str, ...]] = ("class_id", "confidence", "class_name")

    class_id: Ids
    confidence: Scores
    class_name: tuple[str, ...]

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._check_item_lengths()
        if np.any(np.diff(self.confidence) > 1e-6):
            raise ValueError("confidence must be sorted from most to least confident")
        return self

    @property
    def top1(self) -> tuple[int, str, float]:
        """``(class_id, class_name, confidence)`` of the best class."""
        if not len(self):
            raise IndexError("no classes in this result")
        return int(self.class_id[0]), self.class_name[0], float(self.confidence[0])

    def to_supervision(self) -> Any:
        """This result as a ``supervision.Classifications`` (class ids and confidences only)."""
        from visionkit.supervision import to_supervision

        return to_supervision(self)

    @classmethod
    def from_supervision(cls, classifications: Any, **kwargs: Any) -> Self:
        """Build from a ``supervision.Classifications``; ``class_names=`` and ``image_shape=`` are required
        (see ``visionkit.supervision.classifications_from_supervision``)."""
        from visionkit.supervision import classifications_from_supervision

        return cast(Self, classifications_from_supervision(classifications, **kwargs))

    def __iter__(self) -> Iterator[tuple[int, str, float]]:  # type: ignore[override]
        for i in range(len(self)):
            yield int(self.class_id[i]), self.class_name[i], float(self.confidence[i])


class SemanticMask(Result):
    """A class label for every pixel of one image.

    Attributes:
        label_map: ``(H, W)`` int32 class index per pixel, at the input image's resolution.
        class_names: name of every class index the model can output (``class_names[label]``).
        scores: optional ``(C, H, W)`` float32 per-class probabilities.
    """

    label_map: LabelMap
    class_names: tuple[str, ...]
    scores: Annotated[np.ndarray, ArraySpec(np.float32, (None, None, None))] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.label_map.shape != tuple(self.image_shape):
            raise ValueError(
                f"label_map must have shape {tuple(self.image_shape)} (metadata.image_shape), "
                f"but got {self.label_map.shape}"
            )
        if self.class_names and self.label_map.size:
            lo, hi = int(self.label_map.min()), int(self.label_map.max())
            if lo < 0 or hi >= len(self.class_names):
                raise ValueError(
                    f"label_map values must be in [0, {len(self.class_names)}), but got [{lo}, {hi}]"
                )
        if self.scores is not None and self.scores.shape[1:] != self.label_map.shape:
            raise ValueError(f"scores must be (C, H, W) matching label_map, but got {self.scores.shape}")
        return self

    def mask(self, cls: int | str) -> np.ndarray:
        """Boolean ``(H, W)`` mask of one class, by index or name."""
        idx = self.class_names.index(cls) if isinstance(cls, str) else int(cls)
        return np.asarray(self.label_map == idx)

    def present_classes(self) -> list[str]:
        """Names of the classes that cover at least one pixel, by index."""
        ids = np.unique(self.label_map).tolist()
        return [self.class_names[i] if i < len(self.class_names) else str(i) for i in ids]


class PromptMasks(Result):
    """Masks produced for prompts (points, boxes, a previous mask) on one image.

    Attributes:
        mask: ``(n, H, W)`` bool masks at the input image's resolution.
        score: ``(n,)`` float32 predicted mask quality (e.g. SAM's predicted IoU), best first within a prompt.
        prompt_index: ``(n,)`` int64 index of the prompt each mask answers (0 for a single prompt).
        logits: optional ``(n, h, w)`` float32 low-resolution mask logits; pass one back as ``mask_input``
            to refine.
    """

    _item_fields: ClassVar[tuple[str, ...]] = ("mask", "score", "prompt_index", "logits")

    mask: Masks
    score: Scores
    prompt_index: Ids
    logits: Logits | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._check_item_lengths()
        if self.mask.shape[1:] != tuple(self.image_shape):
            raise ValueError(
                f"mask must be (n, {self.image_shape[0]}, {self.image_shape[1]}) to match metadata.image_shape, "
                f"but got shape {self.mask.shape}"
            )
        return self

    def best(self) -> Self:
        """Keep the highest-scoring mask of each prompt."""
        keep = [
            int(np.flatnonzero(self.prompt_index == p)[np.argmax(self.score[self.prompt_index == p])])
            for p in np.unique(self.prompt_index)
        ]
        return self[np.array(keep, dtype=np.int64)]
