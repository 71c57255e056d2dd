"""The export interface: how a backend hands its network to another runtime (ONNX Runtime, ...).

A backend that implements :class:`Exportable` gets fp32/int8 runtimes from any runtime plugin for
free: the runtime exports ``ExportSpec.module`` with ``ExportSpec.example_inputs``, then replaces the
backend's ``forward`` with its own session. Pre- and post-processing stay the backend's, so results
keep the same types and coordinates. ``postprocess`` must therefore accept the runtime's outputs in
the same structure as ``module(*example_inputs)`` returns (runtimes convert them back to torch tensors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from visionkit.errors import VisionKitError

__all__ = ["ExportNotSupportedError", "ExportSpec", "Exportable", "export_spec_of"]


class ExportNotSupportedError(VisionKitError):
    """The backend cannot hand its network to another runtime."""


@dataclass
class ExportSpec:
    """A backend's network, ready to trace.

    Attributes:
        module: a ``torch.nn.Module`` in eval mode whose ``forward(*example_inputs)`` returns a tensor
            or a tuple of tensors, exactly what the backend's ``forward`` returns.
        example_inputs: tuple of example tensors (what ``preprocess`` produces as ``Batch.inputs``).
        input_names / output_names: graph names, one per input / output.
        dynamic_axes: ONNX dynamic axes (e.g. ``{"images": {0: "batch", 2: "height", 3: "width"}}``).
        key: a string that changes whenever the exported graph would (weights hash, options that shape
            the graph such as image size); runtimes use it to cache exports on disk.
        sensitive_outputs: output names whose producing nodes should stay in float when quantizing
            (e.g. a detection head that mixes pixel-scale boxes and 0-1 scores).
        calibration_inputs: optional callable ``(images) -> example_inputs`` applying the backend's
            own preprocessing, used by quantization calibration.
        dynamic_quantization: prefer dynamic INT8 over static (transformer-heavy models).
    """

    module: Any
    example_inputs: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]
    key: str
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    sensitive_outputs: list[str] = field(default_factory=list)
    calibration_inputs: Any = None
    dynamic_quantization: bool = False
    opset: int = 17


@runtime_checkable
class Exportable(Protocol):
    """A backend that can hand its network to another runtime."""

    def export_spec(self) -> ExportSpec:
        """The network, example inputs and cache key for the backend as currently configured."""


def export_spec_of(backend: Any) -> ExportSpec:
    """``backend.export_spec()``, or :class:`ExportNotSupportedError` saying why not."""
    if not isinstance(backend, Exportable):
        name = getattr(backend, "name", type(backend).__name__)
        raise ExportNotSupportedError(
            f"Backend {name!r} cannot be exported to another runtime: it does not implement "
            "`export_spec()` (see visionkit.export.Exportable). Use its native precision instead."
        )
    return backend.export_spec()
