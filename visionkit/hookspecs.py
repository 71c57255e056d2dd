"""Hook specifications a visionkit plugin can implement, and the callbacks the hooks receive.

A plugin is a module exposed through the ``visionkit`` entry-point group::

    [project.entry-points.visionkit]
    myplugin = "visionkit_myplugin"

whose module implements hooks marked with :data:`hookimpl`. Each hook receives a ``register``
callback (:class:`RegisterBackend`, :class:`RegisterRuntime`) that the core validates strictly: a
malformed call is reported as a :class:`~visionkit.errors.PluginLoadError` for the plugin.

This module stands below the registry: it imports nothing from :mod:`visionkit.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from visionkit.protocols import Task

__all__ = [
    "RegisterBackend",
    "RegisterRuntime",
    "hookimpl",
    "hookspec",
    "register_backends",
    "register_runtimes",
]

hookspec = pluggy.HookspecMarker("visionkit")
#: Decorator marking a plugin's hook implementation: ``@visionkit.hookimpl``.
hookimpl = pluggy.HookimplMarker("visionkit")


class RegisterBackend(Protocol):
    """The ``register`` callback passed to the ``register_backends`` hook.

    Every keyword is validated: an unknown keyword, a value of the wrong type, an unknown task,
    precision, prompt type or categories tag, or a malformed import string fails the plugin with a
    :class:`~visionkit.errors.PluginLoadError` naming the plugin, the backend and the keyword.
    ``tasks``, ``aliases``, ``requires``, ``precisions``, ``prompt_types`` and ``suffixes`` take a
    sequence of strings, or one string meaning a sequence of one.
    """

    def __call__(
        self,
        name: str,
        factory: str | Callable[..., Any],
        *,
        tasks: Sequence[Task | str] | Task | str,
        aliases: Sequence[str] | str = (),
        requires: Sequence[str] | str = (),
        install: str | None = None,
        description: str = "",
        default_weights: str | None = None,
        categories: Sequence[str] | str | None = None,
        precisions: Sequence[str] | str = ("fp32",),
        prompt_types: Sequence[str] | str = (),
        batch: bool = True,
        options: str | None = None,
        suffixes: Sequence[str] | str = (),
    ) -> None: ...


class RegisterRuntime(Protocol):
    """The ``register`` callback passed to the ``register_runtimes`` hook (validated like backends')."""

    def __call__(
        self,
        name: str,
        factory: str | Callable[..., Any],
        *,
        precisions: Sequence[str] | str,
        requires: Sequence[str] | str = (),
        install: str | None = None,
        description: str = "",
        exporter: str | Callable[..., Any] | None = None,
        export_suffixes: Sequence[str] | str = (),
    ) -> None: ...


@hookspec
def register_backends(register: RegisterBackend) -> None:
    """Register backends by calling ``register(name, factory, tasks=..., ...)`` once per backend.

    Registration must be cheap: pass the factory as an import string (``"pkg._backend:MyBackend"``)
    so heavy libraries are imported only when a user calls :func:`visionkit.load`.
    See :class:`RegisterBackend` and ``docs/plugins.md`` for every argument.
    """


@hookspec
def register_runtimes(register: RegisterRuntime) -> None:
    """Register runtimes that can run any exportable backend at other precisions.

    Call ``register(name, factory, precisions=("fp32", "int8"), requires=..., install=..., exporter=...)``. The
    factory is called as ``factory(backend, precision=..., **runtime_options)`` on a loaded float
    backend implementing :class:`visionkit.export.Exportable` and must return a backend with the same
    tasks whose ``forward`` runs in the runtime. ``visionkit.load(name, precision=..., runtime=...)``
    picks it when the backend's own runtime lacks the precision. ``exporter`` (optional import string)
    is called as ``exporter(backend, precision=..., output=path, **runtime_options)`` by
    ``visionkit export`` to write the exported model file and return a report dict;
    ``export_suffixes`` (e.g. ``(".onnx",)``) are the files it writes, so ``visionkit export -o m.xml``
    picks the runtime that writes ``.xml`` and refuses one that does not.
    """
