"""Every exception visionkit raises on purpose.

Hierarchy::

    VisionKitError
    ├── UnknownBackendError (LookupError)      no backend by that name or alias
    ├── DuplicateBackendError                  two plugins registered the same name
    ├── BackendUnavailableError (ImportError)  a backend's optional dependency is missing
    ├── PluginLoadError                        a plugin failed to import or register (reported, not raised by load)
    ├── RegistrationError (ValueError)         a plugin called ``register(...)`` wrongly (the cause of a PluginLoadError)
    ├── TaskNotSupportedError                  the backend does not do the requested task
    ├── InvalidOptionError (ValueError)        unknown or invalid backend option / precision / device (.key, .valid)
    │   ├── UnknownOptionError                 an option name the backend (or runtime) does not know
    │   └── LimitExceededError                 a request exceeds a documented limit (size, prompts, body ...)
    ├── ExportNotSupportedError                the backend cannot hand its network to another runtime
    ├── DatasetError                           an evaluation dataset (folder, annotations, masks) is unusable
    ├── WeightsNotFoundError (FileNotFoundError) nothing found where weights were looked for
    ├── InvalidImageError (ValueError)         an input that is not a usable image
    ├── InvalidPromptError (ValueError)        a prompt (points, boxes, masks) that cannot be used
    ├── UnsafeWeightsError                     a weights file needs code execution to load; opt in to trust it
    └── BackendError (RuntimeError)            the underlying library failed; the cause is chained

Messages are one sentence naming the offending value, then what was expected and what was received.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "DatasetError",
    "DuplicateBackendError",
    "ExportNotSupportedError",
    "InvalidImageError",
    "InvalidOptionError",
    "InvalidPromptError",
    "LimitExceededError",
    "PluginLoadError",
    "RegistrationError",
    "TaskNotSupportedError",
    "UnknownBackendError",
    "UnknownOptionError",
    "UnsafeWeightsError",
    "VisionKitError",
    "WeightsNotFoundError",
    "close_matches",
]


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` candidates that look like ``word`` (for "did you mean" hints)."""
    return difflib.get_close_matches(word, sorted(set(candidates)), n=n, cutoff=0.6)


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    matches = close_matches(word, candidates)
    return f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""


class VisionKitError(Exception):
    """Base class of every error visionkit raises on purpose."""


class UnknownBackendError(VisionKitError, LookupError):
    """No registered backend has this name or alias."""

    def __init__(self, name: str, known: Sequence[str], hint: str | None = None) -> None:
        self.name = name
        self.known = sorted(known)
        listing = ", ".join(self.known) if self.known else "(none: no visionkit plugin is installed)"
        msg = f"Unknown backend {name!r}.{_did_you_mean(name, self.known)} Known backends: {listing}."
        msg += " " + (hint or "Install a plugin that provides it, e.g. `pip install visionkit-<name>`.")
        super().__init__(msg)


class DuplicateBackendError(VisionKitError):
    """Two plugins registered the same backend name or alias."""

    def __init__(self, name: str, first: str, second: str) -> None:
        self.name, self.first, self.second = name, first, second
        super().__init__(
            f"Backend name {name!r} is registered by two plugins: {first!r} and {second!r}. "
            "Uninstall one of them, or disable one with VISIONKIT_DISABLE_PLUGINS."
        )


class BackendUnavailableError(VisionKitError, ImportError):
    """A backend's optional dependency is not installed."""

    def __init__(self, backend: str, missing: Sequence[str], install_hint: str | None) -> None:
        self.backend, self.missing = backend, list(missing)
        hint = install_hint or f"pip install {' '.join(self.missing)}"
        super().__init__(
            f"Backend {backend!r} needs {', '.join(repr(m) for m in self.missing)}, which is not installed. "
            f"Install it with: {hint}"
        )


class PluginLoadError(VisionKitError):
    """A plugin could not be imported or its hook raised; other plugins are unaffected."""

    def __init__(self, plugin: str, distribution: str | None, cause: BaseException) -> None:
        self.plugin, self.distribution, self.cause = plugin, distribution, cause
        where = f" (from distribution {distribution!r})" if distribution else ""
        super().__init__(f"Plugin {plugin!r}{where} failed to load: {type(cause).__name__}: {cause}")


class RegistrationError(VisionKitError, ValueError):
    """A plugin's ``register(...)`` call or its hooks are malformed: a bug in the plugin, not the user's setup.

    The registry reports it as the ``cause`` of a :class:`PluginLoadError` for that plugin.

    Attributes:
        backend: the backend (or runtime) name being registered, when known.
        key: the offending keyword (``"categories"``, ``"factory"`` ...), when there is one.
    """

    def __init__(self, message: str, *, backend: str | None = None, key: str | None = None) -> None:
        self.backend, self.key = backend, key
        super().__init__(message)


