"""visionkit's torchvision backends vs the bare torchvision call, and Mask R-CNN vs Faster R-CNN latency.

For each model and input size, one round times (in alternating order, so machine noise hits both alike):

* visionkit: ``backend.detect(img)`` / ``segment_instances(img)`` from an RGB ndarray (image checks,
  transforms, forward, thresholding masks, building typed results);
* bare: ``model([weights.transforms()(tensor)])`` on the same model object and the same pixels.

Reports median per-image latency over the rounds and the ratio visionkit / bare (target <= 1.05).
Mask R-CNN vs Faster R-CNN: the same backbone, RPN and box head; the ratio is the cost of the mask
branch (RoIAlign at 14x14, four 3x3 convs, a deconv, and pasting each mask back at image size).

Random weights are used unless ``--weights DIR`` holds the official checkpoints: latency does not
depend on the weights' values, except through the number of boxes kept, so the score threshold is
set to keep ``--detections`` boxes (the same for both models) to compare like with like.

    python benchmarks/torchvision_overhead.py                      # default 800 px and 480 px, 5 rounds
    python benchmarks/torchvision_overhead.py --sizes 800 320 --rounds 9 --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import visionkit
from visionkit.testing import make_test_image


def _image() -> tuple[np.ndarray, str]:
    data = os.environ.get("VISIONKIT_DATA")
    if data:
        path = Path(data) / "coco-mini" / "images" / "000000039769.png"  # two cats, 640x480
        if path.exists():
            return visionkit.load_image(path), path.name
    return make_test_image(480, 640, seed=0), "synthetic 640x480"


_CLOCK = time.perf_counter


def _timed(fn: Callable[[], Any]) -> float:
    t0 = _CLOCK()
    fn()
    return (_CLOCK() - t0) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["maskrcnn", "fasterrcnn"])
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=[800, 480], help="min_size (800: the default)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--detections", type=int, default=20, help="boxes kept per image (via the threshold)")
    parser.add_argument(
        "--weights", default=None, help="directory with the official .pth files (else random)"
    )
    parser.add_argument("--json", default=None, help="write the medians here")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time, steadier than wall time on a shared machine (use with --threads 1)",
    )
    args = parser.parse_args()
    global _CLOCK
    _CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    image, image_name = _image()
    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1)
    if args.weights:
        os.environ["VISIONKIT_WEIGHTS"] = args.weights

    cases: dict[tuple[str, int], dict[str, Callable[[], Any]]] = {}
    for name in args.models:
        for size in args.sizes:
            torch.manual_seed(0)  # the same random network at every size
            backend = visionkit.load(
                name,
                weights="DEFAULT" if args.weights else None,
                score_threshold=0.0,
                detections_per_image=args.detections,
                min_size=size,
                max_size=max(1333 * size // 800, size),
            )
            verb = backend.segment_instances if name == "maskrcnn" else backend.detect
            transform = backend.weights_member.transforms()

            def vk(verb: Any = verb) -> Any:
                return verb(image)

            def bare(model: Any = backend.model, transform: Any = transform) -> Any:
                with torch.inference_mode():
                    return model([transform(tensor)])

            vk()  # warm-up (oneDNN primitives, allocator); also sets the model's knobs to the load-time options
            bare()
            cases[(name, size)] = {"visionkit": vk, "bare": bare}

    times: dict[tuple[str, int, str], list[float]] = {}
    for r in range(args.rounds):
        for key, fns in cases.items():
            order = ["visionkit", "bare"] if r % 2 == 0 else ["bare", "visionkit"]
            for which in order:
                times.setdefault((*key, which), []).append(_timed(fns[which]))

    print(
        f"image: {image_name}; torch {torch.__version__}, {args.threads} threads; {args.rounds} interleaved rounds"
    )
    print(f"{'model':<12} {'min_size':>8} {'visionkit ms':>13} {'bare ms':>9} {'ratio':>6}")
    report: dict[str, Any] = {"image": image_name, "threads": args.threads, "rounds": args.rounds}
    report.update(clock=args.clock, rows=[])
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, size in cases:
        vk_ms, bare_ms = medians[(name, size, "visionkit")], medians[(name, size, "bare")]
        print(f"{name:<12} {size:>8} {vk_ms:>13.1f} {bare_ms:>9.1f} {vk_ms / bare_ms:>6.3f}")
        report["rows"].append({"model": name, "min_size": size, "visionkit_ms": vk_ms, "bare_ms": bare_ms})
    if {"maskrcnn", "fasterrcnn"} <= set(args.models):
        print("\nMask R-CNN / Faster R-CNN per-image latency (visionkit, same detections kept):")
        for size in args.sizes:
            ratio = medians[("maskrcnn", size, "visionkit")] / medians[("fasterrcnn", size, "visionkit")]
            print(f"  min_size {size}: {ratio:.2f}x")
            report[f"mask_over_faster_{size}"] = ratio
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
