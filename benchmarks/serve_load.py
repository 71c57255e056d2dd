"""Load check for ``visionkit serve``: bounded concurrent requests over loopback.

Phase 1 sends ``--requests`` requests from ``--concurrency`` clients (no more than the server admits:
workers + queue) and reports p50/p99 latency and throughput; every request must get a 200.
Phase 2 overloads the server (``--overload`` clients) with clients that honour ``503 Retry-After``
and retry; it reports how many 503s were seen and checks that no request was lost in the end.

``--attack`` runs the checks of issue 18 instead, against a server in its own process (as
``visionkit serve`` runs it, so its memory can be read):

- 4 honest clients send 40 requests, first alone, then while 20 sockets hold stalled uploads (a request
  head and 2 bytes of body each, re-opened whenever the server cuts one): p50/p99 and successes of
  each run, and the p99 ratio (target: all succeed, ratio under 2);
- a burst of 200 requests at once: a histogram of the statuses (target: no 500), and the server's RSS
  before and after (target: within 10 %).

    python benchmarks/serve_load.py                               # fake detector (numpy only)
    python benchmarks/serve_load.py --backend yolo --weights $VISIONKIT_WEIGHTS/yolov8n-dq.pt
    python benchmarks/serve_load.py --attack --backend yolo --weights yolov8n-dq.pt

Only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import visionkit
from visionkit.registry import Registry
from visionkit.testing import fake_plugin, make_test_image

try:
    import httpx

    from visionkit.serve import ServeConfig, ServerThread, create_app, run
except ModuleNotFoundError as _missing:  # `make bench` runs every script; this one needs the extra
    print(f"skipped: {_missing.name} is not installed (pip install 'visionkit-core[serve]' httpx)")
    sys.exit(0)


def _image_bytes(path: str | None) -> bytes:
    return _images(path, 1)[0]


def _images(path: str | None, n: int) -> list[bytes]:
    """``n`` encoded images: ``path``, else coco-mini's first ``n`` (VISIONKIT_DATA), else generated."""
    if path is not None:
        return [Path(path).read_bytes()]
    data = os.environ.get("VISIONKIT_DATA")
    found = sorted((Path(data) / "coco-mini" / "images").glob("*.jpg"))[:n] if data else []
    if found:
        return [p.read_bytes() for p in found]
    buf = io.BytesIO()
    Image.fromarray(make_test_image(480, 640)).save(buf, "JPEG", quality=90)
    return [buf.getvalue()]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _load(backend: str, weights: str | None) -> Any:
    if backend.startswith("fake-"):
        registry: Any = Registry(entry_points=[], plugins=[fake_plugin()], use_environment=False)
        return visionkit.load(backend, weights=None, registry=registry)
    return visionkit.load(backend, weights=weights or visionkit.DEFAULT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="fake-detector")
    p.add_argument("--weights", help="weights for a real backend (default: fakes need none)")
    p.add_argument("--image", help="image to send (default: the first coco-mini image, else a generated one)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--overload", type=int, default=32, help="clients in the overload phase (0: skip)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--queue", type=int, default=8)
    p.add_argument("--attack", action="store_true", help="slow-client attack and burst checks (issue 18)")
    p.add_argument("--serve-port", type=int, help=argparse.SUPPRESS)  # the --attack server process
    args = p.parse_args()
    if args.serve_port:
        return _serve(args)
    if args.attack:
        return attack(args)

    backend = _load(args.backend, args.weights)
    config = ServeConfig(workers=args.workers, queue_size=args.queue, retry_after_s=1)
    app = create_app({args.backend: backend}, config=config)
    body = _image_bytes(args.image)
    admitted = args.workers + args.queue
    if args.concurrency > admitted:
        print(
            f"--concurrency {args.concurrency} > workers + queue = {admitted}: phase 1 would see 503s",
            file=sys.stderr,
        )
        return 2

    report: dict[str, Any] = {
        "backend": args.backend,
        "image_bytes": len(body),
        "workers": args.workers,
        "queue": args.queue,
    }
    with (
        ServerThread(app) as server,
        httpx.Client(base_url=server.url, timeout=120, limits=httpx.Limits(max_connections=256)) as client,
    ):
        route = f"/v1/detect/{args.backend}"
        headers = {"content-type": "image/jpeg"}
        client.post(route, content=body, headers=headers)  # warm-up

        def once(_: int) -> tuple[int, float]:
            t0 = time.perf_counter()
            r = client.post(route, content=body, headers=headers)
            return r.status_code, (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(once, range(args.requests)))
        wall = time.perf_counter() - t0
        lat = [ms for code, ms in results if code == 200]
        report["bounded"] = {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "ok": len(lat),
            "lost": args.requests - len(lat),
            "status_codes": sorted({code for code, _ in results}),
            "p50_ms": round(_pct(lat, 50), 1),
            "p99_ms": round(_pct(lat, 99), 1),
            "req_per_s": round(len(lat) / wall, 1),
        }

        if args.overload:

            def with_retry(_: int) -> tuple[int, int]:
                busy = 0
                while True:
                    r = client.post(route, content=body, headers=headers)
                    if r.status_code != 503:
                        return r.status_code, busy
                    busy += 1
                    time.sleep(min(float(r.headers.get("retry-after", "1")), 1.0) * 0.2)

            n = args.overload * 4
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.overload) as pool:
                outcomes = list(pool.map(with_retry, range(n)))
            report["overload"] = {
                "requests": n,
                "clients": args.overload,
                "ok": sum(code == 200 for code, _ in outcomes),
                "lost": sum(code != 200 for code, _ in outcomes),
                "busy_503_seen": sum(b for _, b in outcomes),
                "wall_s": round(time.perf_counter() - t0, 2),
            }
        report["server_state"] = client.get("/v1/backends").json()["inflight"]
    print(json.dumps(report, indent=2))
    lost = report["bounded"]["lost"] + report.get("overload", {}).get("lost", 0)
    return 0 if lost == 0 else 1


