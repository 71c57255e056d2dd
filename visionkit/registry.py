"""Backend discovery and lookup.

Plugins are found through the ``visionkit`` entry-point group and driven by pluggy. Each plugin's
``register_backends`` hook declares backends as data (:class:`BackendSpec`) with an import string for
the factory, so listing backends imports no model library. A plugin that fails to import or whose
hook raises is recorded in :attr:`Registry.errors` and the others still load.

Environment switches:
    VISIONKIT_PLUGINS          comma-separated allow-list of entry-point names to load ("" loads none).
    VISIONKIT_DISABLE_PLUGINS  comma-separated entry-point names to skip.
    VISIONKIT_TRACE            "1" logs every hook call to stderr (pluggy tracing).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pluggy

from visionkit import hookspecs
from visionkit.errors import (
    BackendUnavailableError,
    DuplicateBackendError,
    PluginLoadError,
    UnknownBackendError,
)
from visionkit.protocols import Task

__all__ = [
    "BackendSpec",
    "RegisterBackend",
    "RegisterRuntime",
    "Registry",
    "RuntimeSpec",
    "get_registry",
    "import_string",
    "list_backends",
    "reset_registry",
]

ENTRY_POINT_GROUP = "visionkit"

#: Backend names served by the built-in plugin distributions, for install hints when one is absent.
KNOWN_DISTRIBUTIONS = {
    **dict.fromkeys(("yolo", "yolo-seg", "yolo-cls", "yolo-rtdetr"), "visionkit-yolo"),
    **dict.fromkeys(("detr", "rtdetr", "segformer", "detr-panoptic", "vit"), "visionkit-transformers"),
    **dict.fromkeys(
        ("maskrcnn", "fasterrcnn", "deeplabv3", "lraspp", "resnet50", "mobilenet_v3_large"),
        "visionkit-torchvision",
    ),
    **dict.fromkeys(("sam", "mobile-sam", "sam-auto"), "visionkit-sam"),
}


@dataclass(frozen=True)
class BackendSpec:
    """Everything known about a backend before it is loaded.

    Attributes:
        name: canonical name used with :func:`visionkit.load`.
        factory: ``"module:attr"`` import string (or a callable) building the backend from
            ``weights=, device=, precision=, **options``.
        tasks: tasks the loaded backend performs (each maps to a protocol).
        aliases: other names that resolve to this backend.
        requires: importable top-level modules the backend needs (checked without importing them).
        install: the command that installs what ``requires`` lists.
        description: one line for ``visionkit list``.
        default_weights: weights used when ``load`` is not given ``weights`` (``None``: random init).
        categories: class names the default weights predict, when known up front (or a label-space tag).
        precisions: precisions the backend's own runtime supports.
        prompt_types: for prompt segmenters: ``"point"``, ``"box"``, ``"mask"``.
        batch: whether a list of images runs as one forward pass.
        options: optional ``"module:Class"`` of the options model, readable without heavy imports.
        plugin: entry-point name of the plugin that registered it.
        distribution: the installed distribution that provides the plugin, when known.
    """

    name: str
    factory: str | Callable[..., Any]
    tasks: tuple[Task, ...]
    aliases: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    install: str | None = None
    description: str = ""
    default_weights: str | None = None
    categories: tuple[str, ...] | str | None = None
    precisions: tuple[str, ...] = ("fp32",)
    prompt_types: tuple[str, ...] = ()
    batch: bool = True
    options: str | None = None
    plugin: str = ""
    distribution: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def missing(self) -> list[str]:
        """Required modules that are not installed (found without importing them)."""
        out = []
        for mod in self.requires:
            try:
                if importlib.util.find_spec(mod) is None:
                    out.append(mod)
            except (ImportError, ValueError):
                out.append(mod)
        return out

    @property
    def available(self) -> bool:
        """True when every required module is installed."""
        return not self.missing()

    def does(self, task: Task | str) -> bool:
        """True when the backend performs ``task``."""
        return Task.parse(task) in self.tasks

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description (used by ``visionkit list --json`` and ``info``)."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "tasks": [t.value for t in self.tasks],
            "description": self.description,
            "available": self.available,
            "missing": self.missing(),
            "install": self.install,
            "default_weights": self.default_weights,
            "categories": list(self.categories) if isinstance(self.categories, tuple) else self.categories,
            "precisions": list(self.precisions),
            "prompt_types": list(self.prompt_types),
            "batch": self.batch,
            "plugin": self.plugin,
            "distribution": self.distribution,
            "factory": self.factory if isinstance(self.factory, str) else _qualname(self.factory),
        }


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


@dataclass(frozen=True)
class RuntimeSpec:
    """A runtime that can run exportable backends at other precisions (see ``register_runtimes``)."""

    name: str
    factory: str | Callable[..., Any]
    precisions: tuple[str, ...]
    requires: tuple[str, ...] = ()
    install: str | None = None
    description: str = ""
    exporter: str | Callable[..., Any] | None = None
    plugin: str = ""
    distribution: str | None = None

    def missing(self) -> list[str]:
        """Required modules that are not installed."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


