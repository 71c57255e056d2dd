"""An HTTP API over loaded backends (FastAPI + uvicorn): ``visionkit serve yolo sam --port 8000``.

Endpoints::

    POST /v1/{task}/{backend}   task: detect, classify, segment_semantic, segment_instances, segment_prompt
    GET  /v1/backends           what is served, with tasks and load state
    GET  /healthz               the process answers (liveness)
    GET  /readyz                every backend is loaded and there is room for work (readiness; 503 otherwise)
    GET  /docs, /openapi.json   interactive docs and the OpenAPI schema

A prediction request carries the image as a multipart upload (field ``image``), as base64 in a JSON
body (``{"image": "<base64>", ...}``) or as the raw body with an ``image/*`` content type. Options
(``{"conf": 0.5}``) and, for ``segment_prompt``, ``points`` / ``labels`` / ``boxes`` /
``multimask_output`` travel in the JSON body or as JSON-encoded form fields. The answer is the
visionkit result as JSON: ``{"backend", "task", "type", "result": Result.to_dict(), "timing_ms"}``.

Protection, all configurable in :class:`ServeConfig`:

- each backend is loaded once and shared; at most ``workers`` inferences run at once (a thread pool);
  a backend runs ``per_backend`` calls at a time only if it declares ``thread_safe = True``, else one;
- a request counts as work only once its body has been read, so slow or stalled uploads never take a
  worker or a queue place; at most ``queue_size`` read requests wait, beyond that ``503`` + ``Retry-After``;
- request heads must arrive within ``header_timeout_s`` and bodies within ``body_timeout_s`` (``408``
  and the connection is closed); a client that stops reading its answer for ``send_timeout_s`` is
  disconnected; at most ``max_connections`` connections are served (``503`` beyond, probes excepted);
- request bodies over ``max_body_bytes`` get ``413`` (checked on ``Content-Length`` and while reading);
- images over ``max_pixels`` get ``413`` from the header alone, before any pixel is decoded, so a
  decompression bomb (a small file claiming a huge size) costs nothing;
- more than ``max_prompts`` points + boxes, a backend limit (:class:`~visionkit.errors.LimitExceededError`)
  and answers over ``max_response_bytes`` get ``413`` naming the limit;
- every error is JSON ``{"error": "<kind>", "detail": "<one sentence>"}`` (plus ``limit`` and ``maximum``
  for a limit) with the status from one table (:data:`_STATUS_BY_ERROR`); ``500`` is kept for server bugs
  and logged with its traceback.

The header, send and connection limits live in uvicorn's protocol, so they hold when the app runs
through :func:`run`, :class:`ServerThread` or ``visionkit serve`` (not under a bare ``uvicorn app``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import math
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from visionkit._tools import version
from visionkit.errors import (
    BackendUnavailableError,
    InvalidImageError,
    InvalidOptionError,
    InvalidPromptError,
    LimitExceededError,
    TaskNotSupportedError,
    UnknownBackendError,
    UnknownOptionError,
    VisionKitError,
)
from visionkit.images import load_image
from visionkit.protocols import Task

__all__ = [
    "ErrorBody",
    "PredictRequest",
    "PredictResponse",
    "ServeConfig",
    "ServerThread",
    "create_app",
    "run",
]

logger = logging.getLogger("visionkit.serve")

#: Paths answered even when ``max_connections`` is reached: probes must tell the truth about saturation.
_PROBES = ("/healthz", "/readyz")


@dataclass(frozen=True)
class ServeConfig:
    """Limits of the server (``docs/serving.md`` has the table with the CLI flags).

    Attributes:
        workers: inferences running at once, across backends (threads).
        per_backend: inferences running at once on one backend that declares ``thread_safe = True``;
            other backends run one call at a time.
        queue_size: requests (bodies read) allowed to wait for a worker; more get 503 with ``Retry-After``.
        max_body_bytes: largest request body accepted (413 above).
        max_pixels: largest ``width * height`` accepted (413 above), checked before decoding.
        retry_after_s: the ``Retry-After`` header sent with 503.
        max_connections: open connections served at once; more get 503 (``/healthz``, ``/readyz`` excepted).
        header_timeout_s: seconds a connection may take to send a complete request head (then closed).
        body_timeout_s: seconds a request body may take to arrive in full (408 and closed after).
        send_timeout_s: seconds a client may leave its answer unread before it is disconnected.
        max_response_bytes: largest JSON answer; a larger result gets 413 naming ``max_response_bytes``.
        max_prompts: most points + boxes in one ``segment_prompt`` request (413 above).
    """

    workers: int = 2
    per_backend: int = 1
    queue_size: int = 16
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    retry_after_s: int = 1
    max_connections: int = 64
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    send_timeout_s: float = 60.0
    max_response_bytes: int = 16 * 1024 * 1024
    max_prompts: int = 256

    def __post_init__(self) -> None:
        for name in (
            "workers",
            "per_backend",
            "max_body_bytes",
            "max_pixels",
            "retry_after_s",
            "max_connections",
            "max_response_bytes",
            "max_prompts",
        ):
            if getattr(self, name) < 1:
                raise InvalidOptionError(
                    f"ServeConfig.{name} must be at least 1, but got {getattr(self, name)!r}."
                )
        if self.queue_size < 0:
            raise InvalidOptionError(f"ServeConfig.queue_size must be >= 0, but got {self.queue_size!r}.")
        for name in ("header_timeout_s", "body_timeout_s", "send_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InvalidOptionError(
                    f"ServeConfig.{name} must be a positive number of seconds, but got {value!r}."
                )


# -- wire models (also the OpenAPI schema) --------------------------------------------------------
class PredictRequest(BaseModel):
    """JSON body of a prediction request."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="The encoded image file (JPEG, PNG ...) as base64.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Per-call backend options, e.g. {'conf': 0.5}."
    )
    # Exact shapes and finite numbers here, so a ragged list or a NaN is a 422, not a backend crash.
    points: list[tuple[FiniteFloat, FiniteFloat]] | None = Field(
        None, description="segment_prompt: [[x, y], ...] in pixels."
    )
    labels: list[int] | None = Field(
        None, description="segment_prompt: 1 foreground / 0 background per point."
    )
    boxes: list[tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat]] | None = Field(
        None, description="segment_prompt: [[x1, y1, x2, y2], ...]."
    )
    multimask_output: bool | None = Field(None, description="segment_prompt: three ranked masks per prompt.")


