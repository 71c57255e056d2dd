"""COCO AP with and without sliced inference (visionkit.sliced), one model loaded once, same images.

    VISIONKIT_WEIGHTS=../shared/data/weights VISIONKIT_DATA=../shared/data \\
        python benchmarks/sliced_coco.py --weights yolov8n-dq.pt --tile 320 --json sliced.json

Rows: the plain backend, then each slicing recipe (tiles only; tiles + the whole image, merged by NMS on
IoU, by NMS on intersection-over-smaller, by NMM on intersection-over-smaller). Columns are pycocotools' AP, AP50, AP_S,
AP_M, AP_L (small < 32², large > 96² pixels) and seconds for the whole evaluation. The sliced recipes
cut the same crops, so the backend's answer for a crop is computed once and reused (``--no-memo`` to
recompute): only the merge differs between them. Without VISIONKIT_DATA it exits with a message (AP
needs the labelled images).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import visionkit
from visionkit.sliced import sliced


class Memo:
    """A Detector that answers a crop it has seen from memory (same pixels, same options)."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.name, self.tasks = backend, backend.name, backend.tasks
        self.options, self.precision = backend.options, backend.precision
        self.cache: dict[tuple[str, str], Any] = {}

    def with_options(self, overrides: dict[str, Any]) -> Any:
        return self.backend.with_options(overrides)

    def detect(self, images: list[Any], **options: Any) -> list[Any]:
        opts = json.dumps(options, sort_keys=True)
        keys = [(hashlib.sha1(im.tobytes() + str(im.shape).encode()).hexdigest(), opts) for im in images]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            for i, res in zip(todo, self.backend.detect([images[i] for i in todo], **options), strict=True):
                self.cache[keys[i]] = res
        return [self.cache[k] for k in keys]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="yolo")
    ap.add_argument("--weights", default="yolov8n-dq.pt")
    ap.add_argument("--tile", type=int, default=320)
    ap.add_argument("--overlap", type=float, default=0.2)
    ap.add_argument("--limit", type=int, default=None, help="first N images (default: all)")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 is fastest on a busy machine)"
    )
    ap.add_argument("--no-memo", action="store_true", help="run the backend for every recipe's crops")
    ap.add_argument(
        "--recipes",
        nargs="+",
        default=["plain", "tiles", "full-nms-iou", "full-nms-ios", "full-nmm-ios"],
        help="which rows to run (default: all)",
    )
    args = ap.parse_args(argv)
    data = os.environ.get("VISIONKIT_DATA")
    coco = Path(data or "") / "coco-mini"
    if not data or not (coco / "instances.json").is_file():
        print("set VISIONKIT_DATA to the data kit (needs coco-mini/instances.json); nothing to measure")
        return 0
    backend = visionkit.load(args.backend, weights=args.weights)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    tiled = backend if args.no_memo else Memo(backend)
    t, ov = args.tile, args.overlap
    every: dict[str, tuple[str, Any]] = {
        "plain": ("plain", backend),
        "tiles": (f"tiles {t}", sliced(tiled, tile=t, overlap=ov)),
        "full-nms-iou": (f"tiles {t} + full, NMS IoU", sliced(tiled, tile=t, overlap=ov, full_image=True)),
        "full-nms-ios": (
            f"tiles {t} + full, NMS IoS",
            sliced(tiled, tile=t, overlap=ov, full_image=True, match_metric="ios"),
        ),
        "full-nmm-ios": (
            f"tiles {t} + full, NMM IoS",
            sliced(tiled, tile=t, overlap=ov, full_image=True, merge="nmm", match_metric="ios"),
        ),
    }
    unknown = sorted(set(args.recipes) - set(every))
    if unknown:
        ap.error(f"unknown recipes {unknown}; choose from {sorted(every)}")
    recipes = [every[k] for k in args.recipes]
    rows = []
    print(f"{'recipe':<34}{'AP':>7}{'AP50':>7}{'AP_S':>7}{'AP_M':>7}{'AP_L':>7}{'seconds':>9}", flush=True)
    for label, det in recipes:
        t0 = time.perf_counter()
        rep = visionkit.evaluate(
            det, coco=coco / "instances.json", images=coco / "images", limit=args.limit, progress=False
        )
        b = rep.bbox  # type: ignore[union-attr]
        row = {
            "recipe": label,
            "ap": b.ap,
            "ap50": b.ap50,
            "ap_small": b.ap_small,
            "ap_medium": b.ap_medium,
            "ap_large": b.ap_large,
            "seconds": round(time.perf_counter() - t0, 1),
            "images": rep.num_images,
        }
        rows.append(row)
        print(
            f"{label:<34}"
            + "".join(
                f"{100 * (row[k] or 0):>7.1f}" for k in ("ap", "ap50", "ap_small", "ap_medium", "ap_large")
            )
            + f"{row['seconds']:>9.1f}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"tile": args.tile, "overlap": args.overlap, "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
