"""``visionkit.load``: name → ready-to-use backend, and the load recipe every tool carries.

A :class:`LoadRecipe` is the six things ``load()`` needs (name, weights, device, precision, options,
runtime) as one picklable value: the CLI builds one from its flags, Ray ships one to each worker, and
``evaluate``/``benchmark``/``compare`` accept a name, a recipe or an already-loaded backend
(:func:`resolve`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, overload, runtime_checkable

from visionkit.backend import parse_device, parse_options
from visionkit.devices import apply_torch_threads
from visionkit.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidOptionError,
    TaskNotSupportedError,
    VisionKitError,
)
from visionkit.protocols import (
    Classifier,
    Detector,
    InstanceSegmenter,
    PromptSegmenter,
    SemanticSegmenter,
    Task,
)
from visionkit.registry import (
    BackendSpec,
    Registry,
    RuntimeSpec,
    get_registry,
    import_string,
    resolve_options,
)

__all__ = [
    "DEFAULT",
    "LoadRecipe",
    "LoadedBackend",
    "LoadedClassifier",
    "LoadedDetector",
    "LoadedInstanceSegmenter",
    "LoadedPromptSegmenter",
    "LoadedSemanticSegmenter",
    "load",
    "registry_with",
    "resolve",
    "resolve_task",
    "set_auto_precision",
]

#: Sentinel for "the backend's default weights" (``load(name)`` without ``weights=``).
DEFAULT = "DEFAULT"

# ``load(precision="auto")`` is resolved by a tool (it measures with bench and evaluation, which stand
# on this module), so the tool installs itself here instead of this module importing it: the package
# root calls set_auto_precision(visionkit.tune.load_auto).
_auto_loader: Callable[..., Any] | None = None


def set_auto_precision(loader: Callable[..., Any] | None) -> None:
    """Install what ``load(..., precision="auto")`` hands the call to (``None`` removes it).

    ``import visionkit`` installs :func:`visionkit.tune.load_auto`; the loader is called with
    ``load()``'s arguments less ``precision`` and returns the loaded backend.
    """
    global _auto_loader
    _auto_loader = loader


# -- what load() returns -----------------------------------------------------------------------------
@runtime_checkable
class LoadedBackend(Protocol):
    """What every loaded backend declares, whatever its tasks: tools read these, never ``getattr``.

    :class:`visionkit.Backend` provides all of them; ``load()`` fills :attr:`spec`.
    """

    @property
    def name(self) -> str:
        """The canonical backend name."""

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The tasks it performs (each with its protocol's verb)."""

    @property
    def device(self) -> str:
        """The visionkit device string it was loaded on (``"cpu"``, ``"cuda:0"``, ``"auto"`` ...)."""

    @property
    def precision(self) -> str:
        """The precision it runs in (``"fp32"``, ``"int8"`` ...; after a runtime, what that runtime runs)."""

    @property
    def spec(self) -> BackendSpec | None:
        """The registration it was loaded under; ``None`` for a backend built without :func:`visionkit.load`."""

    @property
    def runtime(self) -> Mapping[str, Any] | None:
        """What runs its network stages: ``None`` for its own code, else the installed runtime's report."""

    @property
    def last_timing(self) -> Mapping[str, float]:
        """Milliseconds per stage of the last call (``preprocess``, ``forward``, ``postprocess`` ...)."""


@runtime_checkable
class LoadedDetector(LoadedBackend, Detector, Protocol):
    """A loaded backend that detects (what ``load(name, task="detect")`` returns)."""


@runtime_checkable
class LoadedClassifier(LoadedBackend, Classifier, Protocol):
    """A loaded backend that classifies (``load(name, task="classify")``)."""


@runtime_checkable
class LoadedSemanticSegmenter(LoadedBackend, SemanticSegmenter, Protocol):
    """A loaded backend that segments semantically (``load(name, task="segment_semantic")``)."""


@runtime_checkable
class LoadedInstanceSegmenter(LoadedBackend, InstanceSegmenter, Protocol):
    """A loaded backend that segments instances (``load(name, task="segment_instances")``)."""


