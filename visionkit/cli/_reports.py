"""``visionkit eval``, ``bench`` and ``compare``: reports.

Every command prints a table, or the report's JSON with
``--json``, and can write the JSON to a file with ``--output``. Exit codes: 0 success, 1 the report
was printed but some configuration (``bench``) or row (``compare``) failed, 2 error (one ``error:``
line), 130 interrupted (Ctrl-C; the partial report is still printed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visionkit.cli._args import add_load_flags, cli_weights, options_from_args, parse_kv, writable_file
from visionkit.errors import DatasetError, InvalidOptionError, VisionKitError
from visionkit.images import list_images
from visionkit.loading import registry_with

__all__ = ["add_commands"]

# As ``visionkit.cli.main`` returns for the other commands.
EXIT_OK, EXIT_FAILURES, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def add_commands(subparsers: Any) -> None:
    """Add ``eval``, ``bench`` and ``compare`` to an ``argparse`` subparsers object."""
    _add_eval(subparsers)
    _add_bench(subparsers)
    _add_compare(subparsers)


# -- shared arguments -------------------------------------------------------------------------------
def _add_common(p: argparse.ArgumentParser) -> None:
    add_load_flags(p, precision=None, runtime_options=True, plugins=True)
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--output", type=Path, metavar="FILE", help="also write the report's JSON to FILE")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _emit(report: Any, args: argparse.Namespace, rows: Sequence[Any] = (), what: str = "") -> int:
    """Print (and save) ``report``; the exit status also says whether any of ``rows`` has an ``error``."""
    text = report.to_json()
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    print(text if args.json else report.table())
    if getattr(report, "interrupted", False):
        return EXIT_INTERRUPTED
    failed = [r for r in rows if r.error]
    if failed:  # a report of errors is not a success: scripts and CI must see it
        print(
            f"{len(failed)} of {len(rows)} {what}{'s' if len(rows) > 1 else ''} failed (see the table)",
            file=sys.stderr,
        )
        return EXIT_FAILURES
    return EXIT_OK


def _check_outputs(args: argparse.Namespace) -> None:
    """Output files and numeric flags checked before minutes of work, not after."""
    for flag in ("output", "results", "plot"):
        value = getattr(args, flag, None)
        if value is not None:
            writable_file(str(value), f"--{flag}")
    limit = getattr(args, "limit", None)
    if limit is not None and limit < 1:
        raise InvalidOptionError(f"--limit must be a number of images, at least 1, but got {limit}.")


def _guard(fn: Any) -> Any:
    """Turn visionkit errors into one ``error:`` line and exit code 2; Ctrl-C before any result into 130."""

    def run(args: argparse.Namespace) -> int:
        try:
            _check_outputs(args)
            return int(fn(args))
        except VisionKitError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print("interrupted before any result was ready", file=sys.stderr)
            return EXIT_INTERRUPTED

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


# -- eval --------------------------------------------------------------------------------------------
def _add_eval(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="accuracy on a labelled dataset: COCO mAP, top-1/top-5, or mIoU",
        description=(
            "Evaluate a backend. COCO: bbox mAP (+ segm for instance segmenters) with pycocotools, score "
            "threshold 0.001 and 100 detections per image (COCO practice). ImageFolder: top-1/top-5. "
            "Masks: mIoU from one dataset-wide confusion matrix."
        ),
    )
    p.add_argument("backend", help="backend name, optionally with a precision: yolo, yolo:int8")
    data = p.add_argument_group("dataset (give one)")
    data.add_argument("--coco", type=Path, metavar="JSON", help="COCO instances file (with --images)")
    data.add_argument("--imagefolder", type=Path, metavar="DIR", help="root/<class name>/<image> folder")
    data.add_argument("--masks", type=Path, metavar="DIR", help="label-image masks named like their images")
    data.add_argument("--images", type=Path, metavar="DIR", help="images folder for --coco or --masks")
    p.add_argument("--precision", default=None, help="fp32 (default), fp16, int8 ...")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    coco = p.add_argument_group("COCO options")
    coco.add_argument("--score-threshold", type=float, default=0.001, help="minimum score (default 0.001)")
    coco.add_argument("--max-dets", type=int, default=100, help="detections kept per image (default 100)")
    coco.add_argument("--no-segm", action="store_true", help="bbox only, even for instance segmenters")
    coco.add_argument(
        "--results", type=Path, metavar="FILE", help="write the COCO results JSON that was scored"
    )
    seg = p.add_argument_group("segmentation options")
    seg.add_argument(
        "--ignore-index", type=int, default=255, help="mask value to ignore (default 255; -1: none)"
    )
    seg.add_argument("--num-classes", type=int, help="classes in the masks (default: the model's)")
    _add_common(p)
    p.set_defaults(func=_guard(_cmd_eval))


def _cmd_eval(args: argparse.Namespace) -> int:
    """Run ``visionkit eval``."""
    from visionkit.compare import parse_spec
    from visionkit.evaluation import evaluate

    name, spec_precision = parse_spec(args.backend)
    kwargs: dict[str, Any] = {}
    if args.coco is not None:
        kwargs = {
            "coco": args.coco,
            "images": args.images,
            "score_threshold": args.score_threshold,
            "max_dets": args.max_dets,
            "results_path": args.results,
        }
        if args.no_segm:
            kwargs["segm"] = False
    elif args.masks is not None:
        kwargs = {
            "masks": args.masks,
            "images": args.images,
            "num_classes": args.num_classes,
            "ignore_index": None if args.ignore_index < 0 else args.ignore_index,
        }
    elif args.imagefolder is not None:
        kwargs = {"imagefolder": args.imagefolder, "images": args.images}
    report = evaluate(
        name,
        registry=registry_with(args.plugins),
        weights=cli_weights(args.weights),
        device=args.device,
        precision=args.precision or spec_precision or "fp32",
        options=options_from_args(args),
        runtime_options=parse_kv(args.runtime_option),
        limit=args.limit,
        progress=False if args.no_progress else None,
        **kwargs,
    )
    return _emit(report, args)


# -- bench -------------------------------------------------------------------------------------------
def _add_bench(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="latency (median/p90/p99, jitter), throughput, per-stage time, peak memory, model size",
        description=(
            "Benchmark a backend over every precision x imgsz x batch. Warm-up runs are discarded; each "
            "configuration runs in a fresh subprocess so its peak memory is its own, with torch/OpenMP/ONNX "
            "Runtime threads pinned to the same count."
        ),
    )
    p.add_argument("backend", help="backend name")
    p.add_argument("--imgsz", type=int, nargs="+", help="model input sizes, e.g. --imgsz 320 640")
    p.add_argument("--precision", nargs="+", default=["fp32"], help="e.g. --precision fp32 int8")
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="images per call, e.g. --batch 1 8")
    p.add_argument("--runs", type=int, default=20, help="timed runs per configuration (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="discarded warm-up runs (default 3)")
    p.add_argument("--threads", type=int, help="threads for torch/OpenMP/ORT (default: physical cores)")
    p.add_argument(
        "--images", type=Path, nargs="+", metavar="PATH", help="image files or a folder to time on"
    )
    p.add_argument("--task", help="task verb to time (default: the backend's main task)")
    p.add_argument(
        "--no-isolate", action="store_true", help="run in this process (faster; memory not isolated)"
    )
    p.add_argument("--timeout", type=float, help="seconds allowed per configuration")
    p.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds over the configurations (default 1)"
    )
    _add_common(p)
    p.set_defaults(func=_guard(_cmd_bench))


def _image_list(paths: Sequence[Path] | None, limit: int = 8) -> list[str] | None:
    if not paths:
        return None
    out: list[str] = []
    for p in paths:
        if p.is_dir():
            out += [str(f) for f in list_images(p)][:limit]
        else:
            out.append(str(p))
    if not out:
        raise DatasetError(f"No image files found in {[str(p) for p in paths]}.")
    return out


def _timing_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments ``bench`` and ``compare`` share, from their common flags."""
    return {
        "runs": args.runs,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "device": args.device,
        "weights": cli_weights(args.weights),
        "options": options_from_args(args),
        "runtime_options": parse_kv(args.runtime_option),
        "threads": args.threads,
        "plugins": args.plugins,
        "isolate": False if args.no_isolate else None,
        "progress_bar": False if args.no_progress else None,
    }


