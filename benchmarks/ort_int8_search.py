"""Accuracy-aware ONNX Runtime INT8 on real data: the search's steps on yolov8n-dq and coco-mini.

With ``max_drop`` the onnxruntime runtime quantizes the whole graph, scores it with the accuracy gate
(mAP50-95 against coco-mini's annotations), and while the drop exceeds the budget keeps the worst-
quantized nodes float, 1, 2, 4, ... at a time (``accuracy_control_iterations`` steps at most). This
script runs that search once in a fresh cache and prints every step (float nodes, AP, drop, latency)
and the ranking's head::

    VISIONKIT_WEIGHTS=../shared/data/weights VISIONKIT_DATA=../shared/data \\
        python benchmarks/ort_int8_search.py --imgsz 640 --max-drop 0.3 --threads 2

Latencies are the search's own cheap timing (median of 5 forwards on the first gate image after a
warm-up, in the same process, one after another): compare steps with each other, not with other runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _paths() -> tuple[Path, Path]:
    wdir, ddir = os.environ.get("VISIONKIT_WEIGHTS"), os.environ.get("VISIONKIT_DATA")
    if not wdir or not ddir:
        sys.exit("set VISIONKIT_WEIGHTS and VISIONKIT_DATA (e.g. ../shared/data/weights and ../shared/data)")
    weights = Path(wdir.split(os.pathsep)[0]) / "yolov8n-dq.pt"
    data = Path(ddir) / "coco-mini"
    if not weights.exists() or not data.is_dir():
        sys.exit(f"{weights} or {data} missing")
    return weights, data


def main(argv: list[str] | None = None) -> int:
    """Run the search once and print its steps."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--max-drop", type=float, default=0.3, help="accuracy budget, mAP points")
    parser.add_argument("--iterations", type=int, default=6, help="accuracy_control_iterations")
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the search report here")
    args = parser.parse_args(argv)

    from visionkit_onnx._search import AccuracyGateError

    import visionkit

    weights, data = _paths()
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="vk-search-"))
    t0 = time.perf_counter()
    try:
        be = visionkit.load(
            "yolo",
            weights=str(weights),
            precision="int8",
            imgsz=args.imgsz,
            runtime_options={
                "cache_dir": cache,
                "calib": data / "images",
                "calib_images": args.calib_images,
                "annotations": data / "instances.json",
                "val_images": args.val_images,
                "threads": args.threads,
                "max_drop": args.max_drop,
                "accuracy_control_iterations": args.iterations,
            },
        )
    except AccuracyGateError as exc:
        print(f"no step held max_drop={args.max_drop}: {exc}\n")
        if exc.search is not None:
            _table(exc.search, args)
        return 1
    seconds = time.perf_counter() - t0
    rt = be.runtime
    print(
        f"yolov8n-dq imgsz {args.imgsz}, coco-mini ({rt['gate']['images']} gate images, "
        f"{args.calib_images} calibration images), {args.threads} threads, max_drop {args.max_drop}: "
        f"{'cache hit' if rt['cache_hit'] else f'built and searched in {seconds:.0f} s'}"
    )
    _table(rt["search"], args)
    print(
        f"\nfloat nodes in all: {rt['float_nodes']} (head tail + the search's {len(rt['search']['kept_float'])})"
    )
    return 0


def _table(search: dict[str, Any], args: argparse.Namespace) -> None:
    """The steps and the ranking's head; the report as JSON with ``--json``."""
    print(
        f"torch fp32: {search['metric']} {search['reference']:.2f}, forward {search.get('reference_ms')} ms\n"
    )
    print("| step | float nodes (search) | mAP50-95 | drop | forward ms | passed | nodes added |")
    print("|---|---|---|---|---|---|---|")
    for s in search["steps"]:
        added = ", ".join(s["added"]) if s["added"] else "(plain INT8)" if s["step"] == 0 else ""
        print(
            f"| {s['step']} | {s['float_nodes']} | {s['candidate']:.2f} | {s['drop']:.2f} | {s['latency_ms']} "
            f"| {'yes' if s['passed'] else 'no'} | {added} |"
        )
    print(f"\nranking head ({search['ranked_nodes']} nodes ranked on the calibration images):")
    for r in search["ranking"][:12]:
        print(f"  {r['error']:.3g}  {r['op_type']:<8} {r['node']}")
    if args.json:
        args.json.write_text(json.dumps(search, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