@runtime_checkable
class LoadedPromptSegmenter(LoadedBackend, PromptSegmenter, Protocol):
    """A loaded backend that segments prompts (``load(name, task="segment_prompt")``)."""


# A literal task types the result as that task's loaded protocol (type checkers only; behaviour is one function).
@overload
def load(
    name: str,
    *,
    task: Literal[Task.DETECT, "detect", "detection"],
    weights: str | os.PathLike[str] | None = ...,
    device: str = ...,
    precision: str = ...,
    runtime: str | None = ...,
    runtime_options: dict[str, Any] | None = ...,
    registry: Registry | None = ...,
    **options: Any,
) -> LoadedDetector: ...
@overload
def load(
    name: str,
    *,
    task: Literal[Task.CLASSIFY, "classify", "classification"],
    weights: str | os.PathLike[str] | None = ...,
    device: str = ...,
    precision: str = ...,
    runtime: str | None = ...,
    runtime_options: dict[str, Any] | None = ...,
    registry: Registry | None = ...,
    **options: Any,
) -> LoadedClassifier: ...
@overload
def load(
    name: str,
    *,
    task: Literal[Task.SEGMENT_SEMANTIC, "segment_semantic", "semantic"],
    weights: str | os.PathLike[str] | None = ...,
    device: str = ...,
    precision: str = ...,
    runtime: str | None = ...,
    runtime_options: dict[str, Any] | None = ...,
    registry: Registry | None = ...,
    **options: Any,
) -> LoadedSemanticSegmenter: ...
@overload
def load(
    name: str,
    *,
    task: Literal[Task.SEGMENT_INSTANCES, "segment_instances", "instances"],
    weights: str | os.PathLike[str] | None = ...,
    device: str = ...,
    precision: str = ...,
    runtime: str | None = ...,
    runtime_options: dict[str, Any] | None = ...,
    registry: Registry | None = ...,
    **options: Any,
) -> LoadedInstanceSegmenter: ...
@overload
def load(
    name: str,
    *,
    task: Literal[Task.SEGMENT_PROMPT, "segment_prompt", "prompt"],
    weights: str | os.PathLike[str] | None = ...,
    device: str = ...,
    precision: str = ...,
    runtime: str | None = ...,
    runtime_options: dict[str, Any] | None = ...,
    registry: Registry | None = ...,
    **options: Any,
) -> LoadedPromptSegmenter: ...
@overload
def load(
    name: str,
    *,
    task: Task | str | None = ...,
    weights: str | os.PathLike[str] | None = ...,
    device: str = ...,
    precision: str = ...,
    runtime: str | None = ...,
    runtime_options: dict[str, Any] | None = ...,
    registry: Registry | None = ...,
    **options: Any,
) -> Any: ...
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
            ``"auto"``: the fastest recipe within an accuracy budget, measured on this machine once and
            cached (:func:`visionkit.tune.load_auto`).
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
    spec, weights, device, rt = _plan(reg, name, task, weights, device, precision, runtime, options)
    if precision == "auto":
        if _auto_loader is None:
            raise InvalidOptionError(
                "precision='auto' needs visionkit.tune, which `import visionkit` installs; "
                "call visionkit.tune.load_auto(...) directly."
            )
        return _auto_loader(
            spec.name,
            task=task,
            weights=weights,
            device=device,
            runtime=runtime,
            runtime_options=runtime_options,
            registry=reg,
            **options,
        )
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
    if rt is None and getattr(backend, "native_runtime", None) == "torch":
        apply_torch_threads()  # torch's pool is sized from the host's cores: cap it at this process's CPUs
    if rt is not None:
        missing = rt.missing()
        if missing:
            raise BackendUnavailableError(f"{spec.name} on {rt.name}", missing, rt.install)
        wrap = reg.resolve_factory(rt)
        backend = wrap(backend, precision=precision, **(runtime_options or {}))
    return backend


def _plan(
    reg: Registry,
    name: str,
    task: Task | str | None,
    weights: Any,
    device: str,
    precision: str,
    runtime: str | None,
    options: Mapping[str, Any],
) -> tuple[BackendSpec, Any, str, RuntimeSpec | None]:
    """Everything ``load()`` checks before it builds a model: ``(spec, weights, device, runtime)``."""
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
    _check_class_names(spec, reg, options.get("classes"))
    _check_options_early(spec, dict(options))
    return spec, weights, device, rt


