"""Limits on the work one call may ask for: declared as options, enforced with one error.

A limit (``max_imgsz``, ``max_prompts``, ``max_classes`` ...) is an options field made with
:func:`limit_option`; :func:`check_limit` raises :class:`~visionkit.errors.LimitExceededError` naming
it. ``visionkit.backend`` re-exports both: this module sits below it so that prompt parsing and
backends can share them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from visionkit.errors import LimitExceededError

__all__ = ["LIMIT_MARK", "check_limit", "limit_fields", "limit_option"]

#: Marks an options field as a limit (read by :meth:`Backend.with_options` and the docs).
LIMIT_MARK = "visionkit_limit"


def limit_option(default: int | None, description: str, *, minimum: int = 1) -> Any:
    """Declare an options field that is an upper bound on work per call (``max_imgsz``, ``max_prompts`` ...).

    A limit is set when the backend is loaded (``load(name, max_images=64)``); a per-call override may
    lower it but never raise it, so a server that forwards client options cannot be talked out of its
    limits. ``None`` means unlimited. Enforce it with :func:`check_limit`.

    Example::

        class MyOptions(visionkit.BackendOptions):
            max_imgsz: int | None = visionkit.limit_option(2048, "Largest accepted imgsz.")
    """
    return Field(default, ge=minimum, description=description, json_schema_extra={LIMIT_MARK: True})


def limit_fields(model: type[BaseModel]) -> list[str]:
    """Names of the fields of ``model`` declared with :func:`limit_option`."""
    return [
        name
        for name, f in model.model_fields.items()
        if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get(LIMIT_MARK)
    ]


def check_limit(limit: str, value: float, maximum: float | None, *, what: str | None = None) -> None:
    """Raise :class:`~visionkit.errors.LimitExceededError` when ``value`` exceeds ``maximum``.

    Args:
        limit: the option that holds the limit, e.g. ``"max_imgsz"`` (named in the error and its hint).
        value: what the request asks for (e.g. the ``imgsz`` requested, the number of prompts).
        maximum: the limit in force; ``None`` means unlimited.
        what: what ``value`` measures, for the message (e.g. ``"imgsz"``, ``"points in one call"``).
    """
    if maximum is None or value <= maximum:
        return
    asked = f"Requested {what}: {value!r}. " if what else ""
    hint = (
        f"{asked}Send less, or load the backend with a higher limit: load(..., {limit}=N) (None: unlimited)."
    )
    raise LimitExceededError(limit, value, maximum, hint)
