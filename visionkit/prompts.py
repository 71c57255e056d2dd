"""Checking and normalising segmentation prompts (numpy only, so it is cheap to test exhaustively).

Shared by every prompt segmenter (SAM, MobileSAM, SAM 2 ...), so one grammar and one set of errors
hold for all of them. Prompt grammar, in the input image's pixels:

- ``points`` ``(n, 2)`` with ``labels`` ``(n,)``: ONE prompt made of n clicks (1 = foreground,
  0 = background). ``(b, n, 2)`` with labels ``(b, n)``: b prompts of n clicks each.
- ``boxes`` ``(b, 4)`` ``x1, y1, x2, y2``: b prompts, one per box. With boxes, ``(n, 2)`` points are
  shared by every box; ``(b, n, 2)`` points are paired with the boxes one to one.
- ``mask_input`` ``(h, w)``, ``(1, h, w)``, ``(b, h, w)`` or ``(b, 1, h, w)`` low-resolution logits of a
  previous call (``PromptMasks.logits``), one for all prompts or one per prompt.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from visionkit.errors import InvalidPromptError
from visionkit.limits import check_limit

__all__ = ["MAX_CLASSES", "Prompts", "parse_classes", "parse_prompts"]


@dataclass(frozen=True)
class Prompts:
    """Validated prompts, batched: every array's first axis is the prompt index.

    Attributes:
        points: ``(b, n, 2)`` float64 pixel coordinates, or None.
        labels: ``(b, n)`` int64 labels, or None.
        boxes: ``(b, 4)`` float64 boxes, or None.
        mask_input: ``(b, 1, h, w)`` float32 logits, or None.
        count: number of prompts ``b``.
        multimask: whether each prompt returns 3 ranked masks (else 1).
    """

    points: np.ndarray | None
    labels: np.ndarray | None
    boxes: np.ndarray | None
    mask_input: np.ndarray | None
    count: int
    multimask: bool


_SHORT = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHORT.maxlist = _SHORT.maxtuple = 4
_SHORT.maxlevel = 3


def _array(value: Any, what: str, dtype: type) -> np.ndarray:
    try:
        arr: np.ndarray = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        shown = _SHORT.repr(value)  # a bad request may hold thousands of points: show the start only
        if "inhomogeneous" in str(exc) or "sequence" in str(exc):
            raise InvalidPromptError(
                f"{what} must be a regular array of numbers (every row the same length), but got a ragged "
                f"list {shown}."
            ) from None
        raise InvalidPromptError(f"{what} must be numbers, but got {shown} ({exc}).") from None
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InvalidPromptError(f"{what} must be finite, but got NaN or inf in {arr.tolist()!r}.")
    return arr


def _points(points: Any, labels: Any, height: int, width: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Return ``(points (b,n,2), labels (b,n), grouped)``; grouped means points were given as (b,n,2)."""
    pts = _array(points, "points", np.float64)
    if pts.ndim == 1 and pts.shape == (2,):
        pts = pts[None]
    if pts.ndim not in (2, 3) or pts.shape[-1] != 2:
        raise InvalidPromptError(
            f"points must have shape (n, 2) for one prompt or (b, n, 2) for b prompts, but got shape {pts.shape}."
        )
    grouped = pts.ndim == 3
    if labels is None:
        lab = np.ones(pts.shape[:-1], np.int64)
    else:
        raw = _array(labels, "labels", np.float64)
        if raw.shape != pts.shape[:-1]:
            raise InvalidPromptError(
                f"labels must have shape {pts.shape[:-1]} (one per point), but got shape {raw.shape}."
            )
        if not np.isin(raw, (0, 1)).all():
            bad = sorted(set(raw[~np.isin(raw, (0, 1))].tolist()))
            raise InvalidPromptError(f"labels must be 1 (foreground) or 0 (background), but got {bad}.")
        lab = raw.astype(np.int64)
    flat = pts.reshape(-1, 2)
    outside = (flat[:, 0] < 0) | (flat[:, 0] >= width) | (flat[:, 1] < 0) | (flat[:, 1] >= height)
    if outside.any():
        raise InvalidPromptError(
            f"points {flat[outside][:5].tolist()} fall outside the image of width {width} and height {height} "
            "(x must be in [0, width), y in [0, height))."
        )
    return (pts if grouped else pts[None]), (lab if grouped else lab[None]), grouped


def _boxes(boxes: Any, height: int, width: int) -> np.ndarray:
    bxs = _array(boxes, "boxes", np.float64)
    if bxs.shape == (4,):
        bxs = bxs[None]
    if bxs.ndim != 2 or bxs.shape[1] != 4:
        raise InvalidPromptError(
            f"boxes must have shape (b, 4) as x1, y1, x2, y2, but got shape {bxs.shape}."
        )
    inverted = (bxs[:, 2] < bxs[:, 0]) | (bxs[:, 3] < bxs[:, 1])
    if inverted.any():
        raise InvalidPromptError(
            f"boxes {bxs[inverted][:5].tolist()} must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1."
        )
    off = (bxs[:, 2] < 0) | (bxs[:, 0] > width) | (bxs[:, 3] < 0) | (bxs[:, 1] > height)
    if off.any():
        raise InvalidPromptError(
            f"boxes {bxs[off][:5].tolist()} lie entirely outside the image of width {width} and height {height}."
        )
    # Boxes from detectors may overhang the border by a fraction of a pixel: clip rather than refuse.
    return np.clip(bxs, 0, [width, height, width, height])


