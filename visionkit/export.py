"""The export interface: how a backend hands its network to another runtime (ONNX Runtime, ...).

A backend that implements :class:`Exportable` gets fp32/int8 runtimes from any runtime plugin for
free: the runtime exports ``ExportSpec.module`` with ``ExportSpec.example_inputs``, then installs its
own session as the backend's ``forward`` (:meth:`visionkit.Backend.install_runtime`). Pre- and post-processing stay the backend's, so results
keep the same types and coordinates. ``postprocess`` must therefore accept the runtime's outputs in
the same structure as ``module(*example_inputs)`` returns (runtimes convert them back to torch tensors).

A backend made of several networks (SAM: a heavy image encoder and a light prompt decoder) also
implements ``export_specs()``, one spec per network; each spec names the ``stage`` (the backend
method taking the network's inputs as one argument) that the runtime replaces.

``export_spec()`` is a query: it must not change how the backend preprocesses, runs or postprocesses
(a runtime that needs the backend to behave differently says so through the spec, never by a side
effect of asking for it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from visionkit.errors import ExportNotSupportedError

__all__ = [
    "ExportNotSupportedError",
    "ExportSpec",
    "Exportable",
    "export_spec_of",
    "export_specs_of",
    "tensors_fingerprint",
]


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
        int8_unsupported: why this network must not be quantized to INT8 (``None``: it may be); a
            runtime refuses ``precision="int8"`` with this reason before exporting anything.
        stage: the backend attribute the runtime replaces with its session (``forward`` by default);
            it is called with what ``example_inputs`` stands for, as one argument when there is one
            input and as a tuple otherwise.
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
    int8_unsupported: str | None = None
    stage: str = "forward"


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


def export_specs_of(backend: Any) -> list[ExportSpec]:
    """Every network of ``backend``: ``backend.export_specs()`` when it has several, else ``[export_spec()]``.

    Raises:
        ExportNotSupportedError: the backend cannot export, or two specs claim the same stage.
    """
    many = getattr(backend, "export_specs", None)
    specs = list(many()) if callable(many) else [export_spec_of(backend)]
    stages = [s.stage for s in specs]
    if not specs or len(set(stages)) != len(stages):
        name = getattr(backend, "name", type(backend).__name__)
        raise ExportNotSupportedError(
            f"Backend {name!r} returned export specs for stages {stages}; expected one spec per stage."
        )
    return specs


def tensors_fingerprint(module: Any) -> str:
    """A hash of a torch module's parameters and buffers (names and bytes), for ``ExportSpec.key``.

    For weights that have no file to hash: a random init, or weights edited in place.
    """
    import hashlib

    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
