"""Bounded work per request, one error table, and thread safety on a real server (issue 18, items 2-4)."""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image
from pydantic import Field

import visionkit
from visionkit.backend import BackendOptions, Batch
from visionkit.errors import LimitExceededError
from visionkit.protocols import Task
from visionkit.testing import FakeDetector, FakeInstanceSegmenter, FakePromptSegmenter, make_test_image
from visionkit.testing.fakes import FakeOptions

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from visionkit.serve import ServeConfig, ServerThread, create_app  # noqa: E402


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


IMAGE = make_test_image(60, 80, seed=3)
PNG = png(IMAGE)
B64 = base64.b64encode(PNG).decode()


@contextmanager
def client(backends: dict[str, Any], **limits: Any) -> Iterator[Any]:
    with (
        ServerThread(create_app(backends, config=ServeConfig(**limits))) as srv,
        httpx.Client(base_url=srv.url, timeout=30) as c,
    ):
        yield c


def with_raw(body: dict[str, Any], raw: str) -> str:
    """``body`` as JSON with the string ``"@RAW@"`` replaced by ``raw`` (``NaN``, ``Infinity``: not JSON,
    but Python's and pydantic's parsers read them)."""
    return json.dumps(body).replace('"@RAW@"', raw)


def assert_error(r: Any, status: int, error: str, detail: str = "") -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["error"] == error, body
    assert detail in body["detail"], body["detail"]
    return body


# -- limits ---------------------------------------------------------------------------------------
class SizedOptions(FakeOptions):
    imgsz: int = Field(64, ge=1, description="Side of a scratch buffer, like a real model's input size.")


class Sized(FakeDetector):
    """Allocates an ``imgsz``² buffer as real backends do for their input; refuses above 2048 as a limit."""

    name = "sized"
    Options: ClassVar[type[BackendOptions]] = SizedOptions
    checked = True

    def preprocess(self, images: list[np.ndarray], options: Any) -> Batch[Any]:
        if self.checked and options.imgsz > 2048:
            raise LimitExceededError("max_imgsz", options.imgsz, 2048, "Load with a higher max_imgsz.")
        np.zeros((options.imgsz, options.imgsz, 3), np.uint8)  # what an unchecked backend would do
        return super().preprocess(images, options)


def test_a_backend_limit_is_a_413_that_names_it() -> None:
    with client({"sized": Sized()}) as c:
        r = c.post("/v1/detect/sized", json={"image": B64, "options": {"imgsz": 5120}})
        body = assert_error(r, 413, "LimitExceededError", "max_imgsz=5120 exceeds the limit of 2048")
        assert (body["limit"], body["maximum"]) == ("max_imgsz", 2048)
        assert c.post("/v1/detect/sized", json={"image": B64, "options": {"imgsz": 640}}).status_code == 200


class Fails(FakeDetector):
    name = "fails"
    error: ClassVar[BaseException] = RuntimeError("boom")

    def forward(self, inputs: Any) -> Any:
        raise Fails.error


@pytest.fixture(scope="module")
def shared() -> Iterator[Any]:
    """One server for the many small error checks (a server per case would cost seconds each)."""
    unchecked = Sized()
    unchecked.checked = False
    with client({"unchecked": unchecked, "fails": Fails()}) as c:
        yield c


@pytest.mark.parametrize("imgsz", [3.2e9, 1e12, 2**70, -5, "big", "NaN", "Infinity"])
def test_numeric_overrides_never_give_500(shared: Any, imgsz: Any) -> None:
    # "unchecked" has no limit of its own: the server must still answer 4xx
    raw = imgsz if isinstance(imgsz, str) and imgsz[0].isupper() else None
    if raw:  # JSON extensions Python reads as floats
        content = with_raw({"image": B64, "options": {"imgsz": "@RAW@"}}, raw)
        r = shared.post("/v1/detect/unchecked", content=content, headers={"content-type": "application/json"})
    else:
        r = shared.post("/v1/detect/unchecked", json={"image": B64, "options": {"imgsz": imgsz}})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"] in ("InvalidOptionError", "LimitExceededError"), r.text
    ok = shared.post("/v1/detect/unchecked", content=PNG, headers={"content-type": "image/png"})
    assert ok.status_code == 200


