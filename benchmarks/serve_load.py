"""Load check for ``visionkit serve``: bounded concurrent requests over loopback.

Phase 1 sends ``--requests`` requests from ``--concurrency`` clients (no more than the server admits:
workers + queue) and reports p50/p99 latency and throughput; every request must get a 200.
Phase 2 overloads the server (``--overload`` clients) with clients that honour ``503 Retry-After``
and retry; it reports how many 503s were seen and checks that no request was lost in the end.

    python benchmarks/serve_load.py                               # fake detector (numpy only)
    python benchmarks/serve_load.py --backend yolo --weights $VISIONKIT_WEIGHTS/yolov8n-dq.pt

Only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
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

    from visionkit.serve import ServeConfig, ServerThread, create_app
except ModuleNotFoundError as _missing:  # `make bench` runs every script; this one needs the extra
    print(f"skipped: {_missing.name} is not installed (pip install 'visionkit[serve]' httpx)")
    sys.exit(0)


def _image_bytes(path: str | None) -> bytes:
    if path is None:
        data = os.environ.get("VISIONKIT_DATA")
        found = sorted((Path(data) / "coco-mini" / "images").glob("*.jpg")) if data else []
        if found:
            return found[0].read_bytes()
        buf = io.BytesIO()
        Image.fromarray(make_test_image(480, 640)).save(buf, "JPEG", quality=90)
        return buf.getvalue()
    return Path(path).read_bytes()


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


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
    args = p.parse_args()

    if args.backend.startswith("fake-"):
        registry: Any = Registry(entry_points=[], plugins=[fake_plugin()], use_environment=False)
        backend = visionkit.load(args.backend, weights=None, registry=registry)
    else:
        backend = visionkit.load(args.backend, weights=args.weights or visionkit.DEFAULT)
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


if __name__ == "__main__":
    sys.exit(main())
