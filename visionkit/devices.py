"""One rule for turning visionkit's device strings into torch devices, shared by every torch plugin.

``"auto"`` picks CUDA, then Apple's MPS, then the CPU. A device that is asked for by name but absent
fails here with an :class:`~visionkit.errors.InvalidOptionError` (``.key == "device"``), before any
weights are loaded, instead of as a torch error three libraries down. torch is imported on call only:
``import visionkit`` stays free of backend libraries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit.backend import parse_device
from visionkit.errors import InvalidOptionError

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_torch_device"]


def _mps_available(torch: object) -> bool:
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_torch_device(device: str | None) -> torch.device:
    """The ``torch.device`` for a visionkit device string (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"auto"``).

    Raises:
        InvalidOptionError: a malformed device, or a CUDA/MPS device torch does not see.
    """
    import torch

    dev = parse_device(device)
    if dev == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available(torch) else "cpu")
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidOptionError(
                f"Device {dev!r} was requested but torch sees no CUDA device; use device='cpu'.", key="device"
            )
        index = int(dev.split(":")[1]) if ":" in dev else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise InvalidOptionError(
                f"Device {dev!r} was requested but torch sees {count} CUDA device(s) "
                f"(cuda:0 to cuda:{count - 1}).",
                key="device",
            )
    elif dev == "mps" and not _mps_available(torch):
        raise InvalidOptionError(
            "Device 'mps' was requested but torch sees no MPS device (Apple silicon); use device='cpu'.",
            key="device",
        )
    return torch.device(dev)
