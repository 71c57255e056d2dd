"""Turn any supported image input into one canonical form: an ``(H, W, 3)`` uint8 RGB numpy array.

Accepted: a path (``str`` / ``os.PathLike``), encoded bytes, a ``PIL.Image``, a numpy array (HxW gray,
HxWx1/3/4, uint8 / uint16 / float in [0, 1]), or a torch tensor (CHW or HW; float in [0, 1] or uint8,
as torchvision uses). RGBA drops alpha, 16-bit is scaled to 8-bit, EXIF orientation is applied.
Anything else raises :class:`~visionkit.errors.InvalidImageError` saying what was received.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from visionkit.errors import InvalidImageError

__all__ = ["ImageInput", "as_batch", "load_image"]

#: Anything :func:`load_image` accepts.
ImageInput: TypeAlias = "str | os.PathLike[str] | bytes | Image.Image | np.ndarray | Any"

ACCEPTED = (
    "a file path, encoded image bytes, a PIL.Image, a numpy array (H,W) / (H,W,1|3|4) of uint8, uint16 "
    "or float in [0, 1], or a torch tensor (C,H,W)"
)


def _fail(problem: str) -> InvalidImageError:
    return InvalidImageError(f"{problem}. Expected {ACCEPTED}.")


def load_image(image: ImageInput) -> np.ndarray:
    """Return ``image`` as a C-contiguous ``(H, W, 3)`` uint8 RGB array.

    Raises:
        InvalidImageError: missing or corrupt file, empty image, wrong ndim/dtype/channels, NaN values.
    """
    if isinstance(image, (str, os.PathLike)):
        return _from_pil(_open_path(Path(image)), f"file {os.fspath(image)!r}")
    if isinstance(image, (bytes, bytearray, memoryview)):
        if not len(image):
            raise _fail("Received empty bytes")
        return _from_pil(_open_bytes(bytes(image), "image bytes"), "image bytes")
    if isinstance(image, Image.Image):
        return _from_pil(image, "PIL image")
    if _is_torch_tensor(image):
        return _from_tensor(image)
    if isinstance(image, np.ndarray):
        return _from_array(image)
    raise _fail(f"Received an object of type {type(image).__module__}.{type(image).__qualname__}")


def as_batch(images: ImageInput | Sequence[ImageInput]) -> tuple[list[ImageInput], bool]:
    """Split the one-or-many convention: return ``(list_of_inputs, was_single)``.

    A ``list`` or ``tuple`` is a batch; anything else is one image. A 4-D array is refused rather than
    guessed at, because NHWC and NCHW cannot be told apart reliably.
    """
    if isinstance(images, (list, tuple)):
        return list(images), False
    if (isinstance(images, np.ndarray) or _is_torch_tensor(images)) and getattr(images, "ndim", 0) == 4:
        raise InvalidImageError(
            f"Received a 4-D array of shape {tuple(getattr(images, 'shape', ()))}; pass a batch as a list of images "
            "(e.g. `list(batch)`) so each image's layout is unambiguous."
        )
    return [images], True


def _open_path(path: Path) -> Image.Image:
    if not path.exists():
        raise InvalidImageError(f"Image file {str(path)!r} does not exist. Expected {ACCEPTED}.")
    if path.is_dir():
        raise InvalidImageError(f"Image path {str(path)!r} is a directory, not an image file.")
    if path.stat().st_size == 0:
        raise InvalidImageError(f"Image file {str(path)!r} is empty (0 bytes).")
    return _open_bytes(path.read_bytes(), f"file {str(path)!r}")


def _open_bytes(data: bytes, what: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # decode now so truncated/corrupt data fails here, not later
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"{what} is too large to decode safely: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, ImportError) as exc:
        # ImportError: ultralytics patches Image.open process-wide and tries an optional HEIF
        # decoder on anything PIL cannot identify.
        raise InvalidImageError(
            f"Cannot decode {what} as an image ({type(exc).__name__}: {exc}); the file is corrupt or not an image."
        ) from exc
    return img


def _from_pil(img: Image.Image, what: str) -> np.ndarray:
    with contextlib.suppress(Exception):  # a broken EXIF block should not make a decodable image unusable
        img = ImageOps.exif_transpose(img) or img
    if img.width == 0 or img.height == 0:
        raise _fail(f"Received an empty {what} of size {img.width}x{img.height}")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        return _from_array(arr.astype(np.uint16) if img.mode != "I" else arr.astype(np.int64))
    if img.mode == "F":
        return _from_array(np.asarray(img, dtype=np.float32))
    if img.mode != "RGB":
        img = (
            img.convert("RGBA").convert("RGB")
            if "A" in img.getbands() or img.mode == "P"
            else img.convert("RGB")
        )
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _from_array(arr: np.ndarray) -> np.ndarray:
    if arr.size == 0:
        raise _fail(f"Received an empty array of shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        raise _fail(
            f"Received an array of shape {arr.shape}, which looks channels-first (C,H,W); numpy images must be "
            "channels-last (H,W,C): use `arr.transpose(1, 2, 0)`"
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise _fail(f"Received an array of shape {arr.shape} (ndim {arr.ndim})")
    arr = _to_uint8(arr)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        return arr
    if kind == "b":
        raise _fail("Received a boolean array; an image needs intensities, not a mask")
    if kind == "f":
        if not np.all(np.isfinite(arr)):
            raise _fail(f"Received a float array of shape {arr.shape} containing NaN or inf")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise _fail(
                f"Received a float array with values in [{lo:.3g}, {hi:.3g}]; float images must be in [0, 1] "
                "(or convert to uint8 first)"
            )
        return np.round(arr * 255.0).astype(np.uint8)
    if kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise _fail(f"Received an integer array of dtype {arr.dtype} with negative values (min {lo})")
        if arr.dtype == np.uint16 or hi > 255:
            if hi > 65535:
                raise _fail(f"Received an integer array of dtype {arr.dtype} with values up to {hi}")
            return (arr.astype(np.uint32) >> 8).astype(np.uint8)  # 16-bit to 8-bit: keep the high byte
        return arr.astype(np.uint8)
    raise _fail(f"Received an array of dtype {arr.dtype}")


def _is_torch_tensor(obj: Any) -> bool:
    # Checked by type name so that accepting tensors never imports torch.
    return any(c.__module__ == "torch" and c.__name__ == "Tensor" for c in type(obj).__mro__)


def _from_tensor(t: Any) -> np.ndarray:
    arr = t.detach().cpu().numpy()
    if arr.ndim == 3:
        if arr.shape[0] not in (1, 3, 4):
            raise _fail(
                f"Received a tensor of shape {tuple(arr.shape)}; tensors must be channels-first (C,H,W)"
            )
        arr = arr.transpose(1, 2, 0)
    return _from_array(arr)
