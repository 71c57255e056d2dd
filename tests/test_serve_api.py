"""The HTTP server, started for real (uvicorn on 127.0.0.1, a free port) and driven by real requests."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from PIL import Image

import visionkit
from visionkit.registry import Registry
from visionkit.testing import FakeDetector, fake_plugin, make_test_image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from visionkit.serve import ServeConfig, ServerThread, create_app  # noqa: E402

MAX_PIXELS = 300 * 300
MAX_BODY = 256 * 1024


def _registry() -> Registry:
    return Registry(entry_points=[], plugins=[fake_plugin()], use_environment=False)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


IMAGE = make_test_image(60, 80, seed=3)
PNG = png(IMAGE)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    names = ["fake-detector", "fake-prompt", "fake-instance"]
    app = create_app(
        names=names,
        registry=_registry(),
        load_kwargs={n: {"weights": None} for n in names},
        config=ServeConfig(workers=2, queue_size=8, max_pixels=MAX_PIXELS, max_body_bytes=MAX_BODY),
    )
    with ServerThread(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[Any]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def local(name: str) -> Any:
    return visionkit.load(name, weights=None, registry=_registry())


def assert_error(r: Any, status: int, error: str, detail: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == error
    assert detail in body["detail"], body["detail"]


# -- happy paths ----------------------------------------------------------------------------------
def test_health_and_readiness(client: Any) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["backends"] == ["fake-detector", "fake-instance", "fake-prompt"]
    served = client.get("/v1/backends").json()["backends"]
    assert served["fake-instance"] == {"state": "ready", "tasks": ["detect", "segment_instances"]}


@pytest.mark.parametrize("how", ["multipart", "base64", "raw"])
def test_detect_returns_the_local_result(client: Any, how: str) -> None:
    if how == "multipart":
        r = client.post("/v1/detect/fake-detector", files={"image": ("x.png", PNG, "image/png")})
    elif how == "base64":
        r = client.post("/v1/detect/fake-detector", json={"image": base64.b64encode(PNG).decode()})
    else:
        r = client.post("/v1/detect/fake-detector", content=PNG, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["backend"], body["task"], body["type"]) == ("fake-detector", "detect", "Detections")
    assert visionkit.Detections.from_dict(body["result"]) == local("fake-detector").detect(IMAGE)
    assert {"decode", "predict"} <= set(body["timing_ms"])


def test_options_per_request(client: Any) -> None:
    b64 = base64.b64encode(PNG).decode()
    r = client.post("/v1/detect/fake-detector", json={"image": b64, "options": {"conf": 0.99, "margin": 150}})
    assert visionkit.Detections.from_dict(r.json()["result"]) == local("fake-detector").detect(
        IMAGE, conf=0.99, margin=150
    )
    r = client.post(
        "/v1/detect/fake-detector",
        files={"image": ("x.png", PNG, "image/png")},
        data={"options": json.dumps({"margin": 150})},
    )
    assert visionkit.Detections.from_dict(r.json()["result"]) == local("fake-detector").detect(
        IMAGE, margin=150
    )


def test_instance_masks(client: Any) -> None:
    r = client.post("/v1/segment_instances/fake-instance", files={"image": ("x.png", PNG, "image/png")})
    assert visionkit.InstanceMasks.from_dict(r.json()["result"]) == local("fake-instance").segment_instances(
        IMAGE
    )


def test_segment_prompt_with_points_and_boxes(client: Any) -> None:
    sam = local("fake-prompt")
    b64 = base64.b64encode(PNG).decode()
    r = client.post(
        "/v1/segment_prompt/fake-prompt", json={"image": b64, "points": [[15, 15]], "labels": [1]}
    )
    assert r.status_code == 200, r.text
    assert visionkit.PromptMasks.from_dict(r.json()["result"]) == sam.segment_prompt(
        IMAGE, points=[[15, 15]], labels=[1]
    )
    r = client.post(
        "/v1/segment_prompt/fake-prompt",
        files={"image": ("x.png", PNG, "image/png")},
        data={"boxes": "[[40, 20, 64, 45]]", "multimask_output": "false"},
    )
    assert r.status_code == 200, r.text
    expected = sam.segment_prompt(IMAGE, boxes=[[40, 20, 64, 45]], multimask_output=False)
    assert visionkit.PromptMasks.from_dict(r.json()["result"]) == expected


def test_openapi_schema_and_docs(client: Any) -> None:
    spec = client.get("/openapi.json").json()
    for task in ("detect", "classify", "segment_semantic", "segment_instances", "segment_prompt"):
        content = spec["paths"][f"/v1/{task}/{{backend}}"]["post"]["requestBody"]["content"]
        assert {"multipart/form-data", "application/json", "image/*"} <= set(content)
    prompt_props = spec["paths"]["/v1/segment_prompt/{backend}"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]["properties"]
    assert {"points", "labels", "boxes"} <= set(prompt_props)
    assert "text/html" in client.get("/docs").headers["content-type"]


# -- every bad request: a 4xx with a JSON error, and the server stays up ---------------------------
BAD = [
    (
        "garbage upload",
        dict(files={"image": ("x.png", b"not an image", "image/png")}),
        422,
        "InvalidImageError",
        "not an image format",
    ),
    (
        "empty upload",
        dict(files={"image": ("x.png", b"", "image/png")}),
        422,
        "InvalidImageError",
        "empty (0 bytes)",
    ),
    (
        "truncated png",
        dict(files={"image": ("x.png", PNG[: len(PNG) // 2], "image/png")}),
        422,
        "InvalidImageError",
        "corrupt or truncated",
    ),
    (
        "no image field",
        dict(files={"picture": ("x.png", PNG, "image/png")}),
        422,
        "ValidationError",
        "file field named 'image'",
    ),
    (
        "image as text field",
        dict(data={"image": "abc"}, files={"other": ("x", b"1")}),
        422,
        "ValidationError",
        "file field named 'image'",
    ),
    (
        "unknown form field",
        dict(files={"image": ("x.png", PNG, "image/png")}, data={"conf": "0.5"}),
        422,
        "ValidationError",
        "Unknown form fields ['conf']",
    ),
    (
        "options not json",
        dict(files={"image": ("x.png", PNG, "image/png")}, data={"options": "{conf"}),
        422,
        "ValidationError",
        "Form field 'options' must be JSON",
    ),
    (
        "multipart without boundary",
        dict(content=b"--xyz\r\nnonsense", headers={"content-type": "multipart/form-data"}),
        400,
        "BadRequest",
        "Malformed multipart body: Missing boundary",
    ),
    (
        "multipart without parts",
        dict(content=b"--xyz\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=xyz"}),
        422,
        "ValidationError",
        "file field named 'image'",
    ),
    (
        "json not json",
        dict(content=b"{nope", headers={"content-type": "application/json"}),
        422,
        "ValidationError",
        "Invalid request",
    ),
    ("json without image", dict(json={"options": {}}), 422, "ValidationError", "image: Field required"),
    (
        "json extra key",
        dict(json={"image": "", "colour": 1}),
        422,
        "ValidationError",
        "colour: Extra inputs are not permitted",
    ),
    ("bad base64", dict(json={"image": "@@@"}), 422, "ValidationError", "must be base64-encoded"),
    (
        "unknown option",
        dict(json={"image": base64.b64encode(PNG).decode(), "options": {"treshold": 1}}),
        422,
        "InvalidOptionError",
        "Unknown option 'treshold'",
    ),
    (
        "invalid option",
        dict(json={"image": base64.b64encode(PNG).decode(), "options": {"conf": 7}}),
        422,
        "InvalidOptionError",
        "conf=7",
    ),
    (
        "prompt on detect",
        dict(json={"image": base64.b64encode(PNG).decode(), "points": [[1, 1]]}),
        422,
        "ValidationError",
        "prompts for segment_prompt",
    ),
    (
        "content type",
        dict(content=b"hello", headers={"content-type": "text/plain"}),
        415,
        "UnsupportedMediaType",
        "'text/plain' is not accepted",
    ),
    (
        "too many pixels",
        dict(content=png(np.zeros((301, 300, 3), np.uint8)), headers={"content-type": "image/png"}),
        413,
        "ImageTooLarge",
        "301 = 90300 pixels; this server accepts at most 90000",
    ),
    (
        "decompression bomb",
        dict(content=bomb_png(100_000, 100_000), headers={"content-type": "image/png"}),
        413,
        "ImageTooLarge",
        "10000000000 pixels",
    ),
    (
        "body too large",
        dict(content=b"\0" * (MAX_BODY + 1), headers={"content-type": "image/png"}),
        413,
        "PayloadTooLarge",
        f"({MAX_BODY} bytes)",
    ),
    (
        "chunked body too large",
        dict(content=iter([b"\0" * 65536] * 5), headers={"content-type": "image/png"}),
        413,
        "PayloadTooLarge",
        "larger than this server accepts",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "error", "detail"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_requests_get_json_4xx(
    client: Any, kwargs: dict[str, Any], status: int, error: str, detail: str
) -> None:
    assert_error(client.post("/v1/detect/fake-detector", **kwargs), status, error, detail)


def test_bad_prompts(client: Any) -> None:
    b64 = base64.b64encode(PNG).decode()
    r = client.post(
        "/v1/segment_prompt/fake-prompt", json={"image": b64, "points": [[1, 1], [2, 2]], "labels": [1]}
    )
    assert_error(r, 422, "InvalidPromptError", "labels must have one entry per point (2), but got 1")
    r = client.post("/v1/segment_prompt/fake-prompt", json={"image": b64})
    assert_error(r, 422, "InvalidPromptError", "Received no prompt")
    r = client.post(
        "/v1/segment_prompt/fake-prompt", json={"image": b64, "points": [[1, 1]], "options": {"conf": 1}}
    )
    assert_error(
        r,
        422,
        "ValidationError",
        "segment_prompt takes points, labels, boxes and multimask_output, not options",
    )


def test_unknown_backend_task_and_route(client: Any) -> None:
    r = client.post("/v1/detect/yolo9000", content=PNG, headers={"content-type": "image/png"})
    assert_error(
        r,
        404,
        "UnknownBackendError",
        "Unknown backend 'yolo9000'. Known backends: fake-detector, fake-instance, fake-prompt.",
    )
    r = client.post("/v1/classify/fake-detector", content=PNG, headers={"content-type": "image/png"})
    assert_error(r, 404, "TaskNotSupportedError", "does not do task 'classify'; it supports: detect")
    r = client.post("/v1/detection/fake-detector", content=PNG, headers={"content-type": "image/png"})
    assert_error(r, 404, "NotFound", "Unknown task 'detection' in the URL; tasks: classify, detect")
    assert_error(client.get("/v1/detect/fake-detector"), 405, "MethodNotAllowed", "Method Not Allowed")
    assert_error(client.get("/nowhere"), 404, "NotFound", "Not Found")


def test_server_is_still_up_after_bad_requests(client: Any) -> None:
    for _ in range(3):
        client.post(
            "/v1/detect/fake-detector",
            content=bomb_png(50_000, 50_000),
            headers={"content-type": "image/png"},
        )
        client.post(
            "/v1/detect/fake-detector", content=b"\x89PNG junk", headers={"content-type": "image/png"}
        )
    assert client.get("/healthz").status_code == 200
    r = client.post("/v1/detect/fake-detector", content=PNG, headers={"content-type": "image/png"})
    assert r.status_code == 200


# -- bounded concurrency, loading, crashes --------------------------------------------------------
class Slow(FakeDetector):
    """Sleeps in forward and records how many calls overlap."""

    name = "slow"
    active = 0
    peak = 0
    # not named `lock`: that is visionkit.Backend's own per-instance lock, held around forward
    counting = threading.Lock()

    def forward(self, inputs: Any) -> Any:
        with Slow.counting:
            Slow.active += 1
            Slow.peak = max(Slow.peak, Slow.active)
        time.sleep(0.3)
        with Slow.counting:
            Slow.active -= 1
        return super().forward(inputs)


class Crashy(FakeDetector):
    name = "crashy"

    def forward(self, inputs: Any) -> Any:
        raise ZeroDivisionError("the model divided by zero")


def test_concurrency_is_bounded_and_overflow_gets_503() -> None:
    app = create_app(
        {"slow": Slow(), "crashy": Crashy()}, config=ServeConfig(workers=1, queue_size=2, retry_after_s=3)
    )
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:

        def call(_: int) -> Any:
            return c.post("/v1/detect/slow", content=PNG, headers={"content-type": "image/png"})

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(call, range(8)))
        codes = sorted(r.status_code for r in responses)
        assert codes.count(200) >= 3 and codes.count(503) >= 1 and set(codes) == {200, 503}
        for r in responses:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "3"
                assert_error(r, 503, "Busy", "All 1 workers are busy and 2 requests are waiting")
        assert Slow.peak == 1  # never two inferences at once with workers=1
        crash = c.post("/v1/detect/crashy", content=PNG, headers={"content-type": "image/png"})
        assert_error(crash, 500, "BackendError", "ZeroDivisionError: the model divided by zero")
        assert call(0).status_code == 200  # nothing stuck after the overload and the crash
        assert c.get("/v1/backends").json()["inflight"] == 0


def test_readiness_while_loading_and_after_a_failed_load() -> None:
    gate = threading.Event()

    class SlowToLoad(FakeDetector):
        name = "late"

        def __init__(self, **kwargs: Any) -> None:
            gate.wait(10)
            super().__init__(**kwargs)

    class Plugin:
        @visionkit.hookimpl
        def register_backends(self, register: Any) -> None:
            register("late", SlowToLoad, tasks=("detect",))

    reg = Registry(entry_points=[], plugins=[Plugin()], use_environment=False)
    app = create_app(names=["late"], registry=reg, load_in_background=True)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["loading"] == ["late"]
        r = c.post("/v1/detect/late", content=PNG, headers={"content-type": "image/png"})
        assert_error(r, 503, "Loading", "Backend 'late' is still loading")
        gate.set()
        deadline = time.monotonic() + 10
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (
            c.post("/v1/detect/late", content=PNG, headers={"content-type": "image/png"}).status_code == 200
        )

    app = create_app(names=["no-such-backend"], registry=reg)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.get("/readyz")
        assert (
            r.status_code == 503
            and "Unknown backend 'no-such-backend'" in r.json()["failed"]["no-such-backend"]
        )
        r = c.post("/v1/detect/no-such-backend", content=PNG, headers={"content-type": "image/png"})
        assert_error(
            r, 500, "BackendUnavailable", "Backend 'no-such-backend' failed to load: UnknownBackendError"
        )


def test_config_is_validated() -> None:
    with pytest.raises(
        visionkit.InvalidOptionError, match=r"ServeConfig\.workers must be at least 1, but got 0"
    ):
        ServeConfig(workers=0)
    with pytest.raises(
        visionkit.InvalidOptionError, match=r"ServeConfig\.queue_size must be >= 0, but got -1"
    ):
        ServeConfig(queue_size=-1)


def test_a_pillow_plugin_failing_oddly_is_still_a_422(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # ultralytics patches Image.open to install pi-heif on unknown data; offline that raises ImportError
    def patched(*args: Any, **kwargs: Any) -> Any:
        raise ModuleNotFoundError("No module named 'pi_heif'")

    monkeypatch.setattr(Image, "open", patched)
    r = client.post("/v1/detect/fake-detector", content=b"???", headers={"content-type": "image/png"})
    assert_error(r, 422, "InvalidImageError", "not an image format Pillow can read")
    monkeypatch.undo()
    assert (
        client.post(
            "/v1/detect/fake-detector", content=PNG, headers={"content-type": "image/png"}
        ).status_code
        == 200
    )
