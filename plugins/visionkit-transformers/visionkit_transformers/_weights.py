"""Finding a transformers checkpoint: local directory, VISIONKIT_WEIGHTS, Hugging Face cache, then the Hub.

Every path ends in a local directory holding ``config.json`` + weights, which is then loaded with
``local_files_only=True``, so nothing below ``from_pretrained`` ever touches the network. Offline
(``HF_HUB_OFFLINE=1`` / ``VISIONKIT_OFFLINE=1``) or with the Hub unreachable, a missing checkpoint is
a quick :class:`~visionkit.WeightsNotFoundError`, not a minute of HTTP retries.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from visionkit import WeightsNotFoundError, resolve_weights
from visionkit.weights import is_offline

__all__ = ["WEIGHT_FILES", "find_checkpoint"]

#: Files any one of which makes a directory a loadable checkpoint (next to ``config.json``).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HINT = (
    "A transformers checkpoint is a directory with config.json, model.safetensors and "
    "preprocessor_config.json (what `model.save_pretrained(d)` + `processor.save_pretrained(d)` write); "
    "a Hub id such as 'facebook/detr-resnet-50' is also looked for as a folder named 'facebook/detr-resnet-50' "
    "or 'facebook--detr-resnet-50' in VISIONKIT_WEIGHTS. Use weights=None for a tiny random model."
)
_PROBE_TIMEOUT_S = 3.0


def _missing_files(path: Path) -> list[str]:
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES[::2]))
    return missing


def _is_checkpoint(path: Path) -> bool:
    return path.is_dir() and not _missing_files(path)


def find_checkpoint(weights: str | os.PathLike[str]) -> Path:
    """The local directory of checkpoint ``weights`` (a directory or a Hub id), downloading if allowed.

    Raises:
        WeightsNotFoundError: not found anywhere; the message lists every place looked.
    """
    name = os.fspath(weights)
    try:
        path = resolve_weights(name, hint=_HINT)  # explicit path, then VISIONKIT_WEIGHTS
    except WeightsNotFoundError as exc:
        looked = list(exc.looked)
        if _looks_like_path(name):
            raise WeightsNotFoundError(name, looked, _HINT) from None
        path = _from_hub(name, looked)
    if path.is_file() and path.name == "config.json":
        path = path.parent
    missing = _missing_files(path) if path.is_dir() else ["a directory"]
    if missing:
        raise WeightsNotFoundError(
            name, [f"{path} (found, but it is not a checkpoint: missing {', '.join(missing)})"], _HINT
        )
    return path


def _looks_like_path(name: str) -> bool:
    return (
        not _HUB_ID.match(name)
        or os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.endswith((".json", ".safetensors", ".bin", ".pt"))
    )


def _from_hub(repo_id: str, looked: list[str]) -> Path:
    """The Hugging Face cache, then (online only) a download of the files ``from_pretrained`` needs."""
    from huggingface_hub import constants, snapshot_download

    try:
        cached = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or an unusable cache entry
        looked.append(f"Hugging Face cache {constants.HF_HUB_CACHE} (not cached)")
    else:
        if _is_checkpoint(cached):
            return cached
        looked.append(
            f"Hugging Face cache {cached} (incomplete: missing {', '.join(_missing_files(cached))})"
        )
    endpoint = constants.ENDPOINT
    # HF_HUB_OFFLINE is read now, not at import: huggingface_hub's constant is frozen when first imported.
    if is_offline() or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        looked.append(
            f"Hugging Face Hub {endpoint} (skipped: offline mode is on, HF_HUB_OFFLINE/VISIONKIT_OFFLINE)"
        )
        raise WeightsNotFoundError(repo_id, looked, _HINT)
    reason = _unreachable(endpoint)
    if reason:
        looked.append(f"Hugging Face Hub {endpoint} (unreachable: {reason})")
        raise WeightsNotFoundError(repo_id, looked, _HINT)
    try:
        got = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
        if not any((got / f).is_file() for f in WEIGHT_FILES):  # older repos ship only PyTorch pickles
            got = Path(snapshot_download(repo_id, allow_patterns=["*.json", "pytorch_model*.bin"]))
    except Exception as exc:  # 404, gated repo, network drop: all mean "not available"
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        looked.append(f"Hugging Face Hub {endpoint} (failed: {type(exc).__name__}: {first})")
        raise WeightsNotFoundError(repo_id, looked, _HINT) from None
    return got


def _unreachable(endpoint: str) -> str | None:
    """Why the Hub cannot be reached, found in seconds (the Hub client retries for ~30 s), or None."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy may reach what a direct socket cannot; let the Hub client try
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
