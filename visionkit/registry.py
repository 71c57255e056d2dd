"""Backend discovery and lookup.

Plugins are found through the ``visionkit`` entry-point group and driven by pluggy. Each plugin's
``register_backends`` hook declares backends as data (:class:`BackendSpec`) with an import string for
the factory, so listing backends imports no model library. A plugin that fails to import, whose hook
raises, whose ``register(...)`` call is malformed (a :class:`~visionkit.errors.RegistrationError`) or
that registers nothing is recorded in :attr:`Registry.errors` and the others still load.

Environment switches:
    VISIONKIT_PLUGINS          comma-separated allow-list of entry-point names to load ("" loads none);
                               a name no installed plugin has is reported in :attr:`Registry.errors`.
    VISIONKIT_DISABLE_PLUGINS  comma-separated entry-point names to skip.
    VISIONKIT_TRACE            "1" logs every hook call to stderr (pluggy tracing), and for each plugin
                               what it registered or why it failed.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import inspect
import os
import pkgutil
import re
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy

from visionkit import hookspecs
from visionkit.errors import (
    BackendUnavailableError,
    DuplicateBackendError,
    PluginLoadError,
    RegistrationError,
    UnknownBackendError,
    close_matches,
)
from visionkit.hookspecs import RegisterBackend, RegisterRuntime  # re-exported: their old home
from visionkit.protocols import Task

__all__ = [
    "CATEGORY_TAGS",
    "PRECISIONS",
    "PROMPT_TYPES",
    "BackendSpec",
    "RegisterBackend",
    "RegisterRuntime",
    "Registry",
    "RuntimeSpec",
    "get_registry",
    "import_string",
    "list_backends",
    "reset_registry",
    "resolve_options",
]

ENTRY_POINT_GROUP = "visionkit"

#: Backend names served by the built-in plugin distributions, for install hints when one is absent.
KNOWN_DISTRIBUTIONS = {
    **dict.fromkeys(("yolo", "yolo-seg", "yolo-cls", "yolo-rtdetr"), "visionkit-yolo"),
    **dict.fromkeys(
        ("detr", "rtdetr", "segformer", "detr-panoptic", "vit", "sam2"), "visionkit-transformers"
    ),
    **dict.fromkeys(
        (
            "maskrcnn",
            "fasterrcnn",
            "fasterrcnn-mobilenet",
            "retinanet",
            "ssdlite",
            "deeplabv3",
            "lraspp",
            "resnet50",
            "mobilenet_v3_large",
            "tv-classifier",
            "tv-detector",
            "tv-segmenter",
        ),
        "visionkit-torchvision",
    ),
    **dict.fromkeys(("sam", "mobile-sam", "sam-auto"), "visionkit-sam"),
    "onnx": "visionkit-onnx",
}

#: Precisions a backend (``precisions=``) or a runtime may declare.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")

#: Prompt kinds a backend may declare (``prompt_types=``): a prompt segmenter's points, boxes and masks,
#: or ``"text"`` for a detector told what to find by name (:class:`~visionkit.TextPromptedDetector`).
PROMPT_TYPES = ("point", "box", "mask", "text")

#: Label-space tags ``categories=`` accepts instead of a list of class names, and what each means.
#: A tag is matched ignoring case, ``-`` and ``_`` (``"imagenet-1k"`` is ``"imagenet1k"``).
CATEGORY_TAGS: dict[str, str] = {
    "ade20k": "the 150 ADE20K scene-parsing classes",
    "cityscapes19": "the 19 Cityscapes evaluation classes",
    "class-agnostic": "no class names: objects or masks without a class (e.g. SAM's segment-everything)",
    "coco80": "the 80 COCO object classes with contiguous ids 0-79 (YOLO, RT-DETR)",
    "coco91": "COCO's 91-id layout, unused ids included (DETR, torchvision detection)",
    "imagenet1k": "the 1000 ImageNet-1k classes",
    "imagenet21k": "the ImageNet-21k classes",
    "voc21": "background plus the 20 PASCAL VOC classes",
}

_TAG_KEYS = {re.sub(r"[-_]", "", t): t for t in CATEGORY_TAGS}
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_IMPORT_STRING = re.compile(rf"^({_DOTTED}):({_DOTTED})$")
_MODULE_NAME = re.compile(rf"^{_DOTTED}$")


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
        categories: class names the default weights predict, when known up front, or one of the
            label-space tags of :data:`CATEGORY_TAGS`.
        precisions: precisions the backend's own runtime supports (among :data:`PRECISIONS`).
        prompt_types: for prompt segmenters: ``"point"``, ``"box"``, ``"mask"``; ``"text"`` for a
            detector told what to find by name (``detect(images, classes=[...])``).
        batch: whether a list of images runs as one forward pass.
        options: optional ``"module:Class"`` of the options model, readable without heavy imports.
        suffixes: file suffixes (``".onnx"``) whose files this backend runs: ``load("model.onnx")``.
        plugin: entry-point name of the plugin that registered it.
        distribution: the installed distribution that provides the plugin, when known.
        extra: unused; kept for code written against older versions (registration keywords are now
            all declared, an unknown one is an error).
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
    suffixes: tuple[str, ...] = ()
    plugin: str = ""
    distribution: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def missing(self) -> list[str]:
        """Required modules that are not installed (found without importing them)."""
        return _missing_modules(self.requires)

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
            "suffixes": list(self.suffixes),
            "plugin": self.plugin,
            "distribution": self.distribution,
            "factory": self.factory if isinstance(self.factory, str) else _qualname(self.factory),
        }


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _missing_modules(modules: Iterable[str]) -> list[str]:
    out = []
    for mod in modules:
        try:
            if importlib.util.find_spec(mod) is None:
                out.append(mod)
        except (ImportError, ValueError):
            out.append(mod)
    return out


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
    #: File suffixes the exporter writes (``".onnx"``); ``visionkit export -o FILE`` picks by them.
    export_suffixes: tuple[str, ...] = ()
    plugin: str = ""
    distribution: str | None = None

    def missing(self) -> list[str]:
        """Required modules that are not installed."""
        return _missing_modules(self.requires)


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
        self._trace: Callable[[str], Any] | None = None
        if use_environment and os.environ.get("VISIONKIT_TRACE") == "1":
            self.pm.trace.root.setwriter(sys.stderr.write)
            self.pm.enable_tracing()
            self._trace = sys.stderr.write
        eps = list(entry_points) if entry_points is not None else _installed_entry_points()
        sources = [_Source(ep.name, ep.load, _dist_name(ep)) for ep in eps]
        if use_environment:
            sources = self._filter_by_env(sources)
        for src in sources:
            self._load_source(src)
        for i, obj in enumerate(plugins):
            self.add_plugin(obj, getattr(obj, "__name__", None) or f"{type(obj).__name__}-{i}")

    # -- loading --------------------------------------------------------------------------------
    def add_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object at run time (a module or instance with ``@hookimpl`` methods)."""
        pname = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        self._load_source(_Source(pname, lambda: plugin, None))

    def _fail(self, src: _Source, exc: BaseException) -> None:
        err = PluginLoadError(src.name, src.distribution, exc)
        self.errors.append(err)
        self._say(f"visionkit: {err}")

    def _say(self, line: str) -> None:
        if self._trace is not None:
            self._trace(line.rstrip("\n") + "\n")

    def _load_source(self, src: _Source) -> None:
        try:
            module = src.load()
            self.pm.register(module, name=src.name)
        except Exception as exc:  # any import-time failure of a third-party plugin is reported, not fatal
            self._fail(src, exc)
            return
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=src.name)
            self._fail(src, exc)
            return
        pending: list[BackendSpec] = []
        runtimes: list[RuntimeSpec] = []

        def register(*args: Any, **kwargs: Any) -> None:
            pending.append(_make_spec(args, kwargs, src, pending))

        def register_runtime(*args: Any, **kwargs: Any) -> None:
            runtimes.append(_make_runtime_spec(args, kwargs, src, runtimes))

        # Only this plugin's implementations, through pluggy so VISIONKIT_TRACE sees the calls.
        others = [p for p in self.pm.get_plugins() if self.pm.get_name(p) != src.name]
        try:
            self.pm.subset_hook_caller("register_backends", remove_plugins=others)(register=register)
            self.pm.subset_hook_caller("register_runtimes", remove_plugins=others)(register=register_runtime)
            if not pending and not runtimes:
                raise _registered_nothing(module, self.pm.get_hookcallers(module) or [])
        except Exception as exc:
            self.pm.unregister(name=src.name)
            self._fail(src, exc)
            return
        for spec in pending:
            self._add(spec)
        for rt in runtimes:
            self.runtimes.setdefault(rt.name, rt)
        self._say(_describe_registration(src, pending, runtimes))

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

    def _filter_by_env(self, sources: list[_Source]) -> list[_Source]:
        allow = _csv_env("VISIONKIT_PLUGINS")
        deny = _csv_env("VISIONKIT_DISABLE_PLUGINS") or set()
        known = sorted(s.name for s in sources)
        for name in sorted((allow or set()) - set(known)):
            # A typo in the allow-list would otherwise load nothing and say nothing.
            similar = close_matches(name, known)
            hint = f" Did you mean {', '.join(repr(m) for m in similar)}?" if similar else ""
            self._fail(
                _Source(name, lambda: None),
                LookupError(
                    f"VISIONKIT_PLUGINS names {name!r}, but no installed plugin has that name.{hint} "
                    f"Installed plugins: {', '.join(known) or '(none)'}."
                ),
            )
        for name in sorted(deny - set(known)):
            self._say(f"visionkit: VISIONKIT_DISABLE_PLUGINS names {name!r}, which is not installed")
        return [s for s in sources if (allow is None or s.name in allow) and s.name not in deny]

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
            if suffix in spec.suffixes:
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
        """Import the factory of ``spec``.

        Raises:
            BackendUnavailableError: a module the factory's module imports is not installed.
            PluginLoadError: the import string itself is wrong (a bug in the plugin).
        """
        if callable(spec.factory):
            return spec.factory
        obj = import_string(spec.factory, owner=spec.name, install=spec.install, plugin=spec.plugin)
        if not callable(obj):
            raise PluginLoadError(
                spec.plugin or spec.name,
                spec.distribution,
                RegistrationError(
                    f"the factory {spec.factory!r} of {spec.name!r} is a {type(obj).__name__}, not a class "
                    "or function",
                    backend=spec.name,
                    key="factory",
                ),
            )
        return obj

    def resolve_options(self, spec: BackendSpec) -> type[Any] | None:
        """The options model registered with ``options="module:Class"``; see :func:`resolve_options`."""
        return resolve_options(spec)

    def precision_hint(self, spec: BackendSpec, precision: str) -> str:
        """What to do when no installed runtime offers ``precision`` for ``spec`` ('' when nothing helps).

        Installing the ONNX runtime plugin is suggested only for ``int8`` and only for a backend that can
        be exported (or whose exportability cannot be told without loading it).
        """
        if precision != "int8":
            return ""
        if self.exportable(spec) is False:
            return (
                f" {spec.name!r} cannot run in another runtime: it does not implement export_spec() "
                "(visionkit.export.Exportable)."
            )
        return " For int8, install the ONNX runtime plugin: `pip install visionkit-onnx`."

    def exportable(self, spec: BackendSpec) -> bool | None:
        """Whether the backend implements ``export_spec()`` (runtimes can run it), ``None`` if unknown.

        Imports the factory's module (heavy), so only for error paths; a factory function is judged by
        the class its return annotation names.
        """
        try:
            factory = self.resolve_factory(spec)
        except Exception:  # unavailable or broken: nothing to say about exporting
            return None
        cls = factory if isinstance(factory, type) else _returned_class(factory)
        if cls is None:
            return None
        return callable(getattr(cls, "export_spec", None))


