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
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from visionkit.errors import InvalidImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "ImageInput",
    "as_batch",
    "list_images",
    "load_image",
    "media_kind",
]

#: File suffixes read as images when a folder is listed (a file named explicitly is read whatever its suffix).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)
#: File suffixes read as videos, frame by frame.
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})

#: Anything :func:`load_image` accepts.
ImageInput: TypeAlias = "str | os.PathLike[str] | bytes | Image.Image | np.ndarray | Any"

ACCEPTED = (
    "a file path, encoded image bytes, a PIL.Image, a numpy array (H,W) / (H,W,1|3|4) of uint8, uint16 "
    "or float in [0, 1], or a torch tensor (C,H,W)"
)


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _fail(problem: str) -> InvalidImageError:
    return InvalidImageError(f"{problem}. Expected {ACCEPTED}.")


# Pillow's own opener, as found when visionkit.images was imported (usually before any backend library).
_PIL_OPEN_AT_IMPORT: Any = Image.open


def _pil_open() -> Any:
    """Pillow's own ``Image.open``, even when a library replaced it process-wide.

    ultralytics swaps ``PIL.Image.open`` for a wrapper that, on a file Pillow cannot identify, tries
    to pip-install and import a HEIF decoder; the user then reads "No module named 'pi_heif'" about a
    text file. Formats registered with Pillow (HEIF included, once its opener is registered) still open.
    """
    opener: Any = Image.open
    for _ in range(4):  # unwrap wrappers that keep the original as __wrapped__ or in their globals
        if getattr(opener, "__module__", None) == "PIL.Image":
            return opener
        opener = getattr(opener, "__wrapped__", None) or getattr(opener, "__globals__", {}).get("_image_open")
        if opener is None:
            break
    if getattr(_PIL_OPEN_AT_IMPORT, "__module__", None) == "PIL.Image":
        return _PIL_OPEN_AT_IMPORT
    return Image.open


def load_image(image: ImageInput) -> np.ndarray:
    """Return ``image`` as a C-contiguous ``(H, W, 3)`` uint8 RGB array.

    Raises:
        InvalidImageError: missing or corrupt file, empty image, wrong ndim/dtype/channels, NaN values.
    """
    if isinstance(image, str) and _URL.match(image):
        raise InvalidImageError(
            f"URLs are not supported: {image!r}. Download the file first and pass its local path."
        )
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
        img = _pil_open()(io.BytesIO(data))
        img.load()  # decode now so truncated/corrupt data fails here, not later
        if data[:8] == _PNG_SIGNATURE:
            _check_png_complete(data)
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"{what} is too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            f"Cannot decode {what}: not an image format Pillow can read (or a corrupt file)."
        ) from exc
    except (OSError, SyntaxError, ValueError, ImportError, struct.error, zlib.error) as exc:
        raise InvalidImageError(
            f"Cannot decode {what} as an image ({type(exc).__name__}: {exc}); the file is corrupt or not an image."
        ) from exc
    return img


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _check_png_complete(data: bytes) -> None:
    """Raise ``OSError`` when a PNG's pixel data is shorter than its header promises.

    Pillow decodes a PNG whose compressed stream ends early (a well-formed file with rows missing)
    without complaint and leaves the missing rows black; counting the decompressed bytes catches it.
    """
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = _PNG_CHANNELS.get(colour, 0) * depth
    if not bits:
        return  # unknown colour type: Pillow already refused or understood it
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w > 0 and h > 0:
            expected += h * (1 + (w * bits + 7) // 8)
    got, pos, inflate = 0, 8, zlib.decompressobj()
    while pos + 8 <= len(data) and got < expected:
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            chunk = data[pos + 8 : pos + 8 + length]
            while chunk and got < expected:  # count in bounded pieces, never holding the whole image
                got += len(inflate.decompress(chunk, 1 << 20))
                chunk = inflate.unconsumed_tail
        elif kind == b"IEND":
            break
        pos += 12 + length
    if got < expected:
        raise OSError(f"PNG pixel data is truncated: {got} of {expected} bytes")


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


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files directly in ``folder`` (by :data:`IMAGE_SUFFIXES`, case-insensitive), sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def media_kind(path: str | os.PathLike[str]) -> str:
    """``"video"`` for a video suffix (:data:`VIDEO_SUFFIXES`), else ``"image"``."""
    return "video" if Path(path).suffix.lower() in VIDEO_SUFFIXES else "image"