def _cmd_bench(args: argparse.Namespace) -> int:
    """Run ``visionkit bench``."""
    from visionkit.bench import benchmark

    report = benchmark(
        args.backend,
        imgsz=args.imgsz,
        precision=args.precision,
        batch=args.batch,
        images=_image_list(args.images),
        task=args.task,
        timeout=args.timeout,
        **_timing_kwargs(args),
    )
    return _emit(report, args, report.results, "configuration")


# -- compare -----------------------------------------------------------------------------------------
def _add_compare(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare",
        help="accuracy vs latency vs memory of several backends/precisions in one table (+ plot)",
        description=(
            "Evaluate (COCO mAP) and benchmark each NAME[:PRECISION] spec, print one trade-off table with the "
            "change against the first spec, and optionally a latency-vs-AP scatter plot."
        ),
    )
    p.add_argument("specs", nargs="+", metavar="SPEC", help="backend[:precision], e.g. yolo yolo:int8 detr")
    p.add_argument("--coco", type=Path, required=True, metavar="JSON", help="COCO instances file")
    p.add_argument("--images", type=Path, required=True, metavar="DIR", help="folder of the COCO images")
    p.add_argument("--imgsz", type=int, nargs="+", help="model input sizes to compare at")
    p.add_argument("--batch", type=int, default=1, help="images per call when benchmarking (default 1)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per benchmark (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="discarded warm-up runs (default 3)")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--threads", type=int, help="threads for torch/OpenMP/ORT (default: physical cores)")
    p.add_argument(
        "--no-isolate", action="store_true", help="benchmark in this process (memory not isolated)"
    )
    p.add_argument(
        "--rounds", type=int, default=1, help="interleaved benchmark rounds over the specs (default 1)"
    )
    p.add_argument("--plot", type=Path, metavar="PNG", help="write a latency-vs-AP scatter plot")
    _add_common(p)
    p.set_defaults(func=_guard(_cmd_compare))


def _cmd_compare(args: argparse.Namespace) -> int:
    """Run ``visionkit compare``."""
    from visionkit.compare import compare

    report = compare(
        args.specs,
        coco=args.coco,
        images=args.images,
        imgsz=args.imgsz,
        batch=args.batch,
        limit=args.limit,
        plot=args.plot,
        **_timing_kwargs(args),
    )
    return _emit(report, args, report.entries, "row")