class RegisterRuntime(Protocol):
    """The ``register`` callback passed to the ``register_runtimes`` hook."""

    def __call__(
        self,
        name: str,
        factory: str | Callable[..., Any],
        *,
        precisions: Sequence[str],
        requires: Sequence[str] = (),
        install: str | None = None,
        description: str = "",
        exporter: str | Callable[..., Any] | None = None,
    ) -> None: ...


class RegisterBackend(Protocol):
    """The ``register`` callback passed to the ``register_backends`` hook."""

    def __call__(
        self,
        name: str,
        factory: str | Callable[..., Any],
        *,
        tasks: Sequence[Task | str],
        aliases: Sequence[str] = (),
        requires: Sequence[str] = (),
        install: str | None = None,
        description: str = "",
        default_weights: str | None = None,
        categories: Sequence[str] | str | None = None,
        precisions: Sequence[str] = ("fp32",),
        prompt_types: Sequence[str] = (),
        batch: bool = True,
        options: str | None = None,
        **extra: Any,
    ) -> None: ...


@dataclass
class _Source:
    """A plugin to load: its name, how to get its module, and which distribution ships it."""

    name: str
    load: Callable[[], object]
    distribution: str | None = None


class Registry:
    """Known backends, the plugins that registered them, and the plugins that failed.

    Args:
        entry_points: entry points to load instead of the installed ``visionkit`` group (tests).
        plugins: extra plugin objects (modules or instances with hook implementations) to register.
        use_environment: honour ``VISIONKIT_PLUGINS`` / ``VISIONKIT_DISABLE_PLUGINS`` / ``VISIONKIT_TRACE``.
    """

    def __init__(
        self,
        entry_points: Iterable[md.EntryPoint] | None = None,
        plugins: Iterable[object] = (),
        *,
        use_environment: bool = True,
    ) -> None:
        self.pm = pluggy.PluginManager("visionkit")
        self.pm.add_hookspecs(hookspecs)
        self._specs: dict[str, BackendSpec] = {}
        self._aliases: dict[str, str] = {}
        self._conflicts: dict[str, DuplicateBackendError] = {}
        self.runtimes: dict[str, RuntimeSpec] = {}
        self.errors: list[PluginLoadError] = []
        if use_environment and os.environ.get("VISIONKIT_TRACE") == "1":
            self.pm.trace.root.setwriter(sys.stderr.write)
            self.pm.enable_tracing()
        eps = list(entry_points) if entry_points is not None else _installed_entry_points()
        sources = [_Source(ep.name, ep.load, _dist_name(ep)) for ep in eps]
        if use_environment:
            sources = _filter_by_env(sources)
        for src in sources:
            self._load_source(src)
        for i, obj in enumerate(plugins):
            self.add_plugin(obj, getattr(obj, "__name__", None) or f"{type(obj).__name__}-{i}")

    # -- loading --------------------------------------------------------------------------------
    def add_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object at run time (a module or instance with ``@hookimpl`` methods)."""
        pname = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        self._load_source(_Source(pname, lambda: plugin, None))

    def _load_source(self, src: _Source) -> None:
        try:
            module = src.load()
            self.pm.register(module, name=src.name)
        except Exception as exc:  # any import-time failure of a third-party plugin is reported, not fatal
            self.errors.append(PluginLoadError(src.name, src.distribution, exc))
            return
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=src.name)
            self.errors.append(PluginLoadError(src.name, src.distribution, exc))
            return
        pending: list[BackendSpec] = []

        def register(
            name: str, factory: str | Callable[..., Any], *, tasks: Sequence[Task | str], **kw: Any
        ) -> None:
            pending.append(_make_spec(name, factory, tasks, kw, src))

        runtimes: list[RuntimeSpec] = []

        def register_runtime(
            name: str, factory: str | Callable[..., Any], *, precisions: Sequence[str], **kw: Any
        ) -> None:
            kw = {k: tuple(v) if k == "requires" else v for k, v in kw.items()}
            runtimes.append(
                RuntimeSpec(
                    name, factory, tuple(precisions), plugin=src.name, distribution=src.distribution, **kw
                )
            )

        # Only this plugin's implementations, through pluggy so VISIONKIT_TRACE sees the calls.
        others = [p for p in self.pm.get_plugins() if self.pm.get_name(p) != src.name]
        try:
            self.pm.subset_hook_caller("register_backends", remove_plugins=others)(register=register)
            self.pm.subset_hook_caller("register_runtimes", remove_plugins=others)(register=register_runtime)
        except Exception as exc:
            self.pm.unregister(name=src.name)
            self.errors.append(PluginLoadError(src.name, src.distribution, exc))
            return
        for spec in pending:
            self._add(spec)
        for rt in runtimes:
            self.runtimes.setdefault(rt.name, rt)

    def _add(self, spec: BackendSpec) -> None:
        # A clash is recorded against the name, not raised here: the other backends stay usable and
        # `load(name)` on the clashing name raises DuplicateBackendError naming both plugins.
        for key in (spec.name, *spec.aliases):
            owner = self._aliases.get(key)
            if owner is not None:
                self._conflicts[key] = DuplicateBackendError(key, self._specs[owner].plugin, spec.plugin)
            elif key == spec.name or spec.name not in self._conflicts:
                self._aliases[key] = spec.name
        if spec.name not in self._conflicts:
            self._specs[spec.name] = spec

    # -- lookup ---------------------------------------------------------------------------------
    def get(self, name: str) -> BackendSpec:
        """The spec for ``name`` (canonical or alias).

        Raises:
            DuplicateBackendError: two plugins claim the name.
            UnknownBackendError: no plugin registered it (lists close matches and every known name).
        """
        key = name.strip()
        if key in self._conflicts:
            raise self._conflicts[key]
        canonical = self._aliases.get(key) or self._aliases.get(key.lower())
        if canonical is None:
            hint = None
            dist = KNOWN_DISTRIBUTIONS.get(key.lower())
            if dist:
                hint = f"It is provided by the {dist} plugin: `pip install {dist}`."
            elif self.errors:
                failed = ", ".join(e.plugin for e in self.errors)
                hint = f"Some plugins failed to load ({failed}); run `visionkit list` to see why."
            raise UnknownBackendError(name, list(self._aliases), hint)
        return self._specs[canonical]

    def for_file(self, name: str | os.PathLike[str]) -> BackendSpec | None:
        """The backend that runs ``name`` when it is an existing file whose suffix a backend claims.

        A plugin claims suffixes at registration: ``register(..., suffixes=(".onnx",))`` (a self-describing
        model file, e.g. visionkit-onnx's deploy artifacts), so ``load("model.onnx")`` works.
        """
        path = os.fspath(name)
        suffix = os.path.splitext(path)[1].lower()
        if not suffix or not os.path.isfile(path):
            return None
        for spec in sorted(self._specs.values(), key=lambda s: s.name):
            if suffix in tuple(spec.extra.get("suffixes", ())):
                return spec
        return None

    def specs(self, task: Task | str | None = None, *, available_only: bool = False) -> list[BackendSpec]:
        """Registered backends sorted by name, optionally only those doing ``task`` or installed."""
        out = sorted(self._specs.values(), key=lambda s: s.name)
        if task is not None:
            t = Task.parse(task)
            out = [s for s in out if t in s.tasks]
        if available_only:
            out = [s for s in out if s.available]
        return out

    @property
    def conflicts(self) -> list[DuplicateBackendError]:
        """Names claimed by two plugins."""
        return list(self._conflicts.values())

    def resolve_factory(self, spec: BackendSpec | RuntimeSpec) -> Callable[..., Any]:
        """Import the factory of ``spec``; a missing dependency becomes :class:`BackendUnavailableError`."""
        if callable(spec.factory):
            return spec.factory
        return import_string(spec.factory, owner=spec.name, install=spec.install, plugin=spec.plugin)


def import_string(path: str, *, owner: str, install: str | None = None, plugin: str = "") -> Any:
    """Import ``"module:attr.sub"``; a missing module becomes :class:`BackendUnavailableError` for ``owner``."""
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(owner, [exc.name or module_name], install) from exc
    try:
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise PluginLoadError(plugin or owner, None, exc) from exc
    return obj


def _make_spec(
    name: str,
    factory: str | Callable[..., Any],
    tasks: Sequence[Task | str],
    kw: dict[str, Any],
    src: _Source,
) -> BackendSpec:
    if not name or not isinstance(name, str):
        raise ValueError(f"backend name must be a non-empty string, got {name!r}")
    if isinstance(factory, str) and ":" not in factory:
        raise ValueError(f"factory for {name!r} must be 'module:attr', got {factory!r}")
    parsed = tuple(Task.parse(t) for t in tasks)
    if not parsed:
        raise ValueError(f"backend {name!r} must declare at least one task")
    known = {f for f in BackendSpec.__dataclass_fields__}
    fields = {k: v for k, v in kw.items() if k in known}
    extra = {k: v for k, v in kw.items() if k not in known}
    for key in ("aliases", "requires", "precisions", "prompt_types"):
        if key in fields:
            fields[key] = tuple(fields[key])
    if isinstance(fields.get("categories"), (list, tuple)):
        fields["categories"] = tuple(fields["categories"])
    return BackendSpec(
        name=name,
        factory=factory,
        tasks=parsed,
        plugin=src.name,
        distribution=src.distribution,
        extra=extra,
        **fields,
    )


def _installed_entry_points() -> list[md.EntryPoint]:
    return list(md.entry_points(group=ENTRY_POINT_GROUP))


def _dist_name(ep: md.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) if dist is not None else None


def _csv_env(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _filter_by_env(sources: list[_Source]) -> list[_Source]:
    allow = _csv_env("VISIONKIT_PLUGINS")
    deny = _csv_env("VISIONKIT_DISABLE_PLUGINS") or set()
    return [s for s in sources if (allow is None or s.name in allow) and s.name not in deny]


_registry: Registry | None = None
_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, built from installed entry points on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = Registry()
        return _registry


def reset_registry(registry: Registry | None = None) -> None:
    """Replace (or drop, to rebuild lazily) the process-wide registry; for tests and notebooks."""
    global _registry
    with _lock:
        _registry = registry


def list_backends(task: Task | str | None = None, *, available_only: bool = False) -> list[BackendSpec]:
    """Registered backends, sorted by name, without importing any model library.

    Args:
        task: only backends doing this task (``"detect"``, ``"classify"``, ``"segment_instances"`` ...).
        available_only: only backends whose dependencies are installed.
    """
    return get_registry().specs(task, available_only=available_only)