def _mask_input(mask_input: Any, count: int, size: int) -> np.ndarray:
    m = _array(mask_input, "mask_input", np.float32)
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[1] != 1 or m.shape[2:] != (size, size):
        raise InvalidPromptError(
            f"mask_input must be low-resolution logits of shape ({size}, {size}), (1, {size}, {size}) or "
            f"(b, {size}, {size}) as returned in PromptMasks.logits, but got shape {np.shape(mask_input)}."
        )
    if m.shape[0] not in (1, count):
        raise InvalidPromptError(
            f"mask_input holds {m.shape[0]} masks; give 1 (shared) or one per prompt ({count})."
        )
    return np.array(np.broadcast_to(m, (count, 1, size, size)), dtype=np.float32)  # writable copy for torch


def parse_prompts(
    *,
    points: Any,
    labels: Any,
    boxes: Any,
    mask_input: Any,
    multimask_output: bool | None,
    image_shape: tuple[int, int],
    low_res_size: int,
    max_points: int | None = None,
    max_prompts: int | None = None,
) -> Prompts:
    """Validate prompts against an image of ``image_shape`` = (height, width) and batch them.

    Multimask policy when ``multimask_output`` is None: exactly one prompt made of points only (no box,
    no ``mask_input``) is ambiguous and gets 3 ranked masks; anything else gets one mask per prompt.

    Raises:
        InvalidPromptError: no prompt, wrong or ragged shapes, labels not 0/1, points outside the image,
            boxes inverted or off the image, mask_input of the wrong size, prompt counts that do not pair up.
        LimitExceededError: more than ``max_points`` points in one prompt or ``max_prompts`` prompts.
    """
    h, w = image_shape
    if labels is not None and points is None:
        raise InvalidPromptError("labels were given without points; labels say which points are foreground.")
    # Converted once up front: np.size() of a ragged list raises numpy's own ValueError.
    points = None if points is None else _array(points, "points", np.float64)
    boxes = None if boxes is None else _array(boxes, "boxes", np.float64)
    has_points = points is not None and points.size > 0
    has_boxes = boxes is not None and boxes.size > 0
    if not has_points and not has_boxes:
        if mask_input is not None:
            raise InvalidPromptError(
                "Received only mask_input; refine it with the points and/or boxes that produced it."
            )
        raise InvalidPromptError(
            "Received no prompt: give points=[(x, y)] (with labels) and/or boxes=[(x1, y1, x2, y2)]."
        )
    pts = lab = bxs = None
    grouped = False
    if has_points:
        pts, lab, grouped = _points(points, labels, h, w)
    elif labels is not None and _array(labels, "labels", np.float64).size:
        raise InvalidPromptError("labels were given without points; labels say which points are foreground.")
    if has_boxes:
        bxs = _boxes(boxes, h, w)
    if pts is not None:
        check_limit("max_points", pts.shape[1], max_points, what="points in one prompt")
    count = max(len(bxs) if bxs is not None else 0, len(pts) if pts is not None else 0)
    check_limit("max_prompts", count, max_prompts, what="prompts (boxes or point groups) in one call")
    if pts is not None and bxs is not None and len(pts) != len(bxs):
        if grouped:
            raise InvalidPromptError(
                f"points of shape (b, n, 2) give {len(pts)} prompts but boxes give {len(bxs)}; pair them one "
                "to one, or pass (n, 2) points to share them with every box."
            )
        pts = np.repeat(pts, len(bxs), axis=0)
        lab = np.repeat(lab, len(bxs), axis=0)  # type: ignore[arg-type]
    masks = None if mask_input is None else _mask_input(mask_input, count, low_res_size)
    multi = (
        (count == 1 and bxs is None and masks is None) if multimask_output is None else bool(multimask_output)
    )
    return Prompts(pts, lab, bxs, masks, count, multi)


#: Default ``max_classes`` of text-prompted detectors: names asked for in one call.
MAX_CLASSES = 256


def parse_classes(classes: Any, *, max_classes: int | None = MAX_CLASSES) -> tuple[str, ...]:
    """The class names a text-prompted detector is asked to find, checked: ``["red car", "person"]``.

    Names are stripped of surrounding spaces and keep their order (a result's ``class_id`` is the index
    of its name here).

    Raises:
        InvalidPromptError: not a list of names, an empty list, a blank or non-text name, a name twice.
        LimitExceededError: more than ``max_classes`` names (the ``max_classes`` option).
    """
    if isinstance(classes, str) or not isinstance(classes, (list, tuple)):
        raise InvalidPromptError(
            f"classes must be a list of names such as ['dog', 'red car'], but got {reprlib.repr(classes)} "
            f"of type {type(classes).__name__}."
        )
    if not classes:
        raise InvalidPromptError("classes is empty; name at least one thing to find, e.g. classes=['dog'].")
    check_limit("max_classes", len(classes), max_classes, what="class names in one call")
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, name in enumerate(classes):
        if not isinstance(name, str) or not name.strip():
            raise InvalidPromptError(
                f"classes[{i}] = {reprlib.repr(name)} is not a name; give non-empty text."
            )
        clean = " ".join(name.split())
        key = clean.casefold()
        if key in seen:
            raise InvalidPromptError(
                f"classes[{i}] = {clean!r} repeats classes[{seen[key]}]; give each name once."
            )
        seen[key] = i
        names.append(clean)
    return tuple(names)