# -- --attack: issue 18's slow-client and burst checks ---------------------------------------------
def _serve(args: argparse.Namespace) -> int:
    """The server process of ``--attack``: default limits, as ``visionkit serve`` would run."""
    app = create_app({args.backend: _load(args.backend, args.weights)}, config=ServeConfig())
    run(app, host="127.0.0.1", port=args.serve_port, log_level="error")
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Stallers:
    """``n`` sockets that each send a request head and 2 bytes of a 1 MB body, then nothing; a socket
    the server closes is opened again, so the pressure lasts as long as the attack."""

    HEAD = (
        "POST /v1/detect/{backend} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        "Content-Length: 1000000\r\n\r\nab"
    )

    def __init__(self, port: int, backend: str, n: int) -> None:
        self.port, self.n = port, n
        self.head = self.HEAD.format(backend=backend).encode()
        self.stop = threading.Event()
        self.opened = 0
        self.thread = threading.Thread(target=self._keep, daemon=True)

    def _open(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(self.head)
        s.setblocking(False)
        self.opened += 1
        return s

    def _keep(self) -> None:
        socks = [self._open() for _ in range(self.n)]
        while not self.stop.wait(0.2):
            for i, s in enumerate(socks):
                try:
                    if s.recv(65536) == b"":  # closed by the server (a timeout): open another
                        s.close()
                        socks[i] = self._open()
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    socks[i] = self._open()
        for s in socks:
            s.close()

    def __enter__(self) -> _Stallers:
        self.thread.start()
        time.sleep(1.0)  # all stalled before the honest clients start
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _honest(url: str, route: str, images: list[bytes], clients: int, n: int) -> dict[str, Any]:
    def once(i: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        try:
            r = httpx.post(
                url + route,
                content=images[i % len(images)],
                headers={"content-type": "image/jpeg"},
                timeout=120,
            )
            code = r.status_code
        except httpx.HTTPError:
            code = 0  # no answer at all
        return code, (time.perf_counter() - t0) * 1e3

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(once, range(n)))
    lat = [ms for code, ms in results if code == 200]
    return {
        "ok": len(lat),
        "of": n,
        "statuses": dict(Counter(code for code, _ in results)),
        "p50_ms": round(_pct(lat, 50), 1),
        "p99_ms": round(_pct(lat, 99), 1),
    }


def attack(args: argparse.Namespace) -> int:
    images = _images(args.image, 40)
    port = _free_port()
    url, route = f"http://127.0.0.1:{port}", f"/v1/detect/{args.backend}"
    cmd = [sys.executable, __file__, "--serve-port", str(port), "--backend", args.backend]
    if args.weights:
        cmd += ["--weights", args.weights]
    server = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print("the server did not start", file=sys.stderr)
                return 2
            time.sleep(0.3)
        _honest(url, route, images, 4, 8)  # warm-up: lazy allocations are not a leak

        calm = _honest(url, route, images, 4, 40)
        with _Stallers(port, args.backend, 20) as stallers:
            stats = httpx.get(f"{url}/v1/backends", timeout=10).json()
            attacked = _honest(url, route, images, 4, 40)
            ready_during = httpx.get(f"{url}/readyz", timeout=10).status_code
        attacked["stalled_sockets"] = 20
        attacked["stalled_reading_seen_by_server"] = stats["reading"]
        attacked["stalled_opened_in_all"] = stallers.opened
        attacked["readyz_during_attack"] = ready_during

        rss_before = _rss_mib(server.pid)
        burst = _honest(url, route, images, 200, 200)
        time.sleep(1.0)
        rss_after = _rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(30)

    ratio = attacked["p99_ms"] / calm["p99_ms"] if calm["p99_ms"] else float("nan")
    rss_change = (rss_after - rss_before) / rss_before
    print(f"backend {args.backend} ({args.weights or 'default weights'}); server with default ServeConfig\n")
    print(f"{'run':34} {'ok':>7} {'p50 ms':>9} {'p99 ms':>9}  statuses")
    for label, row in (("4 clients x 40, no attack", calm), ("4 clients x 40, 20 stalled sockets", attacked)):
        print(
            f"{label:34} {row['ok']:>3}/{row['of']:<3} {row['p50_ms']:>9} {row['p99_ms']:>9}  {row['statuses']}"
        )
    print(f"\np99 under attack / p99 alone: {ratio:.2f}x (target < 2)")
    print(f"p50 under attack / p50 alone: {attacked['p50_ms'] / calm['p50_ms']:.2f}x")
    print(
        f"server saw {attacked['stalled_reading_seen_by_server']} bodies stalled; "
        f"/readyz during the attack: {attacked['readyz_during_attack']}"
    )
    print(f"\nburst of 200 at once: statuses {dict(sorted(burst['statuses'].items()))} (target: no 500)")
    print(
        f"server RSS {rss_before:.0f} MiB before, {rss_after:.0f} MiB after: {rss_change:+.1%} (target within 10 %)"
    )
    report = {"no_attack": calm, "attack": attacked, "p99_ratio": round(ratio, 2), "burst": burst}
    report["rss_mib"] = {"before": round(rss_before, 1), "after": round(rss_after, 1)}
    print("\n" + json.dumps(report))
    ok = (
        attacked["ok"] == attacked["of"]
        and calm["ok"] == calm["of"]
        and 500 not in burst["statuses"]
        and abs(rss_change) <= 0.10
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