def resolve_options(spec: BackendSpec) -> type[Any] | None:
    """The options model registered with ``options="module:Class"`` (``None`` when none was).

    Raises:
        PluginLoadError: the import string is wrong, or names something that is not a
            :class:`visionkit.BackendOptions` subclass (a bug in the plugin).
    """
    if not spec.options:
        return None
    # Imported here: the registry stays importable without the backend machinery.
    from visionkit.backend import BackendOptions

    obj = import_string(spec.options, owner=spec.name, install=spec.install, plugin=spec.plugin)
    if not (isinstance(obj, type) and issubclass(obj, BackendOptions)):
        kind = obj.__name__ if isinstance(obj, type) else type(obj).__name__
        raise PluginLoadError(
            spec.plugin or spec.name,
            spec.distribution,
            RegistrationError(
                f"options={spec.options!r} of backend {spec.name!r} names {kind!r}, which is not a "
                "subclass of visionkit.BackendOptions",
                backend=spec.name,
                key="options",
            ),
        )
    return obj


def _returned_class(func: Callable[..., Any]) -> type | None:
    """The class a factory function's return annotation names, when it resolves to one."""
    try:
        ann = inspect.signature(func).return_annotation
    except (TypeError, ValueError):
        return None
    if isinstance(ann, str):
        ann = getattr(func, "__globals__", {}).get(ann.strip("'\""))
    return ann if isinstance(ann, type) else None


