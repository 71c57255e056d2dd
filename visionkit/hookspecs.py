"""Hook specifications a visionkit plugin can implement.

A plugin is a module exposed through the ``visionkit`` entry-point group::

    [project.entry-points.visionkit]
    myplugin = "visionkit_myplugin"

whose module implements hooks marked with :data:`hookimpl`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from visionkit.registry import RegisterBackend, RegisterRuntime

__all__ = ["hookimpl", "hookspec", "register_backends", "register_runtimes"]

hookspec = pluggy.HookspecMarker("visionkit")
#: Decorator marking a plugin's hook implementation: ``@visionkit.hookimpl``.
hookimpl = pluggy.HookimplMarker("visionkit")


@hookspec
def register_backends(register: RegisterBackend) -> None:
    """Register backends by calling ``register(name, factory, tasks=..., ...)`` once per backend.

    Registration must be cheap: pass the factory as an import string (``"pkg._backend:MyBackend"``)
    so heavy libraries are imported only when a user calls :func:`visionkit.load`.
    See :meth:`visionkit.registry.Registry.register` for every argument.
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
    ``visionkit export`` to write the exported model file and return a report dict.
    """