class TaskNotSupportedError(VisionKitError):
    """The backend was asked for a task it does not perform."""

    def __init__(self, backend: str, task: str, supported: Sequence[str]) -> None:
        self.backend, self.task, self.supported = backend, task, list(supported)
        super().__init__(
            f"Backend {backend!r} does not do task {task!r}; it supports: {', '.join(self.supported)}. "
            f"Use `visionkit.list_backends(task={task!r})` to find one that does."
        )


class InvalidOptionError(VisionKitError, ValueError):
    """An option passed to a backend is unknown or has an invalid value.

    Attributes:
        key: the offending option (``"threads"``, ``"device"`` ...) when one is known, else ``None``;
            callers branch on it instead of parsing the message.
        valid: the accepted option names (for an unknown option) or values, sorted; empty when not listed.
    """

    def __init__(self, message: str, *, key: str | None = None, valid: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.key = key
        self.valid: list[str] = sorted(valid)


class UnknownOptionError(InvalidOptionError):
    """An option name the backend (or runtime) does not know; ``.key`` is the name, ``.valid`` the known ones."""


def unknown_option_error(backend: str, key: str, valid: Sequence[str]) -> UnknownOptionError:
    """Build the error for an option name a backend does not know (``.key`` is the name, ``.valid`` the known ones)."""
    listing = ", ".join(sorted(valid)) or "(this backend takes no options)"
    return UnknownOptionError(
        f"Unknown option {key!r} for backend {backend!r}.{_did_you_mean(key, valid)} Valid options: {listing}.",
        key=key,
        valid=valid,
    )


class LimitExceededError(InvalidOptionError):
    """A request asks for more work than a documented limit allows.

    Attributes:
        limit: the name of the limit (an option name such as ``"max_imgsz"``, or ``"body_bytes"``).
        value: what the request asked for.
        maximum: the limit in force.
    """

    def __init__(self, limit: str, value: float, maximum: float, hint: str | None = None) -> None:
        msg = f"{limit}={value!r} exceeds the limit of {maximum!r}."
        super().__init__(msg + (f" {hint}" if hint else ""), key=limit)
        self.limit, self.value, self.maximum = limit, value, maximum

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled across processes (Ray, multiprocessing): rebuild from the fields, not the message
        return (_rebuild_limit, (self.limit, self.value, self.maximum, str(self)))


def _rebuild_limit(limit: str, value: float, maximum: float, message: str) -> LimitExceededError:
    err = LimitExceededError.__new__(LimitExceededError)
    InvalidOptionError.__init__(err, message, key=limit)
    err.limit, err.value, err.maximum = limit, value, maximum
    return err


class ExportNotSupportedError(VisionKitError):
    """The backend cannot hand its network to another runtime (no ``export_spec()``, or not at this precision).

    Also importable from :mod:`visionkit.export`, where it was first defined.
    """


class DatasetError(VisionKitError):
    """An evaluation dataset cannot be used: a missing folder, an unreadable annotation file, masks that
    do not match their images, labels outside the model's classes."""


class WeightsNotFoundError(VisionKitError, FileNotFoundError):
    """Weights were not found in any of the places visionkit looked."""

    def __init__(self, weights: str, looked: Sequence[str], hint: str | None = None) -> None:
        self.weights, self.looked = weights, list(looked)
        places = "\n".join(f"  - {p}" for p in self.looked)
        msg = (
            f"Weights {weights!r} not found. Looked in:\n{places}\n"
            f"Put the file in a directory listed in VISIONKIT_WEIGHTS (e.g. `export VISIONKIT_WEIGHTS=~/weights`), "
            f"pass an explicit path with weights='/path/to/{weights}', or go online so it can be downloaded."
        )
        if hint:
            msg += f" {hint}"
        super().__init__(msg)


class InvalidImageError(VisionKitError, ValueError):
    """An input is not an image visionkit can use; the message says what was received."""


class InvalidPromptError(VisionKitError, ValueError):
    """A segmentation prompt (points, labels, boxes, mask) is malformed or out of bounds."""


class UnsafeWeightsError(VisionKitError):
    """A weights file can run code when loaded (a pickle, an eval-able config) and was not trusted.

    The message names the explicit opt-in (``trust_pickle=True`` / ``--trust-pickle``) for files you trust.
    """


class BackendError(VisionKitError, RuntimeError):
    """The underlying model library failed; the original exception is chained as ``__cause__``."""
