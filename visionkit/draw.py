"""Annotate an image with any visionkit result; returns a ``PIL.Image``.

Boxes and labels for :class:`Detections`, translucent masks for :class:`InstanceMasks` and
:class:`PromptMasks` (plus the prompt points/boxes recorded in its metadata), a colour-coded label map
for :class:`SemanticMask`, and the top classes for :class:`Classifications`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from visionkit.images import ImageInput, load_image
from visionkit.results import Classifications, Detections, InstanceMasks, PromptMasks, SemanticMask

__all__ = ["annotate", "color_for"]

# A fixed palette so the same class gets the same colour in every image (ultralytics' colours).
_PALETTE = np.array(
    [
        (255, 56, 56),
        (255, 157, 151),
        (255, 112, 31),
        (255, 178, 29),
        (207, 210, 49),
        (72, 249, 10),
        (146, 204, 23),
        (61, 219, 134),
        (26, 147, 52),
        (0, 212, 187),
        (44, 153, 168),
        (0, 194, 255),
        (52, 69, 147),
        (100, 115, 255),
        (0, 24, 236),
        (132, 56, 255),
        (82, 0, 133),
        (203, 56, 255),
        (255, 149, 200),
        (255, 55, 199),
    ],
    dtype=np.uint8,
)


def color_for(index: int) -> tuple[int, int, int]:
    """The palette colour of class ``index``."""
    r, g, b = _PALETTE[int(index) % len(_PALETTE)]
    return int(r), int(g), int(b)


def annotate(
    image: ImageInput, result: Any, *, mask_alpha: float = 0.45, line_width: int | None = None
) -> Image.Image:
    """Draw ``result`` over ``image`` (any accepted input) and return a new RGB ``PIL.Image``.

    Raises:
        TypeError: ``result`` is not a visionkit result.
        ValueError: the result's ``image_shape`` does not match the image.
    """
    arr = load_image(image).copy()
    h, w = arr.shape[:2]
    shape = getattr(getattr(result, "metadata", None), "image_shape", None)
    if shape is not None and tuple(shape) != (h, w):
        raise ValueError(
            f"result is for an image of (height, width) {tuple(shape)}, but the image is {(h, w)}"
        )
    lw = line_width or max(1, round((h + w) / 400))
    if isinstance(result, SemanticMask):
        colors = np.stack([np.array(color_for(i), np.uint8) for i in range(max(1, len(result.class_names)))])
        overlay = colors[np.clip(result.label_map, 0, len(colors) - 1)]
        arr = _blend(arr, overlay, result.label_map > 0, mask_alpha)
        img = Image.fromarray(arr)
        _legend(
            ImageDraw.Draw(img),
            [
                (n, color_for(result.class_names.index(n)))
                for n in result.present_classes()
                if n in result.class_names
            ],
            lw,
        )
        return img
    if isinstance(result, (InstanceMasks, PromptMasks)):
        for i, m in enumerate(result.mask):
            cid = (
                int(result.class_id[i]) if isinstance(result, InstanceMasks) else int(result.prompt_index[i])
            )
            arr = _blend(arr, np.array(color_for(cid), np.uint8), m, mask_alpha)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    if isinstance(result, Detections):
        ids = result.tracker_id
        for i, det in enumerate(result):
            # tracked objects: coloured and labelled by their track id, so one object keeps its colour
            tid = None if ids is None else int(ids[i])
            color = color_for(det.class_id if tid is None else tid)
            prefix = "" if tid is None else f"#{tid} "
            draw.rectangle(det.xyxy, outline=color, width=lw)
            _label(
                draw, f"{prefix}{det.class_name} {det.confidence:.2f}", (det.xyxy[0], det.xyxy[1]), color, lw
            )
    elif isinstance(result, PromptMasks):
        extra = result.metadata.model_extra or {}
        points = extra.get("points", [])
        for (x, y), label in zip(points, extra.get("labels") or [1] * len(points), strict=False):
            r = 2 + lw * 2
            fill = (0, 255, 0) if label else (255, 0, 0)  # foreground green, background red
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=(255, 255, 255), width=lw)
        for box in extra.get("boxes", []):
            draw.rectangle(tuple(box), outline=(0, 255, 0), width=lw)
    elif isinstance(result, Classifications):
        _legend(draw, [(f"{n} {c:.2f}", color_for(i)) for i, n, c in result], lw)
    elif not isinstance(result, (InstanceMasks, PromptMasks)):
        raise TypeError(f"cannot draw an object of type {type(result).__name__}; expected a visionkit result")
    return img


def _blend(arr: np.ndarray, color: np.ndarray, where: np.ndarray, alpha: float) -> np.ndarray:
    out = arr.astype(np.float32)
    col = np.broadcast_to(color, arr.shape).astype(np.float32)
    out[where] = (1 - alpha) * out[where] + alpha * col[where]
    return out.round().astype(np.uint8)


def _font(lw: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=max(11, lw * 6))  # scalable default font, Pillow >= 10.1
    except TypeError:
        return ImageFont.load_default()


def _label(
    draw: ImageDraw.ImageDraw,
    text: str,
    xy: tuple[float, float],
    color: tuple[int, int, int],
    lw: int = 1,
    *,
    above: bool = True,
    height: float | None = None,
) -> tuple[float, float, float, float]:
    """A filled label with ``text``; above ``xy`` (a box's corner) when it fits, else below it.

    ``above=False`` always draws it below ``xy``; ``height`` fixes its height (legend rows). Returns the
    label's ``(x0, y0, x1, y1)``.
    """
    font = _font(lw)
    x, y = xy
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = max(0, min(x, draw.im.size[0] - (right - left + 4)))  # keep labels of edge boxes on the image
    th = height if height is not None else bottom - top + 4
    y0 = y - th if above and y - th >= 0 else y
    box = (x, y0, x + right - left + 4, y0 + th)
    draw.rectangle(box, fill=color)
    draw.text((x + 2, y0 + 1), text, fill=(255, 255, 255), font=font)
    return box


# The legend lists at most this many classes, then a grey row counting the others.
_LEGEND_ROWS = 10
_LEGEND_MORE = (96, 96, 96)


def _legend(draw: ImageDraw.ImageDraw, items: list[tuple[str, tuple[int, int, int]]], lw: int) -> None:
    """Rows of one height in the top-left corner, each below the previous one, so none overlaps another.

    (Labels used to be placed like box labels, above their anchor once there was room, so from the second
    row on each one covered most of the row before it.)
    """
    rows = items[:_LEGEND_ROWS]
    if len(items) > _LEGEND_ROWS:
        rows.append((f"+{len(items) - _LEGEND_ROWS} more", _LEGEND_MORE))
    # the tallest glyphs (ascender to descender) decide the row height, the same for every row
    _, top, _, bottom = draw.textbbox((0, 0), "Hgjy|", font=_font(lw))
    height = bottom - top + 4
    y: float = 4
    for text, color in rows:
        y = _label(draw, text, (4, y), color, lw, above=False, height=height)[3] + 2
