"""Build a torchvision model from what ``visionkit.load(weights=...)`` was given.

Accepted ``weights``:

* ``None``: random initialisation, nothing downloaded (``weights_backbone=None`` too), with
  ``len(categories)`` outputs (the default weights' class count unless ``categories`` is given).
* a torchvision ``Weights`` member or its name (``"DEFAULT"``, ``"COCO_V1"``, ``"IMAGENET1K_V2"``,
  ``"ResNet50_Weights.IMAGENET1K_V2"``): the official checkpoint file, looked up in torchvision's cache
  (``$TORCH_HOME/hub/checkpoints``), then in ``VISIONKIT_WEIGHTS`` under its official file name, then
  downloaded into torchvision's cache. Not found anywhere: :class:`visionkit.WeightsNotFoundError`.
* a path or file name of a ``.pth`` state dict (looked up as given, then in ``VISIONKIT_WEIGHTS``),
  in torchvision's layout (``model.state_dict()``; training checkpoints ``{"model": state_dict, ...}``
  from torchvision's reference scripts work too).

Every checkpoint is read with ``torch.load(weights_only=True)``: no pickled code runs. A file that
needs full unpickling (a whole pickled model, a checkpoint holding Python objects) is refused with
:class:`visionkit.UnsafeWeightsError` unless the user opts in with ``trust_pickle=True``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_weights, list_models

import visionkit
from visionkit import BackendError, InvalidOptionError, UnsafeWeightsError
from visionkit.errors import close_matches

__all__ = ["BuiltModel", "build_model", "check_arch", "resolve_device"]

_HASH = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's checksum-prefix convention in file names
_QUALIFIED = re.compile(r"^(\w+_Weights)\.(\w+)$")
_BUILD_LOCK = threading.Lock()


@dataclass
class BuiltModel:
    """A model in eval mode with what pre/post-processing needs to know about its weights.

    Attributes:
        model: the torchvision network, eval mode, on CPU.
        member: the weights enum member whose ``transforms`` preprocess inputs (the loaded one, or the
            arch's ``DEFAULT`` for random init and custom checkpoints; only its metadata is used).
        categories: class names, index = network output index.
        source: what was loaded, for messages and export cache keys.
    """

    model: nn.Module
    member: WeightsEnum
    categories: tuple[str, ...]
    source: str


def resolve_device(device: str) -> torch.device:
    """Turn visionkit's device string into a ``torch.device`` (``"auto"`` picks cuda, then mps, then cpu)."""
    from visionkit.devices import resolve_torch_device

    return resolve_torch_device(device)


_FAMILY_MODULES = {
    "instance": torchvision.models.detection,
    "detection": torchvision.models.detection,
    "semantic": torchvision.models.segmentation,
    "classification": torchvision.models,
}


def check_arch(arch: str | None, family: str, backend: str) -> str:
    """Validate a generic backend's ``arch`` against torchvision's registered builders of its family."""
    known = list_models(module=_FAMILY_MODULES[family])
    if arch is None:
        raise InvalidOptionError(
            f"Backend {backend!r} needs arch=<torchvision model name>, e.g. "
            f"visionkit.load({backend!r}, arch={known[0]!r}); available: {', '.join(known)}."
        )
    if arch not in known:
        matches = close_matches(arch, known)
        hint = f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
        raise InvalidOptionError(
            f"Unknown arch {arch!r} for backend {backend!r}.{hint} Available {family} models in torchvision "
            f"{torchvision.__version__}: {', '.join(known)}."
        )
    if family == "instance" and not arch.startswith("maskrcnn"):
        raise InvalidOptionError(f"Backend {backend!r} needs a Mask R-CNN arch, but got {arch!r}.")
    return arch


def build_model(
    arch: str,
    family: str,
    weights: Any,
    categories: tuple[str, ...] | None,
    backend: str,
    *,
    trust_pickle: bool = False,
) -> BuiltModel:
    """Build ``arch`` with ``weights`` (see the module docstring); the model is returned in eval mode.

    ``trust_pickle`` reads custom files with ``torch.load(weights_only=False)`` (a pickled ``nn.Module``
    gives its ``state_dict()``); official checkpoints are always read with ``weights_only=True``.

    Raises:
        UnsafeWeightsError: a custom file needs full unpickling and ``trust_pickle`` is False.
        WeightsNotFoundError: an enum's checkpoint or a file is nowhere to be found.
        InvalidOptionError: weights of another model, or ``categories`` of the wrong length.
        BackendError: the file is not a state dict, or does not fit the network.
    """
    enum_cls = get_model_weights(arch)
    default = enum_cls.DEFAULT
    member = _as_member(weights, enum_cls, backend, arch)
    extra: dict[str, Any] = {"weights_backbone": None} if family != "classification" else {}
    if weights is None:
        cats = categories or tuple(default.meta["categories"])
        model = get_model(arch, weights=None, num_classes=len(cats), **extra)
        return BuiltModel(model.eval(), default, cats, "random init")
    if member is not None:
        path = _official_checkpoint(member, backend)
        cats = _rename(categories, member, backend)
        model = _build_official(arch, member, _read_state_dict(path), path)
        return BuiltModel(model.eval(), member, cats, f"{member!r} ({path})")
    path = visionkit.resolve_weights(
        os.fspath(weights),
        hint=f"torchvision weights names for {arch}: {', '.join(enum_cls.__members__)}.",
    )
    state = _read_state_dict(path, trust_pickle=trust_pickle)
    official = next((m for m in enum_cls if _file_name(m) == path.name), None)
    if official is not None:  # an official file passed by path: build exactly as torchvision does
        cats = _rename(categories, official, backend)
        return BuiltModel(_build_official(arch, official, state, path).eval(), official, cats, str(path))
    cats = categories or tuple(default.meta["categories"])
    if family == "semantic":
        extra["aux_loss"] = any(k.startswith("aux_classifier.") for k in state)
    model = get_model(arch, weights=None, num_classes=len(cats), **extra)
    _load_custom(model, state, path, backend, len(cats))
    return BuiltModel(model.eval(), default, cats, str(path))


def _as_member(weights: Any, enum_cls: Any, backend: str, arch: str) -> WeightsEnum | None:
    """The enum member ``weights`` names, or None when it is None or a file."""
    members = ", ".join(enum_cls.__members__)
    if isinstance(weights, WeightsEnum):
        if not isinstance(weights, enum_cls):
            raise InvalidOptionError(
                f"Weights {weights!r} belong to another model; backend {backend!r} ({arch}) takes "
                f"{enum_cls.__name__}: {members}."
            )
        return weights
    if not isinstance(weights, str):
        return None
    name = weights.strip()
    qualified = _QUALIFIED.match(name)
    if qualified:
        if qualified.group(1) != enum_cls.__name__:
            raise InvalidOptionError(
                f"Weights {weights!r} belong to another model; backend {backend!r} ({arch}) takes "
                f"{enum_cls.__name__}: {members}."
            )
        name = qualified.group(2)
    return enum_cls.__members__.get(name)


def _file_name(member: WeightsEnum) -> str:
    return os.path.basename(urlparse(member.url).path)


def _official_checkpoint(member: WeightsEnum, backend: str) -> Path:
    """The checkpoint file of ``member``: torchvision's cache, VISIONKIT_WEIGHTS, then a download."""
    name = _file_name(member)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if cached.is_file():  # torchvision's own cache wins, and works offline
        return cached

    def download(_: str) -> Path:
        cached.parent.mkdir(parents=True, exist_ok=True)
        checksum = _HASH.search(name)
        torch.hub.download_url_to_file(
            member.url, str(cached), checksum.group(1) if checksum else None, progress=False
        )
        return cached

    return visionkit.resolve_weights(
        name,
        download=download,
        download_from=f"download from {member.url} into torchvision's cache {cached} (TORCH_HOME)",
        hint=f"Backend {backend!r} wanted torchvision weights {member!r}; or pass weights=None for random init.",
    )


def _rename(categories: tuple[str, ...] | None, member: WeightsEnum, backend: str) -> tuple[str, ...]:
    """``categories`` replacing the weights' own class names, which must be as many."""
    own = tuple(member.meta["categories"])
    if categories is None:
        return own
    if len(categories) != len(own):
        raise InvalidOptionError(
            f"categories lists {len(categories)} names, but weights {member!r} of backend {backend!r} predict "
            f"{len(own)} classes; with torchvision weights, categories can only rename them."
        )
    return categories


def _read_state_dict(path: Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` via ``torch.load(weights_only=True)`` (``weights_only=False`` if trusted)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not trust_pickle and "Unsupported global" in str(exc):
            # weights_only met a class or function it does not allow: unpickling it could run code.
            refused = next(
                (
                    ln.strip().split(" was not")[0]
                    for ln in str(exc).splitlines()
                    if "Unsupported global" in ln
                ),
                "",
            ).removeprefix("WeightsUnpickler error: ")
            raise UnsafeWeightsError(
                f"Weights file {str(path)!r} is not a plain state dict: torch.load(weights_only=True) refused to "
                f"unpickle it ({refused}), and unpickling can run code. If you trust the file, load it with "
                "trust_pickle=True (CLI: --trust-pickle); better, re-save it with "
                "torch.save(model.state_dict(), path)."
            ) from exc
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise BackendError(
            f"Could not read {str(path)!r} as a torch state dict with torch.load(weights_only={not trust_pickle}): "
            f"{type(exc).__name__}: {first}"
        ) from exc
    except Exception as exc:  # corrupt file, not a torch file
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise BackendError(
            f"Could not read {str(path)!r} as a torch state dict with torch.load(weights_only=True): "
            f"{type(exc).__name__}: {first}"
        ) from exc
    for key in ("model", "state_dict"):  # training checkpoints of torchvision's reference scripts
        if isinstance(obj, Mapping) and isinstance(obj.get(key), (Mapping, nn.Module)):
            obj = obj[key]
    if trust_pickle and isinstance(obj, nn.Module):  # a whole pickled model, trusted by the user
        obj = obj.state_dict()
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackendError(
            f"Weights file {str(path)!r} holds a {type(obj).__name__}, but a state dict (name -> tensor, "
            "as saved by torch.save(model.state_dict(), path)) was expected."
        )
    return dict(obj)


@contextlib.contextmanager
def _serving(enum_cls: type, state: dict[str, torch.Tensor]) -> Iterator[None]:
    # torchvision builders call `weights.get_state_dict(...)`, which would download and unpickle
    # with weights_only=False; serve the dict we already read safely instead.
    enum_cls.get_state_dict = lambda self, *args, **kwargs: state  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del enum_cls.get_state_dict  # type: ignore[attr-defined]


def _build_official(arch: str, member: WeightsEnum, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    # Builders change the network when weights are given (FrozenBatchNorm2d, aux heads,
    # transform_input ...): building with the enum member keeps torchvision's exact model.
    try:
        with _BUILD_LOCK, _serving(type(member), state):
            return get_model(arch, weights=member)
    except RuntimeError as exc:
        raise BackendError(
            f"Weights file {str(path)!r} does not fit {arch} as built for {member!r}: {_short(exc)}"
        ) from exc


def _load_custom(model: nn.Module, state: dict[str, torch.Tensor], path: Path, backend: str, n: int) -> None:
    """Load a custom state dict strictly, tolerating only BatchNorm counters absent from frozen-BN checkpoints."""
    try:
        model.load_state_dict(state, strict=True)
        return
    except RuntimeError as exc:
        error = exc
    missing = set(model.state_dict()) - set(state)
    unexpected = set(state) - set(model.state_dict())
    if not unexpected and missing and all(k.endswith("num_batches_tracked") for k in missing):
        # Trained with FrozenBatchNorm2d (no counters): in eval mode BatchNorm2d computes the same.
        try:
            model.load_state_dict(state, strict=False)
            return
        except RuntimeError as exc:
            error = exc
    raise BackendError(
        f"Weights file {str(path)!r} does not fit backend {backend!r} built with {n} classes: {_short(error)} "
        "If the checkpoint was trained on other classes, pass categories=[...] (one name per output)."
    ) from error


def _short(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = " ".join(lines[:3])
    return text[:400] + ("..." if len(text) > 400 else "")