def test_answers_over_max_response_bytes_are_413() -> None:
    big = png(make_test_image(240, 320, seed=3))  # masks alone are ~10 KB per colour region
    with client({"inst": FakeInstanceSegmenter()}, max_response_bytes=4000) as c:
        r = c.post("/v1/detect/inst", content=big, headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        r = c.post("/v1/segment_instances/inst", content=big, headers={"content-type": "image/png"})
        body = assert_error(r, 413, "LimitExceededError", "this server sends at most 4000")
        assert (body["limit"], body["maximum"]) == ("max_response_bytes", 4000)
    with client({"inst": FakeInstanceSegmenter()}, max_response_bytes=100) as c:
        r = c.post("/v1/detect/inst", content=big, headers={"content-type": "image/png"})
        assert_error(r, 413, "LimitExceededError", "The answer would be ")  # measured after encoding


def test_prompts_are_bounded_and_shaped() -> None:
    with client({"sam": FakePromptSegmenter()}, max_prompts=4) as c:
        route = "/v1/segment_prompt/sam"
        r = c.post(route, json={"image": B64, "points": [[1, 1]] * 3, "boxes": [[0, 0, 5, 5]] * 2})
        body = assert_error(r, 413, "LimitExceededError", "max_prompts=5 exceeds the limit of 4")
        assert body["limit"] == "max_prompts"
        for bad in (
            {"points": [[1, 1], [2, 2, 3]]},  # ragged
            {"points": [[1]]},
            {"boxes": [[1, 2, 3]]},
            {"boxes": [[1, 2, 3, 4], [1, 2]]},
        ):
            assert_error(c.post(route, json={"image": B64, **bad}), 422, "ValidationError")
        r = c.post(
            route,
            content=with_raw({"image": B64, "points": [["@RAW@", 1]]}, "NaN"),
            headers={"content-type": "application/json"},
        )
        assert_error(r, 422, "ValidationError", "finite number")
        r = c.post(route, files={"image": ("x.png", PNG, "image/png")}, data={"points": "[[1, 2], [3]]"})
        assert_error(r, 422, "ValidationError")
        assert c.post(route, json={"image": B64, "points": [[10, 10]] * 4}).status_code == 200


def test_non_finite_options_are_422() -> None:
    with client({"det": FakeDetector()}) as c:
        r = c.post(
            "/v1/detect/det",
            content=with_raw({"image": B64, "options": {"conf": "@RAW@"}}, "NaN"),
            headers={"content-type": "application/json"},
        )
        assert_error(r, 422, "InvalidOptionError", "numbers must be finite")


# -- one error table: client faults are 4xx, overload 503, only bugs 500 (logged) -------------------
@pytest.mark.parametrize(
    ("error", "options", "status", "kind"),
    [
        (ValueError("cannot reshape"), {"conf": 0.3}, 422, "InvalidOptionError"),  # the request's options
        (MemoryError(), {"conf": 0.3}, 413, "LimitExceededError"),
        (MemoryError(), {}, 503, "Busy"),  # no options to blame: the server is short of memory
        (visionkit.InvalidImageError("too thin"), {}, 422, "InvalidImageError"),
        (visionkit.InvalidPromptError("ragged"), {}, 422, "InvalidPromptError"),
        (visionkit.errors.BackendError("library failed"), {}, 500, "BackendError"),
        (KeyError("a bug"), {}, 500, "BackendError"),
    ],
)
def test_backend_exceptions_map_through_one_table(
    shared: Any,
    error: BaseException,
    options: dict[str, Any],
    status: int,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    Fails.error = error
    with caplog.at_level(logging.WARNING, logger="visionkit.serve"):
        r = shared.post("/v1/detect/fails", json={"image": B64, "options": options})
        assert_error(r, status, kind)
        if status == 503:
            assert r.headers["retry-after"] == "1"
    logged = [rec for rec in caplog.records if rec.name == "visionkit.serve"]
    if status == 500:
        assert [rec.levelname for rec in logged] == ["ERROR"] and logged[0].exc_info is not None
    elif kind == "InvalidOptionError":  # blamed on the request, but a backend bug could hide there
        assert [rec.levelname for rec in logged] == ["WARNING"]


# -- thread safety --------------------------------------------------------------------------------
class Racy:
    """A detector that keeps per-call state on the instance (as many wrapped libraries do): called
    from two threads at once, one call answers with the other's image."""

    name = "racy"
    tasks = (Task.DETECT,)

    def __init__(self) -> None:
        self.inner = FakeDetector()
        self.current: Any = None
        self.active = 0
        self.peak = 0

    def detect(self, image: Any, **options: Any) -> Any:
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.current = image
        time.sleep(0.02)
        result = self.inner.detect(self.current, **options)
        self.active -= 1
        return result


class Declared(Racy):
    """The same, but declared thread-safe (and made so: no shared state)."""

    name = "declared"
    thread_safe = True

    def detect(self, image: Any, **options: Any) -> Any:
        self.active += 1
        self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        result = self.inner.detect(image, **options)
        self.active -= 1
        return result


def _images() -> list[bytes]:
    out = []
    for seed in range(4):
        img = make_test_image(48 + 8 * seed, 64, seed=seed)
        out.append(png(img))
    return out


@pytest.mark.parametrize("backend", [Racy, Declared, FakeDetector], ids=["undeclared", "declared", "Backend"])
def test_per_backend_4_gives_the_sequential_answers(backend: type) -> None:
    model = backend()
    images = _images()
    expected = [FakeDetector().detect(Image.open(io.BytesIO(b))) for b in images]
    with client({"m": model}, workers=4, per_backend=4, queue_size=32) as c:

        def call(i: int) -> tuple[int, Any]:
            r = c.post("/v1/detect/m", content=images[i % 4], headers={"content-type": "image/png"})
            return i, r

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(call, range(36)))
    for i, r in answers:
        assert r.status_code == 200, r.text
        assert visionkit.Detections.from_dict(r.json()["result"]) == expected[i % 4], i
    if backend is Racy:
        assert model.peak == 1  # never two calls at once on an object that did not declare it safe
    elif backend is Declared:
        assert model.peak > 1  # --per-backend still runs declared thread-safe backends in parallel


def test_one_backend_under_two_names_is_still_one_call_at_a_time() -> None:
    model = Racy()
    with client({"a": model, "b": model}, workers=4, per_backend=4) as c:

        def call(i: int) -> int:
            name = "ab"[i % 2]
            return c.post(
                f"/v1/detect/{name}", content=PNG, headers={"content-type": "image/png"}
            ).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(call, range(16))) == {200}
    assert model.peak == 1


