"""Slow and stalled clients against a real server on 127.0.0.1 (issue 18, item 1).

Every socket here has a timeout, and every server short limits, so a regression fails in seconds
instead of hanging the suite.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from PIL import Image

from visionkit.testing import FakeDetector, make_test_image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from visionkit.serve import ServeConfig, ServerThread, create_app  # noqa: E402

_buf = io.BytesIO()
Image.fromarray(make_test_image(60, 80, seed=3)).save(_buf, "PNG")
PNG = _buf.getvalue()
HEAD = (
    "POST /v1/detect/fake HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
    "Content-Length: {n}\r\n\r\n"
)


@contextmanager
def serving(backends: dict[str, Any] | None = None, **limits: Any) -> Iterator[tuple[ServerThread, int]]:
    app = create_app(backends or {"fake": FakeDetector()}, config=ServeConfig(**limits))
    with ServerThread(app) as srv:
        yield srv, int(srv.url.rsplit(":", 1)[1])


def stalled_body(port: int, sent: bytes = b"ab", declared: int = 100_000) -> socket.socket:
    """A client that sends a request head and the first bytes of its body, then nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(HEAD.format(n=declared).encode() + sent)
    return s


def read_until_closed(s: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it stays open ``within`` s."""
    s.settimeout(within)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {within} s; received {data[:200]!r}")
    except ConnectionResetError:
        pass
    return data


def json_of(answer: bytes) -> dict[str, Any]:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def post_png(url: str) -> Any:
    return httpx.post(f"{url}/v1/detect/fake", content=PNG, headers={"content-type": "image/png"}, timeout=10)


def test_stalled_bodies_take_no_place_from_honest_requests() -> None:
    # capacity 3 (1 worker + 2 waiting); 12 stalled uploads used to count as 12 requests in flight
    with serving(workers=1, queue_size=2, body_timeout_s=30, max_connections=32) as (srv, port):
        socks = [stalled_body(port) for _ in range(12)]
        try:
            time.sleep(0.3)
            for _ in range(3):
                r = post_png(srv.url)
                assert r.status_code == 200, r.text
            ready = httpx.get(f"{srv.url}/readyz", timeout=10)
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            stats = httpx.get(f"{srv.url}/v1/backends", timeout=10).json()
            assert stats["inflight"] == 0 and stats["reading"] == 12
        finally:
            for s in socks:
                s.close()


def test_a_stalled_body_is_cut_after_the_body_timeout() -> None:
    with serving(body_timeout_s=0.5) as (srv, port):
        t0 = time.monotonic()
        s = stalled_body(port)
        answer = read_until_closed(s, within=5)
        s.close()
        assert time.monotonic() - t0 < 4
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"connection: close" in answer.lower()
        body = json_of(answer)
        assert body["error"] == "RequestTimeout"
        assert "did not arrive within 0.5 s (2 bytes received)" in body["detail"]
        assert post_png(srv.url).status_code == 200


def test_a_trickled_body_is_cut_at_the_deadline_not_per_byte() -> None:
    # a byte every 0.2 s never idles long, but the whole body must still arrive within body_timeout_s
    with serving(body_timeout_s=1.0) as (_, port):
        s = stalled_body(port, sent=b"")
        t0 = time.monotonic()
        got = b""
        s.settimeout(0.2)
        while time.monotonic() - t0 < 5:
            try:
                s.sendall(b"x")
                got += s.recv(65536)
                if got:
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        s.close()
        assert got.startswith(b"HTTP/1.1 408 "), got[:100]
        assert time.monotonic() - t0 < 3


@pytest.mark.parametrize(
    "sent", [b"", b"POST /v1/detect/fake HTTP/1.1\r\nHost: x\r\n"], ids=["silent", "half-head"]
)
def test_a_stalled_head_is_cut_after_the_header_timeout(sent: bytes) -> None:
    with serving(header_timeout_s=0.5) as (srv, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(sent)
        t0 = time.monotonic()
        answer = read_until_closed(s, within=5)
        s.close()
        assert time.monotonic() - t0 < 4
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert json_of(answer)["error"] == "RequestTimeout"
        assert post_png(srv.url).status_code == 200  # the header clock does not cut honest requests


def test_keep_alive_connections_get_a_fresh_head_deadline() -> None:
    with serving(header_timeout_s=0.6) as (srv, _), httpx.Client(base_url=srv.url, timeout=10) as c:
        for _ in range(4):  # one connection, 4 requests over ~1.2 s: longer than one header timeout
            assert (
                c.post("/v1/detect/fake", content=PNG, headers={"content-type": "image/png"}).status_code
                == 200
            )
            time.sleep(0.3)


def test_connections_are_capped_but_probes_still_answer() -> None:
    with serving(max_connections=4, header_timeout_s=30) as (srv, port):
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
        try:
            time.sleep(0.3)
            r = post_png(srv.url)
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "TooManyConnections" and r.json()["limit"] == "max_connections"
            assert r.headers["connection"] == "close"
            assert httpx.get(f"{srv.url}/healthz", timeout=10).status_code == 200
            ready = httpx.get(f"{srv.url}/readyz", timeout=10)
            assert ready.status_code == 503 and ready.json()["status"] == "saturated"
        finally:
            for s in idle:
                s.close()
        time.sleep(0.3)
        assert post_png(srv.url).status_code == 200
        assert httpx.get(f"{srv.url}/readyz", timeout=10).status_code == 200


class Gated(FakeDetector):
    """Holds every call until the test opens the gate."""

    name = "gated"
    gate = threading.Event()

    def forward(self, inputs: Any) -> Any:
        Gated.gate.wait(10)
        return super().forward(inputs)


def test_readiness_says_saturated_while_no_request_can_be_taken() -> None:
    Gated.gate.clear()
    with (
        serving({"fake": Gated()}, workers=1, queue_size=0) as (srv, _),
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        assert c.get("/readyz").status_code == 200
        pool = threading.Thread(target=post_png, args=(srv.url,))
        pool.start()
        deadline = time.monotonic() + 5
        while c.get("/v1/backends").json()["inflight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "saturated"
        assert (r.json()["inflight"], r.json()["capacity"]) == (1, 1)
        assert post_png(srv.url).status_code == 503
        Gated.gate.set()
        pool.join(10)
        assert c.get("/readyz").status_code == 200


def test_a_client_that_never_reads_its_answer_is_disconnected() -> None:
    class Blob:
        def to_dict(self) -> dict[str, str]:
            return {"blob": "x" * 8_000_000}  # more than the socket buffers hold when nobody reads

    class Big:
        tasks = ("detect",)

        def detect(self, image: Any, **options: Any) -> Blob:
            return Blob()

    with serving({"fake": Big()}, send_timeout_s=0.5) as (srv, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(HEAD.format(n=len(PNG)).encode() + PNG)
        deadline = time.monotonic() + 8
        while httpx.get(f"{srv.url}/v1/backends", timeout=10).json()["connections"] > 1:
            assert time.monotonic() < deadline, "the unread answer kept its connection"
            time.sleep(0.1)
        s.close()
        assert post_png(srv.url).status_code == 200
