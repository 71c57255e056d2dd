"""An HTTP API over loaded backends (FastAPI + uvicorn): ``visionkit serve yolo sam --port 8000``.

Endpoints::

    POST /v1/{task}/{backend}   task: detect, classify, segment_semantic, segment_instances, segment_prompt
    GET  /v1/backends           what is served, with tasks and load state
    GET  /healthz               the process answers (liveness)
    GET  /readyz                every backend is loaded (readiness; 503 while loading or after a failure)
    GET  /docs, /openapi.json   interactive docs and the OpenAPI schema

A prediction request carries the image as a multipart upload (field ``image``), as base64 in a JSON
body (``{"image": "<base64>", ...}``) or as the raw body with an ``image/*`` content type. Options
(``{"conf": 0.5}``) and, for ``segment_prompt``, ``points`` / ``labels`` / ``boxes`` /
``multimask_output`` travel in the JSON body or as JSON-encoded form fields. The answer is the
visionkit result as JSON: ``{"backend", "task", "type", "result": Result.to_dict(), "timing_ms"}``.

Protection, all configurable in :class:`ServeConfig`:

- each backend is loaded once and shared; at most ``workers`` inferences run at once (a thread pool)
  and each backend runs ``per_backend`` calls at a time (models are not assumed thread-safe);
- at most ``queue_size`` more requests wait; beyond that the answer is ``503`` with ``Retry-After``;
- request bodies over ``max_body_bytes`` get ``413`` (checked on ``Content-Length`` and while reading);
- images over ``max_pixels`` get ``413`` from the header alone, before any pixel is decoded, so a
  decompression bomb (a small file claiming a huge size) costs nothing;
- every error is JSON ``{"error": "<kind>", "detail": "<one sentence>"}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
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
from fastapi.responses import JSONResponse, RedirectResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from visionkit.errors import (
    InvalidImageError,
    InvalidOptionError,
    InvalidPromptError,
    TaskNotSupportedError,
    UnknownBackendError,
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


@dataclass(frozen=True)
class ServeConfig:
    """Limits of the server.

    Attributes:
        workers: inferences running at once, across backends (threads).
        per_backend: inferences running at once on one backend.
        queue_size: requests allowed to wait for a worker; more get 503 with ``Retry-After``.
        max_body_bytes: largest request body accepted (413 above).
        max_pixels: largest ``width * height`` accepted (413 above), checked before decoding.
        retry_after_s: the ``Retry-After`` header sent with 503.
    """

    workers: int = 2
    per_backend: int = 1
    queue_size: int = 16
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for name in ("workers", "per_backend", "max_body_bytes", "max_pixels", "retry_after_s"):
            if getattr(self, name) < 1:
                raise InvalidOptionError(
                    f"ServeConfig.{name} must be at least 1, but got {getattr(self, name)!r}."
                )
        if self.queue_size < 0:
            raise InvalidOptionError(f"ServeConfig.queue_size must be >= 0, but got {self.queue_size!r}.")


# -- wire models (also the OpenAPI schema) --------------------------------------------------------
class PredictRequest(BaseModel):
    """JSON body of a prediction request."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="The encoded image file (JPEG, PNG ...) as base64.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Per-call backend options, e.g. {'conf': 0.5}."
    )
    points: list[list[float]] | None = Field(None, description="segment_prompt: [[x, y], ...] in pixels.")
    labels: list[int] | None = Field(
        None, description="segment_prompt: 1 foreground / 0 background per point."
    )
    boxes: list[list[float]] | None = Field(None, description="segment_prompt: [[x1, y1, x2, y2], ...].")
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


_PROMPT_FIELDS = ("points", "labels", "boxes", "multimask_output")


