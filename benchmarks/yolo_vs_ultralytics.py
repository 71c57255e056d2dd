"""visionkit ``yolo`` vs ``ultralytics.YOLO.predict`` vs the bare forward pass, side by side.

Same weights, same decoded images (numpy in, so JPEG decoding is out of every number), same torch
thread count (ultralytics' first predict drops torch to ``cpu_count - 1`` threads; we set it back
before every call). Rounds are interleaved so machine drift hits all three alike; medians reported.

    VISIONKIT_WEIGHTS=../shared/data/weights VISIONKIT_DATA=../shared/data \
        python benchmarks/yolo_vs_ultralytics.py --runs 30 --threads 2 --json yolo_bench.json

Without real weights it falls back to a random ``yolov8n.yaml`` model (timings are the same shape).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "false")

import numpy as np
import torch

import visionkit


def _images(n: int) -> list[np.ndarray]:
    root = Path(os.environ.get("VISIONKIT_DATA", "")) / "coco-mini" / "images"
    files = sorted(root.glob("*.jpg"))[:n] if root.is_dir() else []
    if not files:
        from ultralytics.utils import ASSETS

        files = [ASSETS / "bus.jpg", ASSETS / "zidane.jpg"]
    return [visionkit.load_image(f) for f in files]


def _weights(tmp: Path) -> str:
    for d in os.environ.get("VISIONKIT_WEIGHTS", "").split(os.pathsep):
        if d and (Path(d) / "yolov8n-dq.pt").is_file():
            return str(Path(d) / "yolov8n-dq.pt")
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    path = tmp / "yolov8n-random.pt"
    torch.save(
        {"model": DetectionModel("yolov8n.yaml", verbose=False), "train_args": {"task": "detect"}}, path
    )
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="timed runs per contender and size (after warm-up)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--sizes", type=int, nargs="+", default=[640, 320])
    ap.add_argument("--batch", type=int, default=8, help="batch size of the throughput test")
    ap.add_argument("--json", type=Path, default=Path("yolo_vs_ultralytics.json"))
    args = ap.parse_args()

    from ultralytics import YOLO

    weights = _weights(Path("/tmp"))
    images = _images(max(args.batch, 10))
    bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]
    report: dict = {"weights": weights, "threads": args.threads, "torch": torch.__version__, "sizes": {}}
    print(f"weights={weights} threads={args.threads} images={len(images)} runs={args.runs}")
    for imgsz in args.sizes:
        vk = visionkit.load("yolo", weights=weights, imgsz=imgsz)
        ul = YOLO(weights)
        ul.predict(bgr[0], imgsz=imgsz, verbose=False)  # sets up ultralytics' predictor (and its threads)

        times: dict[str, list[float]] = {
            "visionkit detect": [],
            "ultralytics predict": [],
            "bare forward": [],
        }

        def bare(i: int, vk=vk, times=times) -> None:
            x = vk.preprocess([images[i]], vk.options).inputs  # excluded from the timing below
            torch.set_num_threads(args.threads)
            t = time.perf_counter()
            vk.forward(x)
            times["bare forward"].append((time.perf_counter() - t) * 1e3)

        contenders = {
            "visionkit detect": lambda i, vk=vk: vk.detect(images[i]),
            "ultralytics predict": lambda i, ul=ul, imgsz=imgsz: ul.predict(
                bgr[i], imgsz=imgsz, verbose=False
            ),
        }
        for warm in range(3):
            for f in contenders.values():
                f(warm % len(images))
        for r in range(args.runs):
            i = r % len(images)
            for name, f in contenders.items():
                torch.set_num_threads(args.threads)
                t = time.perf_counter()
                f(i)
                times[name].append((time.perf_counter() - t) * 1e3)
            bare(i)
        med = {k: statistics.median(v) for k, v in times.items()}
        # throughput at batch N: visionkit list in, ultralytics list in
        tput = {}
        for name, f in {
            "visionkit detect": lambda vk=vk: vk.detect(images[: args.batch], batch_size=args.batch),
            "ultralytics predict": lambda ul=ul, imgsz=imgsz: ul.predict(
                bgr[: args.batch], imgsz=imgsz, verbose=False
            ),
        }.items():
            f()  # warm-up: oneDNN builds kernels per new (batch, height, width)
            runs = []
            for _ in range(max(3, args.runs // 10)):
                torch.set_num_threads(args.threads)
                t = time.perf_counter()
                f()
                runs.append(time.perf_counter() - t)
            tput[name] = args.batch / statistics.median(runs)
        row = {
            "median_ms": med,
            "vk_over_ultralytics": med["visionkit detect"] / med["ultralytics predict"],
            "vk_over_bare_forward": med["visionkit detect"] / med["bare forward"],
            f"images_per_s_batch{args.batch}": tput,
        }
        report["sizes"][imgsz] = row
        print(f"\nimgsz {imgsz} (median of {args.runs}, ms)")
        print(f"  {'contender':<22}{'median ms':>10}")
        for k, v in med.items():
            print(f"  {k:<22}{v:>10.1f}")
        print(f"  visionkit / ultralytics = {row['vk_over_ultralytics']:.3f}   (target <= 0.80)")
        print(f"  visionkit / bare fwd   = {row['vk_over_bare_forward']:.3f}   (target <= 1.15)")
        for k, v in tput.items():
            print(f"  batch {args.batch} throughput {k:<22}{v:>7.1f} img/s")
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
