"""Calibration and validation images, and the ONNX Runtime calibration reader."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionkit import InvalidOptionError, load_image

__all__ = [
    "BUNDLED",
    "IMAGE_SUFFIXES",
    "FeedReader",
    "bundled_files",
    "calibration_images",
    "folder_fingerprint",
    "image_files",
    "model_feeds",
    "synthetic_images",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SYNTHETIC_VERSION = "synthetic-v1"
#: The ``source`` reported for the photos shipped with this plugin (``calibration/``, licences in
#: ``calibration/LICENSES.md``); the version changes whenever the set does.
BUNDLED = "visionkit-onnx bundled photos v1 (scikit-image CC0 / public domain)"
_BUNDLED_DIR = Path(__file__).with_name("calibration")


def bundled_files() -> list[Path]:
    """The real photos shipped with the plugin: the default calibration and accuracy-gate images."""
    return sorted(p for p in _BUNDLED_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def image_files(folder: Path, limit: int, what: str = "calib") -> list[Path]:
    """The first ``limit`` images of ``folder`` sorted by name; a clear error when there are none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InvalidOptionError(
            f"{what}={str(folder)!r} must be a folder of images, but it is not a directory."
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InvalidOptionError(
            f"{what}={str(folder)!r} holds no images; expected files ending in {', '.join(IMAGE_SUFFIXES)}."
        )
    return files[:limit]


def folder_fingerprint(files: Sequence[Path]) -> str:
    """Changes when a file is added, removed, resized or touched (cheap: no file reading)."""
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def synthetic_images(n: int, seed: int = 0, size: tuple[int, int] = (480, 640)) -> list[np.ndarray]:
    """Deterministic natural-looking images: smooth colour fields, solid shapes, edges and noise.

    Used when no calibration folder is given. Activation ranges from them are plausible but not
    those of real photos; pass ``calib=`` with a few dozen images of your domain for best INT8 accuracy.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    out = []
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(n):
        low = rng.uniform(0, 255, (h // 32 + 2, w // 32 + 2, 3))
        # bilinear upsampling of a coarse grid: smooth backgrounds like sky, walls, road
        ys = np.linspace(0, low.shape[0] - 1.001, h)
        xs = np.linspace(0, low.shape[1] - 1.001, w)
        y0, x0 = ys.astype(int), xs.astype(int)
        fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
        a = low[y0][:, x0]
        b = low[y0][:, x0 + 1]
        c = low[y0 + 1][:, x0]
        d = low[y0 + 1][:, x0 + 1]
        img = (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy
        for _ in range(int(rng.integers(3, 9))):
            colour = rng.uniform(0, 255, 3)
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            rx, ry = rng.uniform(w * 0.03, w * 0.3), rng.uniform(h * 0.03, h * 0.3)
            if rng.random() < 0.5:
                m = (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
            else:
                m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
            img[m] = colour
        img += rng.normal(0, 6, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def calibration_images(
    calib: Path | None, limit: int
) -> tuple[Callable[[], list[np.ndarray]], dict[str, Any]]:
    """A loader of the calibration images and a description of them (part of the cache key).

    ``calib``, else ``VISIONKIT_CALIB``, else the real photos bundled with the plugin (synthetic
    images collapsed INT8 YOLO confidences to 0.5 at imgsz 320). Only the folder is listed here;
    images are decoded when the loader is called (on a cache miss).
    """
    folder = calib if calib is not None else os.environ.get("VISIONKIT_CALIB")
    if folder:
        files = image_files(Path(folder), limit)
        info = {
            "source": str(Path(folder).expanduser()),
            "images": len(files),
            "fingerprint": folder_fingerprint(files),
        }
    else:
        files = bundled_files()[:limit]
        h = hashlib.sha256()
        for p in files:  # content, not paths/mtimes: the same set hashes the same wherever installed
            h.update(p.name.encode() + p.read_bytes())
        info = {"source": BUNDLED, "images": len(files), "fingerprint": h.hexdigest()[:16]}
    return (lambda: [load_image(p) for p in files]), info


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x))


def model_feeds(inputs: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """A session feed from what ``preprocess`` (or ``calibration_inputs``) returned."""
    if isinstance(inputs, dict):
        return {n: _to_numpy(inputs[n]) for n in names}
    if isinstance(inputs, (tuple, list)):
        if len(inputs) != len(names):
            raise ValueError(
                f"expected {len(names)} model inputs ({', '.join(names)}), but got {len(inputs)}"
            )
        return {n: _to_numpy(x) for n, x in zip(names, inputs, strict=True)}
    if len(names) != 1:
        raise ValueError(f"expected {len(names)} model inputs ({', '.join(names)}), but got one tensor")
    return {names[0]: _to_numpy(inputs)}


class FeedReader:
    """An ``onnxruntime.quantization.CalibrationDataReader``: one image per batch, preprocessed lazily."""

    def __init__(
        self, images: Sequence[np.ndarray], to_inputs: Callable[[list[np.ndarray]], Any], names: Sequence[str]
    ):
        self._images = list(images)
        self._to_inputs = to_inputs
        self._names = list(names)
        self._it: Iterator[np.ndarray] = iter(self._images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next feed, or ``None`` when the images are exhausted."""
        img = next(self._it, None)
        if img is None:
            return None
        return model_feeds(self._to_inputs([img]), self._names)

    def rewind(self) -> None:
        """Start again from the first image."""
        self._it = iter(self._images)

    def __len__(self) -> int:
        return len(self._images)
