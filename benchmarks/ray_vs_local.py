"""Throughput of the Ray Data pipeline vs local streaming, same backend, same images, same output format.

Rounds are interleaved (local, ray, local, ray ...); each writes a fresh JSONL file. The Ray time
includes starting the actor pool and loading one backend per actor (what a user pays per job);
``ray.init`` is measured once, separately. Reports medians and the ratio.

    python benchmarks/ray_vs_local.py                      # yolo + yolov8n-dq.pt when the data kit is set, else a fake
    python benchmarks/ray_vs_local.py --images 100 --workers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from visionkit.stream import predict_stream, read_records


def _compare(a: Path, b: Path) -> dict[str, Any]:
    """Exact equality of the records, and the largest box/score difference when not exact."""
    import numpy as np

    ra = {r["source"]: r["result"] for r in read_records(a)}
    rb = {r["source"]: r["result"] for r in read_records(b)}
    box = score = 0.0
    differing_items = 0
    for src, x in ra.items():
        y = rb[src]
        if x.get("class_name") != y.get("class_name"):
            differing_items += 1
            continue
        if "xyxy" in x and len(x["xyxy"]):
            box = max(box, float(np.abs(np.asarray(x["xyxy"]) - np.asarray(y["xyxy"])).max()))
            score = max(score, float(np.abs(np.asarray(x["confidence"]) - np.asarray(y["confidence"])).max()))
    return {
        "identical": ra == rb,
        "images_with_other_classes": differing_items,
        "max_box_diff_px": box,
        "max_score_diff": score,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", help="default: yolo with the data kit's weights, else fake-instance")
    p.add_argument("--weights")
    p.add_argument("--images", type=int, default=24, help="coco-mini images to use (max 100)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="Ray actors")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    args = p.parse_args()

    try:
        import ray

        from visionkit.ray import BackendLoader, predict_ray
    except ModuleNotFoundError as exc:
        print(f"skipped: {exc.name} is not installed (pip install 'visionkit-core[ray]')")
        return 0

    data = os.environ.get("VISIONKIT_DATA")
    weights_dir = os.environ.get("VISIONKIT_WEIGHTS")
    images = sorted((Path(data) / "coco-mini" / "images").glob("*.jpg"))[: args.images] if data else []
    if not images:
        print("skipped: set VISIONKIT_DATA to the data kit (coco-mini)")
        return 0
    backend = args.backend
    weights: Any = args.weights
    plugins: tuple[str, ...] = ()
    if backend is None:
        dq = Path(weights_dir or "") / "yolov8n-dq.pt"
        if weights_dir and dq.is_file():
            backend, weights = "yolo", str(dq)
        else:
            backend, weights = "fake-instance", None
    if backend.startswith("fake-"):
        plugins = ("visionkit.testing.fakes:fake_plugin",)
    loader = BackendLoader(backend, weights=weights, plugins=plugins)

    t0 = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    init_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    local_backend = loader()
    load_s = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp(prefix="vk-ray-bench-"))
    inputs = [str(i) for i in images]
    times: dict[str, list[float]] = {"local": [], "ray": []}
    outputs: dict[str, Path] = {}
    try:
        for r in range(args.rounds):
            for mode in ("local", "ray"):
                out = tmp / f"{mode}{r}.jsonl"
                t0 = time.perf_counter()
                if mode == "local":
                    s = predict_stream(
                        local_backend, inputs, out=out, batch_size=args.batch_size, progress=False
                    )
                else:
                    s = predict_ray(loader, inputs, out=out, batch_size=args.batch_size, workers=args.workers)
                times[mode].append(time.perf_counter() - t0)
                assert s.processed == len(inputs) and s.ok, s
                outputs[mode] = out
        agreement = _compare(outputs["local"], outputs["ray"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        ray.shutdown()
    med = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "backend": backend,
        "weights": weights,
        "images": len(inputs),
        "batch_size": args.batch_size,
        "ray_workers": args.workers,
        "cpus": os.cpu_count(),
        "ray_init_s": round(init_s, 2),
        "local_backend_load_s (not in local times)": round(load_s, 2),
        "seconds_per_round": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "median_img_per_s": {k: round(len(inputs) / v, 2) for k, v in med.items()},
        "ray_over_local_speed": round(med["local"] / med["ray"], 2),
        "ray_vs_local_results": agreement,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