def _pick_runtime(
    spec: BackendSpec, reg: Registry, precision: str, runtime: str | None
) -> RuntimeSpec | None:
    """The runtime to use: none for a native precision, else the named one or the first that offers it."""
    if runtime is None and precision in spec.precisions:
        return None
    # "auto" is measured and picked later (visionkit.tune); only a named runtime is checked here.
    if precision == "auto":
        if runtime is not None and runtime not in reg.runtimes:
            known = ", ".join(sorted(reg.runtimes)) or "(none installed; `pip install visionkit-onnx`)"
            raise InvalidOptionError(f"Unknown runtime {runtime!r}; installed runtimes: {known}.")
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
        + reg.precision_hint(spec, precision)
    )


def _check_class_names(spec: BackendSpec, reg: Registry, classes: Any) -> None:
    """Class *names* to find need a text-prompted detector; say which ones are installed."""
    names = [classes] if isinstance(classes, str) else classes if isinstance(classes, (list, tuple)) else []
    if "text" in spec.prompt_types or not any(isinstance(c, str) for c in names):
        return
    text = [s.name for s in reg.specs() if "text" in s.prompt_types]
    raise InvalidOptionError(
        f"Backend {spec.name!r} finds the fixed classes of its weights; classes={list(names)!r} names things "
        "to find, which needs a text-prompted detector ("
        + (", ".join(text) if text else "none installed; e.g. `pip install visionkit-transformers` for owlv2")
        + ").",
        key="classes",
    )


def _check_options_early(spec: BackendSpec, options: dict[str, Any]) -> None:
    """Validate options before heavy imports when the plugin points at a light options model."""
    if spec.options:
        model = resolve_options(spec)  # a path naming no BackendOptions class is the plugin's bug
        assert model is not None
        parse_options(model, options, spec.name)


def resolve_task(backend: Any, task: Task | str | None, *, prompt: bool = True) -> Task:
    """The task to run on a loaded ``backend``: ``task`` checked against what it declares, or
    :meth:`Task.default` (``prompt=False`` when the caller has no prompt for a prompt segmenter).

    Raises:
        TaskNotSupportedError: ``task`` is not one the backend declares.
        InvalidOptionError: no task given and none can run without one.
    """
    tasks = tuple(Task.parse(t) for t in getattr(backend, "tasks", ()))
    name = getattr(backend, "name", None) or type(backend).__name__
    if task is not None:
        t = Task.parse(task)
        if tasks and t not in tasks:
            raise TaskNotSupportedError(str(name), t.value, [x.value for x in tasks])
        return t
    picked = Task.default(tasks, prompt=prompt)
    if picked is None:
        raise InvalidOptionError(
            f"Backend {name!r} offers only {[t.value for t in tasks]}; pass task= "
            "(prompt segmentation needs prompt=dict(points=..., boxes=...))."
        )
    return picked


