"""``visionkit tune``: time every recipe on this machine and these images, pick, cache the decision.

Exit codes: 0 a candidate was picked (failed candidates are listed in the table), 2 error (one
``error:`` line; also when the fp32 reference cannot run), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from visionkit.cli._args import add_load_flags, recipe_from_args, writable_file

__all__ = ["add_commands"]


def add_commands(subparsers: Any) -> None:
    """Add ``tune`` to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "tune",
        help="pick the fastest recipe within an accuracy budget on this machine (what precision='auto' uses)",
        description=(
            "Load every candidate recipe of a backend (its native precisions and every installed runtime's), "
            "measure each one's accuracy change against the backend's fp32 output and its end-to-end latency "
            "on the same images (interleaved rounds, medians), pick the fastest within --max-drop points, "
            "print the table and cache the decision for visionkit.load(..., precision='auto'). Each candidate "
            "runs in a fresh process of its own (its peak memory and thread pools are its own); "
            "`visionkit info NAME` shows the cached decision later."
        ),
    )
    p.add_argument("name", help="backend name, e.g. yolo")
    p.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="folder (or one image) to measure on (default: VISIONKIT_CALIB, else visionkit-onnx's bundled "
        "photos, else a synthetic image)",
    )
    p.add_argument(
        "--coco",
        type=Path,
        metavar="JSON",
        help="COCO instances file for --images: real AP instead of agreement with fp32 (detectors)",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        help="accuracy budget in points: AP points, %% top-1 agreement, mIoU points (default 1.0)",
    )
    p.add_argument(
        "--candidates",
        nargs="+",
        metavar="RECIPE",
        help="only these, e.g. --candidates bf16 onnxruntime:int8 openvino:bf16 (fp32 is always measured)",
    )
    p.add_argument("--runtime", help="only this runtime's precisions (plus the fp32 reference)")
    p.add_argument("--task", help="task verb to measure (default: the backend's main task)")
    p.add_argument("--runs", type=int, default=5, help="timed calls per candidate per round (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="discarded calls before each round (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the candidates (default 3)")
    p.add_argument("--max-images", type=int, default=8, help="images measured, the first N (default 8)")
    p.add_argument("--no-cache", action="store_true", help="do not write the decision to the cache")
    p.add_argument(
        "--no-isolate",
        action="store_true",
        help="run every candidate in this process (faster to start; no per-candidate memory, and one "
        "candidate's thread pools and memory can slow the next)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--output", type=Path, metavar="FILE", help="also write the report's JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_load_flags(p, precision=None, runtime_options=True, plugins=True)
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    """Run ``visionkit tune``."""
    from visionkit.tune import tune

    if args.output is not None:
        writable_file(str(args.output), "--output")
    report = tune(
        replace(recipe_from_args(args), runtime=args.runtime),
        images=args.images,
        coco=args.coco,
        max_drop=args.max_drop,
        candidates=args.candidates,
        runs=args.runs,
        warmup=args.warmup,
        rounds=args.rounds,
        max_images=args.max_images,
        plugins=args.plugins,
        isolate=not args.no_isolate,
        cache=not args.no_cache,
        log=None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True),
    )
    text = report.to_json()
    if args.output is not None:
        args.output.write_text(text)
    print(text if args.json else report.table())
    return 0
