"""visionkit ``detr`` vs ``transformers.pipeline("object-detection")`` vs bare processor + model.

Same model object, same images, same torch threads; rounds interleave the three so machine noise hits all
alike. Reports median latency per image (batch 1), the ratios the issue targets (visionkit <= 0.9x the
pipeline, <= 1.10x bare), and batch-8 throughput.

    python benchmarks/detr_vs_transformers.py                     # tiny random DETR (offline)
    python benchmarks/detr_vs_transformers.py --weights DIR|HUB   # a real checkpoint
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

import visionkit


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--weights", default=None, help="checkpoint dir or hub id (default: tiny random DETR)"
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=480, help="test image height (width = 4/3 of it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    det = visionkit.load("detr", weights=args.weights, threshold=0.5)
    model, proc = det.model, det.processor
    from transformers import pipeline

    pipe = pipeline("object-detection", model=model, image_processor=proc, device=-1)
    rng = np.random.default_rng(0)
    h, w = args.size, args.size * 4 // 3
    images = [
        Image.fromarray(rng.integers(0, 255, (h - 8 * i, w - 12 * i, 3), dtype=np.uint8)) for i in range(8)
    ]

    def bare(batch: list[Image.Image]) -> Any:
        with torch.inference_mode():
            out = model(**proc(images=batch, return_tensors="pt"))
        return proc.post_process_object_detection(
            out, threshold=0.5, target_sizes=[im.size[::-1] for im in batch]
        )

    runners: dict[str, Callable[[list[Image.Image]], Any]] = {
        "visionkit": lambda b: det.detect(b),
        "pipeline": lambda b: pipe(b, threshold=0.5) if len(b) > 1 else pipe(b[0], threshold=0.5),
        "bare": bare,
    }
    for fn in runners.values():  # warm-up
        fn(images[:1])
        fn(images)
    single: dict[str, list[float]] = {k: [] for k in runners}
    batch8: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(args.rounds):
        order = list(runners)[r % 3 :] + list(runners)[: r % 3]  # rotate who goes first
        for name in order:
            one = images[r % 8 : r % 8 + 1]
            single[name].append(_timed(lambda n=name, one=one: runners[n](one)))
            batch8[name].append(_timed(lambda n=name: runners[n](images)))
    med = {k: statistics.median(v) * 1e3 for k, v in single.items()}
    thr = {k: 8 / statistics.median(v) for k, v in batch8.items()}
    print(
        f"model: {det.source}  params: {sum(p.numel() for p in model.parameters()):,}  threads: {args.threads}"
    )
    print(f"{'runner':<10} {'batch-1 median ms':>18} {'batch-8 img/s':>14}")
    for k in runners:
        print(f"{k:<10} {med[k]:>18.2f} {thr[k]:>14.2f}")
    print(f"visionkit / pipeline (batch 1): {med['visionkit'] / med['pipeline']:.3f}  (target <= 0.90)")
    print(f"visionkit / bare     (batch 1): {med['visionkit'] / med['bare']:.3f}  (target <= 1.10)")
    print(
        f"batch-8 throughput visionkit / pipeline: {thr['visionkit'] / thr['pipeline']:.2f}x, "
        f"/ bare: {thr['visionkit'] / thr['bare']:.2f}x"
    )


if __name__ == "__main__":
    main()
