"""Weights resolution shared by every plugin.

Order: an existing explicit path → each directory in ``VISIONKIT_WEIGHTS`` (``os.pathsep``-separated)
→ the backend library's own cache or download (a callable the plugin passes). When nothing is found,
:class:`~visionkit.errors.WeightsNotFoundError` lists every place looked and how to supply the file.
Set ``VISIONKIT_OFFLINE=1`` to never attempt a download. (Library switches such as ``HF_HUB_OFFLINE``
are honoured by the plugins of those libraries, not here, so they do not block other backends.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from visionkit.errors import WeightsNotFoundError

__all__ = ["is_offline", "resolve_weights", "weights_dirs"]


def weights_dirs() -> list[Path]:
    """Directories listed in ``VISIONKIT_WEIGHTS``, in order (missing ones included, for the error)."""
    raw = os.environ.get("VISIONKIT_WEIGHTS", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def is_offline() -> bool:
    """True when ``VISIONKIT_OFFLINE`` forbids downloads."""
    return os.environ.get("VISIONKIT_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def resolve_weights(
    weights: str | os.PathLike[str],
    *,
    download: Callable[[str], str | os.PathLike[str] | None] | None = None,
    download_from: str = "the backend's download location",
    hint: str | None = None,
) -> Path:
    """Find ``weights`` locally, or fetch them with ``download``.

    Args:
        weights: a path, or a file/directory name such as ``"yolov8n.pt"`` or ``"facebook/detr-resnet-50"``.
        download: called with the name when nothing local matched; returns a local path or raises.
            Skipped when offline.
        download_from: words for the error message describing where ``download`` fetches from.
        hint: extra advice appended to the error (e.g. the official download URL).

    Raises:
        WeightsNotFoundError: nothing found; the message lists every place looked.
    """
    name = os.fspath(weights)
    looked: list[str] = []
    path = Path(name).expanduser()
    if path.exists():
        return path
    looked.append(f"{path.resolve()} (as given)")
    dirs = weights_dirs()
    if not dirs:
        looked.append("VISIONKIT_WEIGHTS (not set)")
    for d in dirs:
        candidate = d / name
        if candidate.exists():
            return candidate
        # Hub ids such as "org/model" may be stored flattened as "org--model".
        flat = d / name.replace("/", "--")
        if flat != candidate and flat.exists():
            return flat
        looked.append(f"{candidate} (VISIONKIT_WEIGHTS{'' if d.is_dir() else ', directory does not exist'})")
    if download is not None:
        if is_offline():
            looked.append(f"{download_from} (skipped: offline mode is on)")
        else:
            try:
                got = download(name)
            except Exception as exc:  # network errors, 404s, missing hub files: all mean "not available"
                looked.append(
                    f"{download_from} (failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                )
            else:
                if got is not None and Path(got).exists():
                    return Path(got)
                looked.append(f"{download_from} (returned nothing)")
    raise WeightsNotFoundError(name, looked, hint)
