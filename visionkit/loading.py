"""``visionkit.load``: name → ready-to-use backend."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from visionkit.backend import parse_device, parse_options
from visionkit.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidOptionError,
    TaskNotSupportedError,
    VisionKitError,
)
from visionkit.protocols import Task
from visionkit.registry import BackendSpec, Registry, RuntimeSpec, get_registry, import_string

__all__ = ["DEFAULT", "load"]

#: Sentinel for "the backend's default weights" (``load(name)`` without ``weights=``).
DEFAULT = "DEFAULT"


def load(
    name: str,
    *,
    task: Task | str | None = None,
    weights: str | os.PathLike[str] | None = DEFAULT,
    device: str = "cpu",
    precision: str = "fp32",
    runtime: str | None = None,
    runtime_options: dict[str, Any] | None = None,
    registry: Registry | None = None,
    **options: Any,
) -> Any:
    """Build the backend registered as ``name`` (or one of its aliases).

    Args:
        name: backend name or alias, e.g. ``"yolo"``, ``"detr"``, ``"maskrcnn"``, ``"sam"``.
        task: when given, fail early unless the backend performs this task.
        weights: ``DEFAULT`` for the backend's default weights, a path or known weights name, or
            ``None`` for random initialisation (offline, for tests).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``.
        precision: e.g. ``"fp32"``, ``"fp16"``, ``"int8"``. One the backend does not run natively is
            provided by a runtime plugin (e.g. visionkit-onnx) when the backend is exportable.
        runtime: force a registered runtime (e.g. ``"onnxruntime"``) even for a native precision.
        runtime_options: options for the runtime (calibration images, accuracy gate ...).
        registry: look the name up here instead of the process-wide registry.
        **options: backend options (typed; unknown keys are rejected with the list of valid ones).

    Returns:
        A backend satisfying the protocol of each task it declares (``Detector``, ``Classifier`` ...).

    Raises:
        UnknownBackendError, DuplicateBackendError, TaskNotSupportedError, BackendUnavailableError,
        InvalidOptionError (also for a ``name`` that is not a string, an unknown ``task``, an integer
        ``device``), WeightsNotFoundError, BackendError.
    """
    reg = registry or get_registry()
    if not isinstance(name, str) or not name.strip():
        known = ", ".join(s.name for s in reg.specs()) or "(none installed)"
        raise InvalidOptionError(
            f"Backend name must be a non-empty string such as 'yolo', but got {name!r} of type "
            f"{type(name).__name__}. Known backends: {known}."
        )
    by_file = reg.for_file(name)  # load("model.onnx"): a file whose suffix a backend claims
    if by_file is not None and weights in (DEFAULT, None):
        spec, weights = by_file, name
    else:
        spec = reg.get(name)
    if task is not None:
        t = Task.parse(task)
        if t not in spec.tasks:
            raise TaskNotSupportedError(spec.name, t.value, [x.value for x in spec.tasks])
    device = parse_device(device)
    rt = _pick_runtime(spec, reg, precision, runtime)
    missing = spec.missing()
    if missing:
        raise BackendUnavailableError(spec.name, missing, spec.install)
    _check_options_early(spec, options)
    factory = reg.resolve_factory(spec)
    resolved_weights = spec.default_weights if weights == DEFAULT else weights
    native_precision = "fp32" if rt is not None else precision
    try:
        backend = factory(weights=resolved_weights, device=device, precision=native_precision, **options)
    except VisionKitError:
        raise
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(spec.name, [exc.name or str(exc)], spec.install) from exc
    except Exception as exc:  # a library failing three levels down becomes one clear error
        raise BackendError(
            f"Backend {spec.name!r} failed to load weights {resolved_weights!r}: {type(exc).__name__}: {exc}"
        ) from exc
    with contextlib.suppress(AttributeError):  # frozen/slotted third-party objects: the spec is optional
        backend.spec = spec
    if rt is not None:
        missing = rt.missing()
        if missing:
            raise BackendUnavailableError(f"{spec.name} on {rt.name}", missing, rt.install)
        wrap = reg.resolve_factory(rt)
        backend = wrap(backend, precision=precision, **(runtime_options or {}))
    return backend


def _pick_runtime(
    spec: BackendSpec, reg: Registry, precision: str, runtime: str | None
) -> RuntimeSpec | None:
    """The runtime to use: none for a native precision, else the named one or the first that offers it."""
    if runtime is None and precision in spec.precisions:
        return None
    if runtime is not None:
        rt = reg.runtimes.get(runtime)
        if rt is None:
            known = ", ".join(sorted(reg.runtimes)) or "(none installed; `pip install visionkit-onnx`)"
            raise InvalidOptionError(f"Unknown runtime {runtime!r}; installed runtimes: {known}.")
        if precision not in rt.precisions:
            raise InvalidOptionError(
                f"Runtime {runtime!r} does not offer precision {precision!r}; it offers: {', '.join(rt.precisions)}."
            )
        return rt
    # Entry points arrive in filesystem order: pick by name so installing another runtime plugin
    # (e.g. visionkit-openvino) never changes which runtime serves a precision.
    for rt in sorted(reg.runtimes.values(), key=lambda r: r.name):
        if precision in rt.precisions:
            return rt
    offered = sorted({p for r in reg.runtimes.values() for p in r.precisions})
    raise InvalidOptionError(
        f"Backend {spec.name!r} does not support precision {precision!r}; it runs natively in "
        f"{', '.join(spec.precisions)}"
        + (f", and installed runtimes offer {', '.join(offered)}." if offered else ".")
        + " For int8, install the ONNX runtime plugin: `pip install visionkit-onnx`."
    )


def _check_options_early(spec: BackendSpec, options: dict[str, Any]) -> None:
    """Validate options before heavy imports when the plugin points at a light options model."""
    if spec.options:
        model = import_string(spec.options, owner=spec.name, install=spec.install, plugin=spec.plugin)
        parse_options(model, options, spec.name)