def import_string(path: str, *, owner: str, install: str | None = None, plugin: str = "") -> Any:
    """Import ``"module:attr.sub"``.

    Raises:
        BackendUnavailableError: a module imported *by* ``module`` is not installed (``install`` hint).
        PluginLoadError: ``module`` itself (or a package on its path) cannot be found, or it has no
            ``attr``: the import string is wrong, a bug in the plugin, so no install hint.
    """
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if missing == module_name or module_name.startswith(missing + "."):
            raise PluginLoadError(
                plugin or owner,
                None,
                RegistrationError(
                    f"{owner!r} is registered with the import string {path!r}, but module {missing!r} cannot "
                    "be found: a typo in the plugin's import string, or a dependency missing from its "
                    "requires=",
                    backend=owner,
                ),
            ) from exc
        raise BackendUnavailableError(owner, [missing], install) from exc
    try:
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise PluginLoadError(plugin or owner, None, exc) from exc
    return obj


# -- registration: the strict `register(...)` callbacks -----------------------------------------------
_BACKEND_KEYWORDS: dict[str, str] = {
    "tasks": "a task name or a list of them",
    "aliases": "a list of names",
    "requires": "a list of importable module names",
    "install": "a string (the install command) or None",
    "description": "a string",
    "default_weights": "a string (a weights name or path) or None",
    "categories": f"a list of class names, a tag ({', '.join(sorted(CATEGORY_TAGS))}) or None",
    "precisions": f"a list among {', '.join(PRECISIONS)}",
    "prompt_types": f"a list among {', '.join(PROMPT_TYPES)}",
    "batch": "True or False",
    "options": "the import string 'module:Class' of a visionkit.BackendOptions subclass, or None",
    "suffixes": "a list of file suffixes such as '.onnx'",
}
_RUNTIME_KEYWORDS: dict[str, str] = {
    "precisions": f"a list among {', '.join(PRECISIONS)}",
    "requires": "a list of importable module names",
    "install": "a string (the install command) or None",
    "description": "a string",
    "exporter": "an import string 'module:function', a callable, or None",
    "export_suffixes": "a list of file suffixes the exporter writes, such as '.onnx'",
}
_MISSING: Any = object()