@dataclass(frozen=True)
class LoadRecipe:
    """How to load a backend, as one picklable value (``visionkit.ray.BackendLoader`` is this class).

    Calling it loads the backend; :meth:`check` runs every check ``load()`` makes without building the
    model (so a Ray driver or a CLI fails before any heavy work). Fields mean what ``load()``'s
    arguments mean; ``task`` is parsed once, here.

    Attributes:
        plugins: ``"module:callable"`` import strings returning plugin objects; when given, the backend
            is looked up in a registry of only these plugins instead of the installed ones (tests use
            ``("visionkit.testing.fakes:fake_plugin",)``).
    """

    name: str
    weights: str | os.PathLike[str] | None = DEFAULT
    device: str = "cpu"
    precision: str = "fp32"
    options: Mapping[str, Any] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    task: Task | None = None
    runtime: str | None = None
    runtime_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task is not None and not isinstance(self.task, Task):
            object.__setattr__(self, "task", Task.parse(self.task))
        object.__setattr__(self, "plugins", tuple(self.plugins))

    def with_task(self, task: Task | str | None) -> LoadRecipe:
        """This recipe with ``task`` (parsed)."""
        return replace(self, task=None if task is None else Task.parse(task))

    def registry(self) -> Registry:
        """The registry to look ``name`` up in: only ``plugins`` when given, else the installed ones."""
        return registry_with(self.plugins, only=True) or get_registry()

    def check(self) -> BackendSpec:
        """Every check ``load()`` makes before building the model; returns the backend's spec."""
        spec, _, _, _ = _plan(
            self.registry(),
            self.name,
            self.task,
            self.weights,
            self.device,
            self.precision,
            self.runtime,
            self.options,
        )
        return spec

    def default_task(self, *, prompt: bool = True) -> Task:
        """``task``, or the one the backend would run by default, read from its registration (no model)."""
        if self.task is not None:
            return self.task
        spec = self.check()
        return resolve_task(_Declared(spec.name, spec.tasks), None, prompt=prompt)

    def load(self) -> Any:
        """Load the backend."""
        return load(
            self.name,
            task=self.task,
            weights=self.weights,
            device=self.device,
            precision=self.precision,
            runtime=self.runtime,
            runtime_options=dict(self.runtime_options) or None,
            registry=self.registry(),
            **dict(self.options),
        )

    def __call__(self) -> Any:
        return self.load()


@dataclass(frozen=True)
class _Declared:
    """What a registration declares, in the shape :func:`resolve_task` reads from a backend."""

    name: str
    tasks: tuple[Task, ...]


def resolve(
    backend: Any,
    *,
    registry: Registry | None = None,
    weights: Any = DEFAULT,
    device: str = "cpu",
    precision: str = "fp32",
    options: Mapping[str, Any] | None = None,
    task: Task | None = None,
    runtime_options: Mapping[str, Any] | None = None,
) -> tuple[Any, str, str]:
    """A loaded backend, its canonical name and precision, from a name, a :class:`LoadRecipe` or a
    backend that is already loaded (the other arguments apply to a name only).

    With ``task``, a backend that does not implement that task's protocol raises
    :class:`TaskNotSupportedError`.
    """
    if isinstance(backend, LoadRecipe):
        bk = backend.with_task(task or backend.task).load()
    elif isinstance(backend, str):
        bk = load(
            backend,
            task=task,
            weights=weights,
            device=device,
            precision=precision,
            registry=registry,
            runtime_options=dict(runtime_options) if runtime_options else None,
            **dict(options or {}),
        )
    else:
        bk = backend
    spec = getattr(bk, "spec", None)
    name = getattr(spec, "name", None) or getattr(bk, "name", None) or type(bk).__name__
    if task is not None and not isinstance(bk, task.protocol):
        raise TaskNotSupportedError(str(name), task.value, [t.value for t in getattr(bk, "tasks", ())])
    return bk, str(name), str(getattr(bk, "precision", precision) or precision)


def registry_with(plugins: Sequence[str], *, only: bool = False) -> Registry | None:
    """A registry with the plugins named by ``"module:attr"`` import strings (a callable is called, as
    plugin factories are): added to the installed ones, or with ``only=True`` alone. ``None`` (the
    process-wide registry) when ``plugins`` is empty.
    """
    if not plugins:
        return None
    objs = [_plugin_object(p) for p in plugins]
    if only:
        return Registry(entry_points=[], plugins=objs, use_environment=False)
    return Registry(plugins=objs)


def _plugin_object(spec: str) -> Any:
    if not isinstance(spec, str) or not spec.split(":")[0]:
        raise InvalidOptionError(
            f"Plugin import string {spec!r} must look like 'package.module[:attribute]'."
        )
    try:
        obj = import_string(spec, owner=f"plugin {spec!r}")
    except VisionKitError as exc:  # a typo in a test's or a user's --plugin string: say which one
        raise InvalidOptionError(f"Cannot import plugin {spec!r}: {exc}") from exc
    plugin_like = hasattr(obj, "register_backends") or hasattr(obj, "register_runtimes")
    return obj() if callable(obj) and not plugin_like else obj
