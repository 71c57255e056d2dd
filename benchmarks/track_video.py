"""Video tracking: visionkit.track(yolo) + ByteTrack vs ultralytics ``model.track``, and SAM 2 memory.

    VISIONKIT_WEIGHTS=../shared/data/weights VISIONKIT_DATA=../shared/data \\
        python benchmarks/track_video.py --frames 120 --sam2-frames 60 600 --json track.json

Needs ``lap`` for ultralytics' tracker (``pip install lap``).

Part 1 — detector tracking. The clip is a camera pan over one coco-mini photo (a 480x640 window sliding
across the image upscaled 1.5x), so objects move between frames. Both trackers see the same frames,
interleaved frame by frame (visionkit then ultralytics, each keeping its own track state), 2 torch
threads each (ultralytics' own thread setting is reset before every call). Reported: frames/s, median,
p99 and jitter (std) of the per-frame time, and the ratio visionkit / ultralytics.

Part 2 — SAM 2 (tiny random model, streamed): frames/s and peak RSS of a fresh process per clip length,
so the 600-frame run shows whether memory stays flat (it would grow with every frame without pruning).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def pan_clip(image_path: Path, n: int) -> list[np.ndarray]:
    """``n`` 480x640 RGB frames panning across ``image_path`` upscaled 1.5x."""
    from PIL import Image

    img = Image.open(image_path).convert("RGB")
    big = np.asarray(img.resize((int(img.width * 1.5), int(img.height * 1.5))))
    h, w = 480, 640
    max_y, max_x = max(0, big.shape[0] - h), max(0, big.shape[1] - w)
    frames = []
    for i in range(n):
        t = i / max(1, n - 1)
        y, x = int(max_y * t), int(max_x * (0.5 - 0.5 * np.cos(np.pi * t)))
        crop = big[y : y + h, x : x + w]
        frames.append(
            np.ascontiguousarray(np.pad(crop, ((0, h - crop.shape[0]), (0, w - crop.shape[1]), (0, 0))))
        )
    return frames


def stats(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {
        "fps": 1000.0 / statistics.mean(ms),
        "p50_ms": statistics.median(ms),
        "p99_ms": s[min(len(s) - 1, round(0.99 * (len(s) - 1)))],
        "jitter_ms": statistics.pstdev(ms),
    }


def detector_part(weights: Path, image: Path, n: int, threads: int) -> dict[str, Any]:
    import torch
    from ultralytics import YOLO

    import visionkit

    frames = pan_clip(image, n)
    torch.set_num_threads(threads)
    tracker = visionkit.track(visionkit.load("yolo", weights=str(weights)), "bytetrack")
    ul = YOLO(str(weights))
    bgr = [f[:, :, ::-1].copy() for f in frames]  # ultralytics takes OpenCV-order arrays
    for _ in range(2):  # warm both (first calls build the predictor / allocate)
        tracker.update(frames[0])
        ul.track(bgr[0], persist=False, tracker="bytetrack.yaml", verbose=False)
    tracker.reset()
    ul = YOLO(str(weights))
    vk_ms, ul_ms, vk_ids, ul_ids = [], [], set(), set()
    for i in range(n):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        dets = tracker.update(frames[i])
        vk_ms.append((time.perf_counter() - t0) * 1e3)
        vk_ids.update((dets.tracker_id if dets.tracker_id is not None else []).tolist())
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        res = ul.track(bgr[i], persist=True, tracker="bytetrack.yaml", verbose=False)[0]
        ul_ms.append((time.perf_counter() - t0) * 1e3)
        if res.boxes.id is not None:
            ul_ids.update(res.boxes.id.int().tolist())
    vk, ul_s = stats(vk_ms), stats(ul_ms)
    return {
        "frames": n,
        "visionkit": {**vk, "distinct_ids": len(vk_ids)},
        "ultralytics": {**ul_s, "distinct_ids": len(ul_ids)},
        "fps_ratio_vk_over_ul": vk["fps"] / ul_s["fps"],
    }


SAM2_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
import visionkit
torch.set_num_threads(int(sys.argv[2]))
n = int(sys.argv[1])
sam2 = visionkit.load("sam2", weights=None)
with torch.no_grad():  # random weights call every object absent; make it present so masks are produced
    sam2.video_model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(8.0)
rng = np.random.RandomState(0)
def frames():
    for t in range(n):
        img = (rng.rand(240, 320, 3) * 40).astype(np.uint8)
        x = 10 + (3 * t) % 250
        img[80:140, x:x + 50] = (230, 200, 40)
        yield img
t0 = time.perf_counter(); first = None
for f in sam2.track(frames(), prompts={1: {"frame": 0, "boxes": [[10, 80, 60, 140]]}}):
    if first is None: first = time.perf_counter()
dt = time.perf_counter() - first
print(json.dumps({"frames": n, "fps": (n - 1) / dt, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def sam2_part(lengths: list[int], threads: int) -> list[dict[str, Any]]:
    rows = []
    for n in lengths:
        out = subprocess.run(
            [sys.executable, "-c", SAM2_CHILD, str(n), str(threads)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=120, help="frames of the detector clip")
    ap.add_argument("--sam2-frames", type=int, nargs="*", default=[60, 600], help="SAM 2 clip lengths")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image", default="000000000139.jpg", help="coco-mini image the clip pans over")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    result: dict[str, Any] = {"cpu": os.cpu_count()}
    weights = Path(os.environ.get("VISIONKIT_WEIGHTS", "")) / "yolov8n-dq.pt"
    image = Path(os.environ.get("VISIONKIT_DATA", "")) / "coco-mini" / "images" / args.image
    if weights.is_file() and image.is_file():
        d = detector_part(weights, image, args.frames, args.threads)
        result["detector"] = d
        print(
            f"\nyolov8n-dq + ByteTrack, {d['frames']} frames of a 480x640 pan, batch 1, {args.threads} threads"
        )
        print(f"{'':12} {'fps':>7} {'p50 ms':>8} {'p99 ms':>8} {'jitter':>7} {'ids':>5}")
        for name in ("visionkit", "ultralytics"):
            r = d[name]
            print(
                f"{name:12} {r['fps']:7.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['jitter_ms']:7.1f} {r['distinct_ids']:5d}"
            )
        print(f"frames/s ratio visionkit / ultralytics: {d['fps_ratio_vk_over_ul']:.2f}x")
    else:
        print("VISIONKIT_WEIGHTS / VISIONKIT_DATA not set: skipping the detector part")
    if args.sam2_frames:
        rows = sam2_part(args.sam2_frames, args.threads)
        result["sam2"] = rows
        print("\nSAM 2 tiny (random weights), streamed, 240x320")
        for r in rows:
            print(f"{r['frames']:5d} frames: {r['fps']:6.1f} frames/s, peak RSS {r['peak_rss_mib']:.0f} MiB")
        if len(rows) > 1:
            print(
                f"peak RSS {rows[-1]['frames']} vs {rows[0]['frames']} frames: {rows[-1]['peak_rss_mib'] / rows[0]['peak_rss_mib']:.3f}x"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