def _split_call(
    what: str, args: tuple[Any, ...], kwargs: dict[str, Any], keywords: dict[str, str]
) -> tuple[str, Any, dict[str, Any]]:
    """``(name, factory, keywords)`` of one ``register(...)`` call; unknown keywords are errors."""
    kw = dict(kwargs)
    if len(args) > 2:
        raise RegistrationError(
            f"{what}() takes the name and the factory as positional arguments and everything else as "
            f"keywords, but got {len(args)} positional arguments: {args!r}"
        )
    values = list(args) + [_MISSING] * (2 - len(args))
    for i, key in enumerate(("name", "factory")):
        if key in kw:
            if values[i] is not _MISSING:
                raise RegistrationError(
                    f"{what}() got {key!r} both as a positional argument and as a keyword"
                )
            values[i] = kw.pop(key)
    name, factory = values
    if name is _MISSING:
        raise RegistrationError(f"{what}() needs a name: {what}('myname', 'pkg._backend:Factory', ...)")
    _check_name(name, None, "name")
    if factory is _MISSING:
        raise RegistrationError(
            f"{what}({name!r}) needs a factory: an import string 'module:attr' or a callable",
            backend=name,
            key="factory",
        )
    unknown = sorted(set(kw) - set(keywords))
    if unknown:
        key = unknown[0]
        similar = close_matches(key, keywords)
        hint = f" Did you mean {', '.join(repr(m) for m in similar)}?" if similar else ""
        raise RegistrationError(
            f"{what}({name!r}) got an unknown keyword {key!r}.{hint} Valid keywords: {', '.join(sorted(keywords))}.",
            backend=name,
            key=key,
        )
    return name, factory, kw