class _HTTPError(Exception):
    def __init__(
        self, status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, dict(headers or {})


def _error_response(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=dict(headers or {}))


# -- request body limit (pure ASGI, so it also covers chunked uploads) ------------------------------
class _BodyTooLarge(Exception):
    pass


class _BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _error_response(
                    400, "BadRequest", f"Content-Length {length.decode(errors='replace')!r} is not a number."
                )(scope, receive, send)
                return
            if declared > self.max_bytes:
                await _error_response(413, "PayloadTooLarge", _too_large(declared, self.max_bytes))(
                    scope, receive, send
                )
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge(_too_large(seen, self.max_bytes))
            return message

        await self.app(scope, limited, send)


def _too_large(size: int, limit: int) -> str:
    return f"Request body of {size} bytes is larger than this server accepts ({limit} bytes)."


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
        raise _HTTPError(413, "ImageTooLarge", f"The image is too large to decode safely: {exc}") from exc
    except Exception as exc:  # any Pillow plugin may fail its own way (e.g. a missing optional decoder)
        raise _HTTPError(
            422,
            "InvalidImageError",
            f"The upload ({len(data)} bytes) is not an image format Pillow can read.",
        ) from exc
    w, h = img.size
    if w * h > max_pixels:
        raise _HTTPError(
            413,
            "ImageTooLarge",
            f"The image is {w}x{h} = {w * h} pixels; this server accepts at most {max_pixels} pixels.",
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


# -- the application ------------------------------------------------------------------------------
@dataclass
class _State:
    config: ServeConfig
    backends: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    loading: set[str] = field(default_factory=set)
    aliases: dict[str, str] = field(default_factory=dict)
    inflight: int = 0
    served: int = 0
    pool: ThreadPoolExecutor | None = None
    gate: asyncio.Semaphore | None = None
    per_backend: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    def ready(self) -> bool:
        return not self.loading and not self.failed


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
        version=_version(),
        lifespan=lifespan,
    )
    app.state.visionkit = state

    @app.exception_handler(_HTTPError)
    async def _on_http_error(request: Request, exc: _HTTPError) -> JSONResponse:
        return _error_response(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(_BodyTooLarge)
    async def _on_too_large(request: Request, exc: _BodyTooLarge) -> JSONResponse:
        return _error_response(413, "PayloadTooLarge", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _on_starlette(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "NotFound", 405: "MethodNotAllowed", 400: "BadRequest"}.get(exc.status_code, "HTTPError")
        return _error_response(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(422, "ValidationError", _validation_text(exc.errors()))

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
        return _error_response(500, "InternalServerError", f"{type(exc).__name__}: {exc}")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/healthz", summary="Liveness: the server answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: every backend is loaded", responses={503: {"model": ErrorBody}})
    async def readyz() -> JSONResponse:
        body = {
            "status": "ready" if state.ready() else ("failed" if state.failed else "loading"),
            "backends": sorted(state.backends),
            "loading": sorted(state.loading),
            "failed": dict(state.failed),
        }
        return JSONResponse(body, status_code=200 if state.ready() else 503)

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
        return {"backends": out, "inflight": state.inflight, "served": state.served}

    for task in Task:
        _add_predict_route(app, state, task)

    @app.post("/v1/{task}/{backend}", include_in_schema=False)
    async def unknown_task(task: str, backend: str) -> JSONResponse:
        known = ", ".join(t.value for t in Task)
        return _error_response(404, "NotFound", f"Unknown task {task!r} in the URL; tasks: {known}.")

    app.add_middleware(_BodyLimit, max_bytes=cfg.max_body_bytes)
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


def _add_predict_route(app: FastAPI, state: _State, task: Task) -> None:
    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": text}
        for code, text in (
            (400, "Malformed request body"),
            (404, "Unknown backend, or the backend does not do this task"),
            (413, "Body or image too large"),
            (415, "Unsupported content type"),
            (422, "Not an image, bad options or prompt"),
            (500, "The backend failed"),
            (503, "Busy (see Retry-After) or still loading"),
        )
    }

    async def predict(backend: str, request: Request) -> JSONResponse:
        name = state.aliases.get(backend, backend)
        model = _lookup(state, name, task)
        cfg = state.config
        if state.inflight >= cfg.workers + cfg.queue_size:
            raise _HTTPError(
                503,
                "Busy",
                f"All {cfg.workers} workers are busy and {cfg.queue_size} requests are waiting; retry later.",
                {"Retry-After": str(cfg.retry_after_s)},
            )
        state.inflight += 1  # one event loop: no lock needed
        try:
            image_bytes, options, prompt = await _parse(request, task)
            gate, per = state.gate, state.per_backend.setdefault(name, asyncio.Semaphore(cfg.per_backend))
            assert gate is not None and state.pool is not None
            async with per, gate:
                loop = asyncio.get_running_loop()
                result, timing = await loop.run_in_executor(
                    state.pool, _infer, model, task, image_bytes, cfg.max_pixels, options, prompt
                )
            state.served += 1
        except (_HTTPError, _BodyTooLarge):
            raise
        except Exception as exc:  # answered here: Starlette's last-resort handler would drop the connection
            raise _HTTPError(500, "InternalServerError", f"{type(exc).__name__}: {exc}") from exc
        finally:
            state.inflight -= 1
        return JSONResponse(
            {
                "backend": name,
                "task": task.value,
                "type": type(result).__name__,
                "result": result.to_dict(),
                "timing_ms": timing,
            }
        )

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


async def _parse(request: Request, task: Task) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """``(image bytes, options, prompt)`` from a multipart, JSON or raw-image body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=16)
        except StarletteHTTPException as exc:
            raise _HTTPError(400, "BadRequest", f"Malformed multipart body: {exc.detail}") from exc
        except _BodyTooLarge:
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
    elif prompt:
        raise _HTTPError(
            422,
            "ValidationError",
            f"{sorted(prompt)} are prompts for segment_prompt; task {task.value!r} takes none.",
        )
    return data, dict(parsed.options), prompt


def _infer(
    model: Any, task: Task, data: bytes, max_pixels: int, options: dict[str, Any], prompt: dict[str, Any]
) -> tuple[Any, dict[str, float]]:
    """Runs in a worker thread: decode, then call the backend's verb."""
    t0 = time.perf_counter()
    image = decode_image(data, max_pixels)
    t1 = time.perf_counter()
    try:
        if task is Task.SEGMENT_PROMPT:
            result = model.segment_prompt(image, **prompt)
        else:
            result = getattr(model, task.value)(image, **options)
    except (InvalidOptionError, InvalidPromptError, InvalidImageError) as exc:
        raise _HTTPError(422, type(exc).__name__, str(exc)) from exc
    except TaskNotSupportedError as exc:
        raise _HTTPError(404, type(exc).__name__, str(exc)) from exc
    except VisionKitError as exc:
        raise _HTTPError(500, type(exc).__name__, str(exc)) from exc
    except Exception as exc:
        raise _HTTPError(500, "BackendError", f"Backend failed ({type(exc).__name__}: {exc}).") from exc
    t2 = time.perf_counter()
    timing = {"decode": (t1 - t0) * 1e3, "predict": (t2 - t1) * 1e3}
    timing.update({k: float(v) for k, v in (getattr(model, "last_timing", None) or {}).items()})
    return result, timing


def _version() -> str:
    from visionkit import __version__

    return __version__


# -- running ------------------------------------------------------------------------------------
def run(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn until interrupted (one process; scale out with more processes)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


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
            uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
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