def test_stage_timing_is_the_calls_own() -> None:
    with client({"det": FakeDetector()}) as c:
        r = c.post("/v1/detect/det", content=PNG, headers={"content-type": "image/png"})
        assert {"decode", "predict", "encode", "preprocess", "forward", "postprocess"} <= set(
            r.json()["timing_ms"]
        )


def test_threads_gate_is_per_event_loop() -> None:
    # a second server over the same app object must not reuse the first one's semaphores
    app = create_app({"det": FakeDetector()})
    for _ in range(2):
        with ServerThread(app) as srv:
            r = httpx.post(
                f"{srv.url}/v1/detect/det", content=PNG, headers={"content-type": "image/png"}, timeout=30
            )
            assert r.status_code == 200, r.text


@pytest.mark.real_weights
def test_real_yolo_with_per_backend_4_gives_the_sequential_answers() -> None:
    import os
    from pathlib import Path

    weights_dir, data = os.environ.get("VISIONKIT_WEIGHTS"), os.environ.get("VISIONKIT_DATA")
    if not (weights_dir and data):
        pytest.skip("set VISIONKIT_WEIGHTS and VISIONKIT_DATA to the data kit")
    pytest.importorskip("visionkit_yolo", reason="visionkit-yolo is not installed")
    weights = Path(weights_dir) / "yolov8n-dq.pt"
    paths = sorted((Path(data) / "coco-mini" / "images").glob("*.jpg"))[:4]
    if not (weights.is_file() and len(paths) == 4):
        pytest.skip("yolov8n-dq.pt or the coco-mini images are missing")
    yolo = visionkit.load("yolo", weights=str(weights))
    expected = [yolo.detect(p) for p in paths]
    with client({"yolo": yolo}, workers=4, per_backend=4, queue_size=32) as c:

        def call(i: int) -> Any:
            data = paths[i % 4].read_bytes()
            return c.post("/v1/detect/yolo", content=data, headers={"content-type": "image/jpeg"})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(call, range(16)))
    for i, r in enumerate(answers):
        assert r.status_code == 200, r.text
        got, want = visionkit.Detections.from_dict(r.json()["result"]), expected[i % 4]
        assert got.class_name == want.class_name, i
        np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-3)
        np.testing.assert_allclose(got.confidence, want.confidence, atol=1e-4)