def _wrong_type(name: str, key: str, value: Any, expected: str) -> RegistrationError:
    return RegistrationError(
        f"register({name!r}): {key}= must be {expected}, but got {value!r} of type {type(value).__name__}",
        backend=name,
        key=key,
    )


def _check_name(value: Any, backend: str | None, key: str) -> str:
    who = backend if backend is not None else value
    if not isinstance(value, str) or not value:
        raise RegistrationError(
            f"register({who!r}): {key} must be a non-empty string, but got {value!r} of type {type(value).__name__}",
            backend=backend,
            key=key,
        )
    if value != value.strip() or any(c.isspace() for c in value) or ":" in value:
        # ":" separates a backend from a precision on the command line ("yolo:int8").
        raise RegistrationError(
            f"register({who!r}): {key} {value!r} must not contain spaces or ':'", backend=backend, key=key
        )
    return value


def _strings(name: str, key: str, value: Any, expected: str) -> tuple[str, ...]:
    """A sequence of non-empty strings; one string means a sequence of one (never its characters)."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise _wrong_type(name, key, value, expected)
    out = tuple(value)
    twice = sorted({v for v in out if out.count(v) > 1})
    if twice:
        raise RegistrationError(
            f"register({name!r}): {key}= lists {twice} more than once", backend=name, key=key
        )
    return out


def _suffixes(name: str, key: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """File suffixes, lower-cased; each must start with a dot."""
    bad = [s for s in values if not re.fullmatch(r"\.[A-Za-z0-9_.-]+", s)]
    if bad:
        raise _wrong_type(name, key, bad[0], "file suffixes starting with '.', such as '.onnx'")
    return tuple(s.lower() for s in values)


def _among(name: str, key: str, values: tuple[str, ...], valid: Sequence[str]) -> tuple[str, ...]:
    for v in values:
        if v not in valid:
            similar = close_matches(v, valid)
            hint = f" Did you mean {', '.join(repr(m) for m in similar)}?" if similar else ""
            raise RegistrationError(
                f"register({name!r}): unknown {key[:-1].replace('_', ' ')} {v!r} in {key}=.{hint} "
                f"Valid: {', '.join(valid)}.",
                backend=name,
                key=key,
            )
    return values


def _parse_tasks(name: str, value: Any) -> tuple[Task, ...]:
    items = (value,) if isinstance(value, (str, Task)) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise _wrong_type(name, "tasks", value, _BACKEND_KEYWORDS["tasks"])
    valid = ", ".join(t.value for t in Task)
    out: list[Task] = []
    for item in items:
        if not isinstance(item, (str, Task)):
            raise _wrong_type(name, "tasks", value, _BACKEND_KEYWORDS["tasks"])
        key = str(item).strip().lower().replace("-", "_")
        if key in _AMBIGUOUS_TASKS:
            raise RegistrationError(
                f"register({name!r}): task {item!r} is ambiguous; name one of "
                f"{', '.join(t.value for t in _AMBIGUOUS_TASKS[key])}. Valid tasks: {valid}.",
                backend=name,
                key="tasks",
            )
        try:
            task = Task.parse(item)
        except ValueError as exc:
            raise RegistrationError(f"register({name!r}): {exc}", backend=name, key="tasks") from None
        if task in out:
            raise RegistrationError(
                f"register({name!r}): tasks= lists {task.value!r} more than once", backend=name, key="tasks"
            )
        out.append(task)
    return tuple(out)


#: Task words that name more than one task: at registration they must be spelled out.
_AMBIGUOUS_TASKS = {
    "segment": (Task.SEGMENT_SEMANTIC, Task.SEGMENT_INSTANCES, Task.SEGMENT_PROMPT),
    "segmentation": (Task.SEGMENT_SEMANTIC, Task.SEGMENT_INSTANCES, Task.SEGMENT_PROMPT),
}


def _parse_categories(name: str, value: Any) -> tuple[str, ...] | str | None:
    if value is None:
        return None
    if isinstance(value, str):
        tag = _TAG_KEYS.get(re.sub(r"[-_]", "", value.strip().lower()))
        if tag is None:
            similar = close_matches(value, CATEGORY_TAGS)
            hint = f" Did you mean {', '.join(repr(m) for m in similar)}?" if similar else ""
            raise RegistrationError(
                f"register({name!r}): categories={value!r} is not a known label-space tag.{hint} Known tags: "
                f"{', '.join(sorted(CATEGORY_TAGS))}; for any other label set pass the list of class names",
                backend=name,
                key="categories",
            )
        return tag
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)  # repeats allowed: index = class_id, and COCO-style layouts repeat "N/A"
    raise _wrong_type(name, "categories", value, _BACKEND_KEYWORDS["categories"])


def _check_import_string(
    name: str, key: str, value: Any, requires: tuple[str, ...], *, allow_callable: bool
) -> str | Callable[..., Any]:
    """A well-formed ``module:attr`` whose module exists (when that can be told without importing)."""
    if allow_callable and callable(value) and not isinstance(value, str):
        return value
    if not isinstance(value, str):
        expected = "an import string 'module:attr'" + (" or a callable" if allow_callable else "")
        if isinstance(value, type):
            expected += f" (e.g. {value.__module__ + ':' + value.__qualname__!r})"
        raise _wrong_type(name, key, value, expected)
    match = _IMPORT_STRING.match(value)
    if not match:
        raise RegistrationError(
            f"register({name!r}): {key}= must be 'module:attr' (e.g. 'mypkg._backend:MyBackend'), but got {value!r}",
            backend=name,
            key=key,
        )
    module, attr = match.groups()
    if _missing_modules(requires):
        return value  # the backend is unavailable anyway; its module may need what is missing
    problem = _module_problem(module, attr)
    if problem:
        raise RegistrationError(
            f"register({name!r}): {key}={value!r}: {problem}. A typo, or a dependency missing from requires=",
            backend=name,
            key=key,
        )
    return value


def _module_problem(module: str, attr: str) -> str | None:
    """Why ``module:attr`` cannot resolve, judged without importing anything new; ``None`` if it may."""
    top, _, _ = module.partition(".")
    try:
        if top not in sys.modules and importlib.util.find_spec(top) is None:
            return f"module {top!r} is not installed"
        parent, _, leaf = module.rpartition(".")
        if parent and parent in sys.modules and importlib.util.find_spec(module) is None:
            path = getattr(sys.modules[parent], "__path__", None)
            siblings = [m.name for m in pkgutil.iter_modules(path)] if path is not None else []
            similar = close_matches(leaf, siblings)
            hint = f" (did you mean {', '.join(repr(parent + '.' + m) for m in similar)}?)" if similar else ""
            return f"package {parent!r} has no module {leaf!r}{hint}"
    except (ImportError, ValueError):  # an odd module spec: leave the verdict to load()
        return None
    if module in sys.modules:  # already imported: the attribute can be checked for free
        obj: Any = sys.modules[module]
        for part in attr.split("."):
            if not hasattr(obj, part):
                names = [n for n in dir(obj) if not n.startswith("__")]
                similar = close_matches(part, names)
                hint = f" (did you mean {', '.join(repr(m) for m in similar)}?)" if similar else ""
                return f"{module!r} has no attribute {part!r}{hint}"
            obj = getattr(obj, part)
    return None


def _make_spec(
    args: tuple[Any, ...], kwargs: dict[str, Any], src: _Source, done: list[BackendSpec]
) -> BackendSpec:
    name, factory, kw = _split_call("register", args, kwargs, _BACKEND_KEYWORDS)
    if "tasks" not in kw:
        raise RegistrationError(
            f"register({name!r}) needs tasks=, e.g. tasks=['detect']; valid tasks: {', '.join(t.value for t in Task)}",
            backend=name,
            key="tasks",
        )
    tasks = _parse_tasks(name, kw.pop("tasks"))
    fields: dict[str, Any] = {}
    for key in ("aliases", "requires", "precisions", "prompt_types", "suffixes"):
        if key in kw:
            fields[key] = _strings(name, key, kw[key], _BACKEND_KEYWORDS[key])
    for alias in fields.get("aliases", ()):
        _check_name(alias, name, "alias")
    for mod in fields.get("requires", ()):
        if not _MODULE_NAME.match(mod):
            raise _wrong_type(name, "requires", mod, "importable module names such as 'torch'")
    if "precisions" in fields:
        _among(name, "precisions", fields["precisions"], PRECISIONS)
        if not fields["precisions"]:
            raise RegistrationError(
                f"register({name!r}): precisions= is empty", backend=name, key="precisions"
            )
    if "prompt_types" in fields:
        _among(name, "prompt_types", fields["prompt_types"], PROMPT_TYPES)
        spatial = [p for p in fields["prompt_types"] if p != "text"]
        if Task.SEGMENT_PROMPT not in tasks and spatial:
            raise RegistrationError(
                f"register({name!r}): prompt_types={spatial!r} is only for backends with the segment_prompt "
                "task ('text' is for detectors told what to find by name)",
                backend=name,
                key="prompt_types",
            )
        if "text" in fields["prompt_types"] and Task.DETECT not in tasks:
            raise RegistrationError(
                f"register({name!r}): prompt_types=['text'] is for detectors (task detect) told what to "
                "find by name",
                backend=name,
                key="prompt_types",
            )
    if "suffixes" in fields:
        fields["suffixes"] = _suffixes(name, "suffixes", fields["suffixes"])
    for key in ("install", "default_weights"):
        if key in kw:
            if kw[key] is not None and not isinstance(kw[key], str):
                raise _wrong_type(name, key, kw[key], _BACKEND_KEYWORDS[key])
            fields[key] = kw[key]
    if "description" in kw:
        if not isinstance(kw["description"], str):
            raise _wrong_type(name, "description", kw["description"], "a string")
        fields["description"] = kw["description"]
    if "batch" in kw:
        if not isinstance(kw["batch"], bool):
            raise _wrong_type(name, "batch", kw["batch"], "True or False")
        fields["batch"] = kw["batch"]
    if "categories" in kw:
        fields["categories"] = _parse_categories(name, kw["categories"])
    requires = fields.get("requires", ())
    if kw.get("options") is not None:
        fields["options"] = _check_import_string(
            name, "options", kw["options"], requires, allow_callable=False
        )
    factory = _check_import_string(name, "factory", factory, requires, allow_callable=True)
    _check_not_twice(name, fields.get("aliases", ()), done, src)
    return BackendSpec(
        name=name, factory=factory, tasks=tasks, plugin=src.name, distribution=src.distribution, **fields
    )


def _check_not_twice(name: str, aliases: tuple[str, ...], done: list[BackendSpec], src: _Source) -> None:
    """One plugin claiming one name twice is its own bug, not a clash between two plugins."""
    if name in aliases:
        raise RegistrationError(f"register({name!r}): the name is also listed in its aliases", backend=name)
    mine = {n: s.name for s in done for n in (s.name, *s.aliases)}
    for key in (name, *aliases):
        if key in mine:
            first = "an earlier backend" if mine[key] == key else f"an alias of {mine[key]!r}"
            raise RegistrationError(
                f"plugin {src.name!r} registers {key!r} twice: as {first}, then "
                + ("as a backend" if key == name else f"as an alias of {name!r}"),
                backend=name,
            )


def _make_runtime_spec(
    args: tuple[Any, ...], kwargs: dict[str, Any], src: _Source, done: list[RuntimeSpec]
) -> RuntimeSpec:
    name, factory, kw = _split_call("register", args, kwargs, _RUNTIME_KEYWORDS)
    if "precisions" not in kw:
        raise RegistrationError(
            f"register({name!r}) needs precisions=, e.g. precisions=['int8']", backend=name, key="precisions"
        )
    precisions = _among(
        name,
        "precisions",
        _strings(name, "precisions", kw["precisions"], _RUNTIME_KEYWORDS["precisions"]),
        PRECISIONS,
    )
    requires = _strings(name, "requires", kw.get("requires", ()), _RUNTIME_KEYWORDS["requires"])
    for key in ("install", "description"):
        if kw.get(key) is not None and not isinstance(kw[key], str):
            raise _wrong_type(name, key, kw[key], _RUNTIME_KEYWORDS[key])
    exporter = kw.get("exporter")
    if exporter is not None:
        exporter = _check_import_string(name, "exporter", exporter, requires, allow_callable=True)
    export_suffixes = _suffixes(
        name,
        "export_suffixes",
        _strings(
            name, "export_suffixes", kw.get("export_suffixes", ()), _RUNTIME_KEYWORDS["export_suffixes"]
        ),
    )
    if export_suffixes and exporter is None:
        raise RegistrationError(
            f"register({name!r}): export_suffixes= says what the exporter writes, but no exporter= is given",
            backend=name,
            key="export_suffixes",
        )
    factory = _check_import_string(name, "factory", factory, requires, allow_callable=True)
    if any(r.name == name for r in done):
        raise RegistrationError(f"plugin {src.name!r} registers runtime {name!r} twice", backend=name)
    return RuntimeSpec(
        name,
        factory,
        precisions,
        requires=requires,
        install=kw.get("install"),
        description=kw.get("description") or "",
        exporter=exporter,
        export_suffixes=export_suffixes,
        plugin=src.name,
        distribution=src.distribution,
    )


def _registered_nothing(module: object, hooks: list[Any]) -> RegistrationError:
    """Why a plugin that loaded fine added no backend and no runtime."""
    if hooks:
        names = ", ".join(sorted(h.name for h in hooks))
        return RegistrationError(f"its hooks ({names}) ran but never called register(...)")
    undecorated = [
        h for h in ("register_backends", "register_runtimes") if callable(getattr(module, h, None))
    ]
    if undecorated:
        return RegistrationError(
            f"it defines {', '.join(undecorated)} without the @visionkit.hookimpl decorator, so it registers nothing"
        )
    return RegistrationError(
        "it implements no visionkit hook (register_backends or register_runtimes, marked @visionkit.hookimpl)"
    )


def _describe_registration(src: _Source, backends: list[BackendSpec], runtimes: list[RuntimeSpec]) -> str:
    where = f" (distribution {src.distribution!r})" if src.distribution else ""
    parts = []
    for s in backends:
        alias = f", aliases {', '.join(s.aliases)}" if s.aliases else ""
        parts.append(f"backend {s.name!r} [{', '.join(t.value for t in s.tasks)}{alias}]")
    parts += [f"runtime {r.name!r} [{', '.join(r.precisions)}]" for r in runtimes]
    return f"visionkit: plugin {src.name!r}{where} registered {'; '.join(parts)}"


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
