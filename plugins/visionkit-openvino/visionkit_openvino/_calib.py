"""Calibration and validation images, and turning a backend's inputs into OpenVINO feeds."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionkit import InvalidOptionError, load_image

__all__ = [
    "IMAGE_SUFFIXES",
    "SYNTHETIC",
    "calibration_images",
    "folder_fingerprint",
    "image_files",
    "model_feeds",
    "synthetic_images",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: The ``source`` reported when no image folder was given; bump the version when the generator changes.
SYNTHETIC = "synthetic-v1"


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
    """Deterministic stand-ins for photos: smooth colour fields with solid shapes and noise.

    Only used when no image folder is given (and reported as such): activation ranges from them are
    plausible but not those of real photos, so INT8 calibrated on them loses more accuracy.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        c0, c1, c2 = (rng.uniform(0, 255, 3) for _ in range(3))
        fy, fx = (yy / h)[..., None], (xx / w)[..., None]
        img = c0 * (1 - fy) * (1 - fx) + c1 * fy + c2 * fx * (1 - fy)
        for _ in range(int(rng.integers(3, 9))):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            rx, ry = rng.uniform(w * 0.03, w * 0.3), rng.uniform(h * 0.03, h * 0.3)
            if rng.random() < 0.5:
                m = (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
            else:
                m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
            img[m] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 6, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def calibration_images(
    calib: Path | None, limit: int
) -> tuple[Callable[[], list[np.ndarray]], dict[str, Any]]:
    """A loader of the calibration images and a description of them (part of the cache key).

    ``calib``, else ``VISIONKIT_CALIB``, else synthetic images. Only the folder is listed here; images
    are decoded when the loader is called (on a cache miss).
    """
    folder = calib if calib is not None else os.environ.get("VISIONKIT_CALIB")
    if folder:
        files = image_files(Path(folder), limit)
        info = {
            "source": str(Path(folder).expanduser()),
            "images": len(files),
            "fingerprint": folder_fingerprint(files),
        }
        return (lambda: [load_image(p) for p in files]), info
    n = min(limit, 16)
    return (lambda: synthetic_images(n)), {"source": SYNTHETIC, "images": n, "fingerprint": SYNTHETIC}


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x))


def model_feeds(inputs: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Named numpy feeds from what ``preprocess`` (or ``calibration_inputs``) returned."""
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
