"""bf16 autocast with a float32 tail, shared by the torch plugins (YOLO, torchvision, transformers, SAM).

bf16 keeps 8 significant bits (about 3 decimal digits): plenty for convolution and attention features,
too few for what a model's head produces (a box corner near pixel 800 moves in steps of 4 px). So under
``precision="bf16"`` a backend runs its network body in :func:`autocast` and wraps its numerically
sensitive tail in :class:`Float32` (run with autocast off) or :class:`Float32Outputs` (outputs cast to
float32). Both are plain ``nn.Module`` classes, so a wrapped model still pickles (Ray, copies).

This module imports torch: only torch plugins import it; ``import visionkit`` never does.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

__all__ = ["Float32", "Float32Outputs", "autocast", "to_float32"]


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` (a torch device or its type) for ``precision="bf16"``, else nothing."""
    if precision == "bf16":
        kind = device.type if isinstance(device, torch.device) else torch.device(device).type
        return torch.autocast(kind, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_float32(value: Any) -> Any:
    """``value`` with every floating tensor in it (nested in lists, tuples, named tuples and dicts) cast
    to float32; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return type(value)((k, to_float32(v)) for k, v in value.items())
    if isinstance(value, list):
        return [to_float32(v) for v in value]
    if isinstance(value, tuple):
        items = [to_float32(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value


class Float32(nn.Module):
    """``module`` run wholly in float32: autocast off, floating inputs cast to float32."""

    def __init__(self, module: nn.Module, device_type: str) -> None:
        super().__init__()
        self.module = module
        self.device_type = device_type

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(self.device_type, enabled=False):
            return self.module(*to_float32(args), **to_float32(kwargs))


class Float32Outputs(nn.Module):
    """``module`` run in whatever precision is in force, its floating outputs cast to float32."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return to_float32(self.module(*args, **kwargs))