class PredictResponse(BaseModel):
    """A prediction: the visionkit result as JSON (``Result.to_dict()``)."""

    backend: str
    task: str
    type: str = Field(
        description="Result class: Detections, InstanceMasks, Classifications, SemanticMask, PromptMasks."
    )
    result: dict[str, Any]
    timing_ms: dict[str, float]


class ErrorBody(BaseModel):
    """Every error response."""

    error: str = Field(description="Kind of error, e.g. InvalidImageError, PayloadTooLarge, Busy.")
    detail: str = Field(description="One sentence: what was wrong and what is expected.")
    limit: str | None = Field(
        None, description="For a limit (413): its name, e.g. max_imgsz, max_body_bytes."
    )
    maximum: float | None = Field(None, description="For a limit (413): the value in force.")


_PROMPT_FIELDS = ("points", "labels", "boxes", "multimask_output")


class _HTTPError(Exception):
    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers, self.extra = dict(headers or {}), dict(extra or {})


def _error_response(
    status: int,
    error: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body = {"error": error, "detail": detail, **(extra or {})}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _limit_error(
    status: int, error: str, detail: str, limit: str, maximum: float, headers: Mapping[str, str] | None = None
) -> _HTTPError:
    return _HTTPError(status, error, detail, headers, {"limit": limit, "maximum": maximum})


# -- request guard (pure ASGI: body size and time, connection cap) ---------------------------------
class _BodyRefused(Exception):
    """The request body broke a limit while it was being read."""


class _BodyTooLarge(_BodyRefused):
    pass


class _BodyTimeout(_BodyRefused):
    pass


def _too_large(size: int, limit: int) -> str:
    return f"Request body of {size} bytes is larger than this server accepts ({limit} bytes)."


class _RequestGuard:
    """Bounds what one request may cost before the app sees it: size and time of its body, and the
    number of connections (counted by :class:`_GuardedH11Protocol`).

    An answer sent before the body was read in full carries ``Connection: close``: the rest of a body
    the server refused is not worth reading, and a stalled client must not keep its socket.
    """

    def __init__(self, app: ASGIApp, state: _State) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cfg = self.state.config
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        body_done = b"transfer-encoding" not in headers and length in (None, b"", b"0")  # nothing to read

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_done:
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*kept, (b"connection", b"close")]}
            await send(message)

        if self.state.connections > cfg.max_connections and scope.get("path") not in _PROBES:
            await _error_response(
                503,
                "TooManyConnections",
                f"This server serves at most {cfg.max_connections} connections at once; retry later.",
                {"Retry-After": str(cfg.retry_after_s), "connection": "close"},
                {"limit": "max_connections", "maximum": cfg.max_connections},
            )(scope, receive, guarded_send)
            return
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _error_response(
                    400, "BadRequest", f"Content-Length {length.decode(errors='replace')!r} is not a number."
                )(scope, receive, guarded_send)
                return
            if declared > cfg.max_body_bytes:
                await _error_response(
                    413,
                    "PayloadTooLarge",
                    _too_large(declared, cfg.max_body_bytes),
                    extra={"limit": "max_body_bytes", "maximum": cfg.max_body_bytes},
                )(scope, receive, guarded_send)
                return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.body_timeout_s
        seen = 0

        def finished_reading() -> None:
            nonlocal body_done
            if not body_done:
                body_done = True
                self.state.reading -= 1

        async def guarded_receive() -> Message:
            nonlocal seen
            if body_done:  # e.g. waiting for a disconnect after the body: not bounded here
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise _BodyTimeout(
                    f"The request body did not arrive within {cfg.body_timeout_s:g} s "
                    f"({seen} bytes received); send it at once, or raise the server's body timeout."
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cfg.max_body_bytes:
                    raise _BodyTooLarge(_too_large(seen, cfg.max_body_bytes))
                if not message.get("more_body", False):
                    finished_reading()
            else:
                finished_reading()
            return message

        if not body_done:
            self.state.reading += 1
        try:
            await self.app(scope, guarded_receive, guarded_send)
        finally:
            finished_reading()


# -- uvicorn protocol: header deadline, slow readers, connection count ----------------------------
def _http_protocol(state: _State) -> type[Any]:
    """uvicorn's h11 protocol with a deadline on request heads and on unread answers, counting
    connections in ``state`` (uvicorn itself bounds neither the head nor the writer's wait)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    cfg = state.config
    timeout_body = json.dumps(
        {
            "error": "RequestTimeout",
            "detail": f"The request head did not arrive within {cfg.header_timeout_s:g} s.",
        }
    ).encode()
    timeout_answer = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        + f"content-length: {len(timeout_body)}\r\n\r\n".encode()
        + timeout_body
    )

    class _GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _send_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            state.connections += 1
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            state.connections -= 1
            for timer in (self._head_timer, self._send_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._send_timer = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm_head_timer()  # bytes of a head, not yet a full one: the clock runs
            elif self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _arm_head_timer(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(cfg.header_timeout_s, self._head_timed_out)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.write(timeout_answer)
                self.transport.close()

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._send_timer is None:
                self._send_timer = self.loop.call_later(cfg.send_timeout_s, self._send_timed_out)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._send_timer is not None:
                self._send_timer.cancel()
                self._send_timer = None

        def _send_timed_out(self) -> None:
            self._send_timer = None
            logger.warning("a client left its answer unread for %g s; disconnected", cfg.send_timeout_s)
            self.transport.abort()  # connection_lost wakes the writer, which then stops

    return _GuardedH11Protocol


# -- one table: exception → HTTP status ------------------------------------------------------------
#: Exception types and the status they answer, most specific first (httpx's ``map_exceptions``).
#: Everything not listed is a server bug (500, logged), except where :func:`_http_error` can blame
#: the request's own options (422, or 413 for memory).
_STATUS_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (_BodyTooLarge, 413),
    (_BodyTimeout, 408),
    (LimitExceededError, 413),
    (UnknownBackendError, 404),
    (TaskNotSupportedError, 404),
    (UnknownOptionError, 422),
    (InvalidOptionError, 422),
    (InvalidPromptError, 422),
    (InvalidImageError, 422),
    (ValidationError, 422),  # pydantic: a value a result or options model refused
    (ClientDisconnect, 400),
    (BackendUnavailableError, 503),
    (MemoryError, 503),  # the server ran out of memory: overloaded, retry later
    (VisionKitError, 500),  # BackendError: the library underneath failed
)

#: The error kind of the few entries not named after their exception.
_KIND: dict[type[BaseException], str] = {
    _BodyTooLarge: "PayloadTooLarge",
    _BodyTimeout: "RequestTimeout",
    ClientDisconnect: "ClientDisconnected",
    MemoryError: "Busy",
    ValidationError: "ValidationError",
    # a finer error class added later keeps the name clients already match on
    UnknownOptionError: "InvalidOptionError",
}


def _is_out_of_memory(exc: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError is a RuntimeError; matched by name so torch is never imported here
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def _http_error(exc: BaseException, cfg: ServeConfig, *, blame: str = "", where: str = "") -> _HTTPError:
    """The answer for ``exc`` from :data:`_STATUS_BY_ERROR`; a 500 is logged with its traceback.

    Args:
        exc: what was raised while answering a request.
        cfg: the server's limits (for ``Retry-After``).
        blame: a description of the per-call options or prompts the request carried, if any. A failure
            of the backend outside visionkit's own errors is then answered as that input's fault (422, or
            413 when it ran out of memory): the server's own configuration is the one that works. Such a
            failure is still logged (a warning with the traceback), as it may hide a backend bug.
        where: the route, for the log line.
    """
    if isinstance(exc, _HTTPError):
        return exc
    known = next(((kind, status) for kind, status in _STATUS_BY_ERROR if isinstance(exc, kind)), None)
    oom = _is_out_of_memory(exc)
    if blame and (oom or known is None):
        logger.warning("%s failed on the request's %s", where or "a backend", blame, exc_info=exc)
        if oom:
            return _HTTPError(
                413,
                "LimitExceededError",
                f"The request's {blame} need more memory than this server has ({type(exc).__name__}); "
                "ask for less work (a smaller size, fewer prompts).",
            )
        return _HTTPError(
            422,
            "InvalidOptionError",
            f"The backend failed on the request's {blame} ({type(exc).__name__}: {exc}); check their values.",
        )
    if oom:
        known = (MemoryError, 503)
    if known is None:
        logger.error("%s failed", where or "a request", exc_info=exc)
        return _HTTPError(500, "BackendError", f"Backend failed ({type(exc).__name__}: {exc}).")
    kind, status = known
    if status >= 500:
        logger.error("%s failed", where or "a request", exc_info=exc)
    error = _KIND.get(kind, type(exc).__name__)
    if isinstance(exc, ValidationError):
        return _HTTPError(status, error, _validation_text(exc.errors()))
    if isinstance(exc, LimitExceededError):
        return _HTTPError(status, error, str(exc), extra={"limit": exc.limit, "maximum": exc.maximum})
    headers = {"Retry-After": str(cfg.retry_after_s)} if status == 503 else None
    extra = {"limit": "max_body_bytes", "maximum": cfg.max_body_bytes} if kind is _BodyTooLarge else None
    detail = str(exc) or type(exc).__name__
    if oom:
        detail = f"The server ran out of memory ({type(exc).__name__}); retry later."
    return _HTTPError(status, error, detail, headers, extra)


# -- decoding ----------------------------------------------------------------------------------
def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an uploaded image, refusing oversize ones from the header before decoding pixels."""
    if not data:
        raise _HTTPError(422, "InvalidImageError", "The image is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _limit_error(
            413, "ImageTooLarge", f"The image is too large to decode safely: {exc}", "max_pixels", max_pixels
        ) from exc
    except Exception as exc:  # any Pillow plugin may fail its own way (e.g. a missing optional decoder)
        raise _HTTPError(
            422,
            "InvalidImageError",
            f"The upload ({len(data)} bytes) is not an image format Pillow can read.",
        ) from exc
    w, h = img.size
    if w * h > max_pixels:
        raise _limit_error(
            413,
            "ImageTooLarge",
            f"The image is {w}x{h} = {w * h} pixels; this server accepts at most {max_pixels} pixels.",
            "max_pixels",
            max_pixels,
        )
    try:
        img.load()  # truncated or corrupt pixel data fails here
    except Exception as exc:
        raise _HTTPError(
            422,
            "InvalidImageError",
            f"The {img.format or 'image'} data is corrupt or truncated ({type(exc).__name__}: {exc}).",
        ) from exc
    try:
        return load_image(img)
    except InvalidImageError as exc:
        raise _HTTPError(422, "InvalidImageError", str(exc)) from exc


def _json_field(raw: Any, name: str) -> Any:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise _HTTPError(422, "ValidationError", f"Form field {name!r} must be text (JSON), not a file.")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _HTTPError(
            422, "ValidationError", f"Form field {name!r} must be JSON, but got {raw[:80]!r} ({exc.msg})."
        ) from exc


def _check_finite(value: Any, where: str) -> None:
    """Refuse NaN and infinities (Python's JSON reads ``NaN``/``Infinity``) before a backend sees them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _HTTPError(422, "InvalidOptionError", f"Option {where} is {value!r}; numbers must be finite.")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}" if where else repr(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")


# -- the application ------------------------------------------------------------------------------
@dataclass
class _Slot:
    """How calls to one backend object are admitted: ``limit`` at once; ``lock`` when not thread-safe."""

    gate: asyncio.Semaphore
    limit: int
    lock: threading.Lock | None


@dataclass
class _State:
    config: ServeConfig
    backends: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    loading: set[str] = field(default_factory=set)
    aliases: dict[str, str] = field(default_factory=dict)
    inflight: int = 0  # requests whose body is read: waiting for or holding a worker
    reading: int = 0  # requests whose body is still arriving
    connections: int = 0  # open connections (counted by the uvicorn protocol of run/ServerThread)
    served: int = 0
    pool: ThreadPoolExecutor | None = None
    gate: asyncio.Semaphore | None = None
    slots: dict[int, _Slot] = field(default_factory=dict)

    def ready(self) -> bool:
        return not self.loading and not self.failed

    def capacity(self) -> int:
        return self.config.workers + self.config.queue_size

    def saturated(self) -> bool:
        return self.inflight >= self.capacity() or self.connections > self.config.max_connections

    def slot(self, model: Any) -> _Slot:
        """Admission for ``model``, keyed by object so aliases of one backend share it."""
        found = self.slots.get(id(model))
        if found is None:
            # Only a backend that says so is called from several threads (visionkit.Backend does).
            safe = getattr(model, "thread_safe", False) is True
            limit = self.config.per_backend if safe else 1
            found = self.slots[id(model)] = _Slot(
                asyncio.Semaphore(limit), limit, None if safe else threading.Lock()
            )
        return found


def create_app(
    backends: Mapping[str, Any] | None = None,
    *,
    names: Sequence[str] = (),
    registry: Any = None,
    load_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    config: ServeConfig | None = None,
    load_in_background: bool = False,
) -> FastAPI:
    """Build the FastAPI app serving ``backends`` (already loaded) and ``names`` (loaded at startup).

    Args:
        backends: name → loaded backend, served as they are.
        names: backends to load with :func:`visionkit.load` when the server starts.
        registry: look ``names`` up here instead of the installed plugins (tests pass fakes).
        load_kwargs: name → keyword arguments for ``visionkit.load`` (``weights``, ``device``, options).
        config: limits; see :class:`ServeConfig`.
        load_in_background: start answering (``/healthz`` 200, ``/readyz`` 503) while ``names`` load,
            instead of loading before the server accepts connections.
    """
    cfg = config or ServeConfig()
    state = _State(config=cfg, backends=dict(backends or {}))
    kwargs = {k: dict(v) for k, v in (load_kwargs or {}).items()}

    def load_all() -> None:
        import visionkit

        for name in list(state.loading):
            try:
                backend = visionkit.load(name, registry=registry, **kwargs.get(name, {}))
            except Exception as exc:
                state.failed[name] = f"{type(exc).__name__}: {exc}"
            else:
                state.backends[name] = backend
                canonical = getattr(getattr(backend, "spec", None), "name", None)
                if canonical and canonical != name:
                    state.aliases[canonical] = name
            finally:
                state.loading.discard(name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        state.pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="visionkit-serve")
        state.gate = asyncio.Semaphore(cfg.workers)
        state.slots.clear()  # semaphores belong to this event loop
        state.loading.update(n for n in names if n not in state.backends)
        if state.loading:
            if load_in_background:
                threading.Thread(target=load_all, name="visionkit-load", daemon=True).start()
            else:
                await asyncio.get_running_loop().run_in_executor(None, load_all)
        yield
        state.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="visionkit",
        description="Computer-vision models behind one typed API. Results are visionkit result JSON.",
        version=version(),
        lifespan=lifespan,
    )
    app.state.visionkit = state

    @app.exception_handler(_HTTPError)
    async def _on_http_error(request: Request, exc: _HTTPError) -> JSONResponse:
        return _error_response(exc.status, exc.error, exc.detail, exc.headers, exc.extra)

    @app.exception_handler(_BodyRefused)
    async def _on_body_refused(request: Request, exc: _BodyRefused) -> JSONResponse:
        err = _http_error(exc, cfg)
        return _error_response(err.status, err.error, err.detail, err.headers, err.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _on_starlette(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "NotFound", 405: "MethodNotAllowed", 400: "BadRequest"}.get(exc.status_code, "HTTPError")
        return _error_response(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(422, "ValidationError", _validation_text(exc.errors()))

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
        return _error_response(500, "InternalServerError", f"{type(exc).__name__}: {exc}")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/healthz", summary="Liveness: the server answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: every backend is loaded and there is room for more work",
        responses={503: {"model": ErrorBody}},
    )
    async def readyz() -> JSONResponse:
        if not state.ready():
            status = "failed" if state.failed else "loading"
        else:
            status = "saturated" if state.saturated() else "ready"
        body = {
            "status": status,
            "backends": sorted(state.backends),
            "loading": sorted(state.loading),
            "failed": dict(state.failed),
            "inflight": state.inflight,
            "capacity": state.capacity(),
            "connections": state.connections,
            "max_connections": cfg.max_connections,
        }
        headers = {"Retry-After": str(cfg.retry_after_s)} if status == "saturated" else None
        return JSONResponse(body, status_code=200 if status == "ready" else 503, headers=headers)

    @app.get("/v1/backends", summary="Backends served, their tasks and state")
    async def list_served() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, backend in sorted(state.backends.items()):
            out[name] = {
                "state": "ready",
                "tasks": [Task.parse(t).value for t in getattr(backend, "tasks", ())],
            }
        for name in state.loading:
            out[name] = {"state": "loading", "tasks": []}
        for name, err in state.failed.items():
            out[name] = {"state": "failed", "error": err, "tasks": []}
        return {
            "backends": out,
            "inflight": state.inflight,
            "served": state.served,
            "reading": state.reading,
            "connections": state.connections,
        }

    for task in Task:
        _add_predict_route(app, state, task)

    @app.post("/v1/{task}/{backend}", include_in_schema=False)
    async def unknown_task(task: str, backend: str) -> JSONResponse:
        known = ", ".join(t.value for t in Task)
        return _error_response(404, "NotFound", f"Unknown task {task!r} in the URL; tasks: {known}.")

    app.add_middleware(_RequestGuard, state=state)
    return app


def _validation_text(errors: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg')}")
    return "Invalid request: " + "; ".join(parts) + "."


def _request_body_doc(task: Task) -> dict[str, Any]:
    prompt = task is Task.SEGMENT_PROMPT
    form: dict[str, Any] = {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {"type": "string", "format": "binary", "description": "The image file."},
            "options": {
                "type": "string",
                "description": 'JSON object of backend options, e.g. {"conf": 0.5}.',
            },
        },
    }
    if prompt:
        for name in _PROMPT_FIELDS:
            form["properties"][name] = {
                "type": "string",
                "description": f"JSON: {PredictRequest.model_fields[name].description}",
            }
    schema = PredictRequest.model_json_schema()
    if not prompt:
        for name in _PROMPT_FIELDS:
            schema["properties"].pop(name, None)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": form},
                "application/json": {"schema": schema},
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


_DOC = {
    Task.DETECT: "Boxes, classes and confidences (`Detections`).",
    Task.CLASSIFY: "Top-k classes (`Classifications`).",
    Task.SEGMENT_SEMANTIC: "A class per pixel (`SemanticMask`).",
    Task.SEGMENT_INSTANCES: "Boxes with masks (`InstanceMasks`).",
    Task.SEGMENT_PROMPT: "Masks for points/boxes given in the body (`PromptMasks`); SAM-style backends.",
}


def _busy(state: _State) -> _HTTPError:
    cfg = state.config
    return _HTTPError(
        503,
        "Busy",
        f"All {cfg.workers} workers are busy and {cfg.queue_size} requests are waiting; retry later.",
        {"Retry-After": str(cfg.retry_after_s)},
    )


def _add_predict_route(app: FastAPI, state: _State, task: Task) -> None:
    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": text}
        for code, text in (
            (400, "Malformed request body"),
            (404, "Unknown backend, or the backend does not do this task"),
            (408, "The request head or body did not arrive in time"),
            (413, "A limit: body, image, prompts, response size, or a backend limit (named in `limit`)"),
            (415, "Unsupported content type"),
            (422, "Not an image, bad options or prompt"),
            (500, "A server or backend bug (logged)"),
            (503, "Busy (see Retry-After), too many connections, or still loading"),
        )
    }

    async def predict(backend: str, request: Request) -> Response:
        name = state.aliases.get(backend, backend)
        model = _lookup(state, name, task)
        cfg = state.config
        if state.inflight >= state.capacity():
            raise _busy(state)  # refused before reading a body the server has no room for
        try:
            image_bytes, options, prompt = await _parse(request, task, cfg)
        except (_HTTPError, _BodyRefused):
            raise
        except Exception as exc:
            raise _http_error(exc, cfg, where=f"{task.value}/{name}") from exc
        # Work is counted only now: a client still sending (or stalling) its body holds no place.
        if state.inflight >= state.capacity():
            raise _busy(state)
        state.inflight += 1  # one event loop: no lock needed
        blame = _blame(options, prompt)
        try:
            slot, gate = state.slot(model), state.gate
            assert gate is not None and state.pool is not None
            async with slot.gate, gate:
                loop = asyncio.get_running_loop()
                body = await loop.run_in_executor(
                    state.pool, _answer, model, name, task, image_bytes, cfg, options, prompt, slot
                )
            state.served += 1
        except Exception as exc:  # answered here: Starlette's last-resort handler would drop the connection
            raise _http_error(exc, cfg, blame=blame, where=f"{task.value}/{name}") from exc
        finally:
            state.inflight -= 1
        return Response(body, media_type="application/json")

    app.add_api_route(
        f"/v1/{task.value}/{{backend}}",
        predict,
        methods=["POST"],
        name=f"predict_{task.value}",
        summary=f"{task.value}: {_DOC[task]}",
        response_model=PredictResponse,
        responses=responses,
        openapi_extra=_request_body_doc(task),
        tags=[task.value],
    )


def _blame(options: Mapping[str, Any], prompt: Mapping[str, Any]) -> str:
    if options:
        return f"options {dict(options)!r}"[:200]
    if prompt:
        return f"prompts ({', '.join(sorted(prompt))})"
    return ""


def _lookup(state: _State, name: str, task: Task) -> Any:
    if name in state.loading:
        raise _HTTPError(
            503, "Loading", f"Backend {name!r} is still loading; retry shortly.", {"Retry-After": "2"}
        )
    if name in state.failed:
        raise _HTTPError(500, "BackendUnavailable", f"Backend {name!r} failed to load: {state.failed[name]}")
    model = state.backends.get(name)
    if model is None:
        err = UnknownBackendError(
            name, list(state.backends), hint="Start the server with it: `visionkit serve NAME ...`."
        )
        raise _HTTPError(404, "UnknownBackendError", str(err))
    tasks = [Task.parse(t) for t in getattr(model, "tasks", ())]
    if task not in tasks or not hasattr(model, task.value):
        err2 = TaskNotSupportedError(name, task.value, [t.value for t in tasks])
        raise _HTTPError(404, "TaskNotSupportedError", str(err2))
    return model


async def _parse(
    request: Request, task: Task, cfg: ServeConfig
) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """``(image bytes, options, prompt)`` from a multipart, JSON or raw-image body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=16)
        except StarletteHTTPException as exc:
            raise _HTTPError(400, "BadRequest", f"Malformed multipart body: {exc.detail}") from exc
        except (_BodyRefused, ClientDisconnect):
            raise
        except Exception as exc:
            raise _HTTPError(
                400, "BadRequest", f"Malformed multipart body ({type(exc).__name__}: {exc})."
            ) from exc
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise _HTTPError(
                422, "ValidationError", "The multipart body needs the image as a file field named 'image'."
            )
        data = await upload.read()
        unknown = sorted(set(form.keys()) - {"image", "options", *_PROMPT_FIELDS})
        if unknown:
            raise _HTTPError(
                422,
                "ValidationError",
                f"Unknown form fields {unknown}; expected image, options, {', '.join(_PROMPT_FIELDS)}.",
            )
        options = _json_field(form.get("options"), "options") or {}
        prompt = {k: _json_field(form.get(k), k) for k in _PROMPT_FIELDS if form.get(k) is not None}
        try:
            parsed = PredictRequest.model_validate({"image": "", "options": options, **prompt})
        except ValidationError as exc:
            raise _HTTPError(422, "ValidationError", _validation_text(exc.errors())) from exc
    elif ctype == "application/json":
        body = await request.body()
        try:
            parsed = PredictRequest.model_validate_json(body)
        except ValidationError as exc:
            raise _HTTPError(422, "ValidationError", _validation_text(exc.errors())) from exc
        try:
            data = base64.b64decode(parsed.image, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _HTTPError(
                422, "ValidationError", f"Field 'image' must be base64-encoded image bytes ({exc})."
            ) from exc
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        data = await request.body()
        parsed = PredictRequest(image="")
    else:
        raise _HTTPError(
            415,
            "UnsupportedMediaType",
            f"Content type {ctype or '(none)'!r} is not accepted; send multipart/form-data (field 'image'), "
            "application/json ({'image': '<base64>'}) or an image/* body.",
        )
    prompt = {k: getattr(parsed, k) for k in _PROMPT_FIELDS if getattr(parsed, k) is not None}
    if task is Task.SEGMENT_PROMPT:
        if parsed.options:
            raise _HTTPError(
                422,
                "ValidationError",
                "segment_prompt takes points, labels, boxes and multimask_output, not options.",
            )
        n = len(prompt.get("points") or ()) + len(prompt.get("boxes") or ())
        if n > cfg.max_prompts:
            raise _limit_error(
                413,
                "LimitExceededError",
                f"max_prompts={n!r} exceeds the limit of {cfg.max_prompts!r}: this server takes at most "
                f"{cfg.max_prompts} points + boxes per request; split them over several requests.",
                "max_prompts",
                cfg.max_prompts,
            )
    elif prompt:
        raise _HTTPError(
            422,
            "ValidationError",
            f"{sorted(prompt)} are prompts for segment_prompt; task {task.value!r} takes none.",
        )
    _check_finite(parsed.options, "")
    return data, dict(parsed.options), prompt


def _min_json_bytes(result: Any) -> int:
    """A lower bound on the size of ``result.to_dict()`` as JSON, from its arrays alone (cheap)."""
    total = 0
    for value in getattr(result, "__dict__", {}).values():
        if isinstance(value, np.ndarray):
            # masks are bit-packed then base64'd (4/3 of size/8); numbers take at least 2 characters ("0,")
            total += value.size // 6 if value.dtype == bool else 2 * value.size
    return total


def _answer(
    model: Any,
    name: str,
    task: Task,
    data: bytes,
    cfg: ServeConfig,
    options: dict[str, Any],
    prompt: dict[str, Any],
    slot: _Slot,
) -> bytes:
    """Runs in a worker thread: decode, call the backend's verb, encode the answer (size-checked)."""
    t0 = time.perf_counter()
    image = decode_image(data, cfg.max_pixels)
    t1 = time.perf_counter()
    with slot.lock or _NO_LOCK:  # a backend not declared thread-safe is called by one thread at a time
        if task is Task.SEGMENT_PROMPT:
            result = model.segment_prompt(image, **prompt)
        else:
            result = getattr(model, task.value)(image, **options)
        # the stage times are this call's only while no other call can overwrite them
        stages = dict(getattr(model, "last_timing", None) or {}) if slot.limit == 1 else {}
    t2 = time.perf_counter()
    floor = _min_json_bytes(result)
    if floor > cfg.max_response_bytes:
        raise _response_too_large(f"at least {floor}", cfg)
    result_json = json.dumps(result.to_dict(), allow_nan=False, separators=(",", ":"))
    if len(result_json) > cfg.max_response_bytes:  # ASCII (ensure_ascii): characters are bytes
        raise _response_too_large(str(len(result_json)), cfg)
    t3 = time.perf_counter()
    timing = {"decode": (t1 - t0) * 1e3, "predict": (t2 - t1) * 1e3, "encode": (t3 - t2) * 1e3}
    timing.update({k: float(v) for k, v in stages.items()})
    head = json.dumps({"backend": name, "task": task.value, "type": type(result).__name__})
    tail = json.dumps(timing, separators=(",", ":"))
    return f'{head[:-1]}, "result": {result_json}, "timing_ms": {tail}}}'.encode()


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()


def _response_too_large(size: str, cfg: ServeConfig) -> _HTTPError:
    return _limit_error(
        413,
        "LimitExceededError",
        f"The answer would be {size} bytes of JSON; this server sends at most {cfg.max_response_bytes} "
        "(max_response_bytes). Ask for less: a higher conf, fewer prompts, or a smaller image.",
        "max_response_bytes",
        cfg.max_response_bytes,
    )


# -- running ------------------------------------------------------------------------------------
def _uvicorn_options(app: FastAPI) -> dict[str, Any]:
    state = getattr(app.state, "visionkit", None)
    if not isinstance(state, _State):
        return {}
    # no WebSocket upgrades: nothing here speaks it, and a switched protocol would escape the count
    return {"http": _http_protocol(state), "ws": "none", "h11_max_incomplete_event_size": 16 * 1024}


def run(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn until interrupted (one process; scale out with more processes)."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        **_uvicorn_options(app),
    )


class ServerThread:
    """Run an app with uvicorn in a background thread (tests, notebooks, load checks)::

        with ServerThread(create_app({"fake": FakeDetector()})) as server:
            httpx.post(f"{server.url}/v1/detect/fake", ...)

    ``port=0`` picks a free port; :attr:`url` says which.
    """

    def __init__(
        self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        import uvicorn

        self.host = host
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host=host, port=port, log_level=log_level, lifespan="on", **_uvicorn_options(app)
            )
        )
        # uvicorn installs signal handlers only in the main thread, so a background thread is fine
        self.thread = threading.Thread(target=self.server.run, name="visionkit-uvicorn", daemon=True)
        self.url = ""

    def start(self, timeout: float = 30.0) -> ServerThread:
        """Start and wait until the server accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start (see its log above)")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        return self

    def stop(self) -> None:
        """Ask the server to exit and wait for it."""
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
