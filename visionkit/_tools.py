"""Small helpers every tool (eval, bench, compare, stream, Ray, serve, the CLI) shares.

This module sits below the tools: it imports only the contract modules, so no tool has to import
another tool for a progress bar or a version string.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "SCHEMA_VERSION",
    "Progress",
    "option_fields",
    "progress",
    "progress_wanted",
    "synthetic_image",
    "version",
]

T = TypeVar("T")

#: Version of the JSON reports (eval, bench, compare); bumped when a field changes meaning.
SCHEMA_VERSION = 1


def version() -> str:
    """visionkit's version (the package's ``__version__``)."""
    from visionkit import __version__

    return __version__


def option_fields(backend: Any) -> dict[str, Any]:
    """The backend's option names → pydantic field info (empty when it has no typed options)."""
    from pydantic import BaseModel

    opts = getattr(backend, "options", None)
    return dict(getattr(type(opts), "model_fields", {})) if isinstance(opts, BaseModel) else {}


def synthetic_image(height: int, width: int) -> np.ndarray:
    """A deterministic RGB image: soft noise plus three saturated rectangles (something to find)."""
    rng = np.random.default_rng(0)
    img = rng.integers(70, 110, size=(height, width, 3), dtype=np.uint8)
    h, w = height, width
    img[h // 8 : h // 2, w // 10 : w // 3] = (220, 30, 30)
    img[h // 3 : h * 3 // 4, w // 2 : w * 4 // 5] = (30, 210, 40)
    img[h * 2 // 3 : h - 4, w // 6 : w // 2] = (20, 40, 230)
    return img


# -- progress ---------------------------------------------------------------------------------------
def progress_wanted(enabled: bool | None) -> bool:
    """``enabled`` as given, or by default: a bar only when stderr is a terminal (never in logs or CI)."""
    return sys.stderr.isatty() if enabled is None else enabled


def _tqdm() -> Any:
    # Imported on first use: the CLI must start fast, and tqdm is optional.
    try:
        from tqdm.auto import tqdm
    except ModuleNotFoundError:
        return None
    return tqdm


def progress(items: Iterable[T], *, total: int | None, desc: str, enabled: bool | None) -> Iterable[T]:
    """``items`` wrapped in a bar on stderr when tqdm is installed and :func:`progress_wanted`."""
    tqdm = _tqdm() if progress_wanted(enabled) else None
    if tqdm is None:
        return items
    return tqdm(items, total=total, desc=desc, unit="img", leave=False, file=sys.stderr)


class Progress:
    """A bar driven by hand (streams: skipped inputs shrink the total, failures show as a count)."""

    def __init__(self, total: int | None, enabled: bool | None) -> None:
        tqdm = _tqdm() if progress_wanted(enabled) else None
        self.bar: Any = None
        if tqdm is not None:
            self.bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def skip(self) -> None:
        # Skipped inputs shrink the total instead of counting, so img/s stays honest.
        if self.bar is not None and self.bar.total:
            self.bar.total -= 1

    def failed(self, count: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix(failed=count, refresh=False)

    def write(self, text: str) -> None:
        """A message that does not tear the bar (plain stderr without one)."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
