"""The ``visionkit`` command line: ``list``, ``info``, ``predict``, ``export`` (+ report commands).

Errors visionkit raises on purpose are printed as one message and exit with status 2 — no traceback
(set ``VISIONKIT_TRACEBACK=1`` to see one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visionkit.errors import InvalidOptionError, VisionKitError
from visionkit.protocols import Task
from visionkit.registry import get_registry, import_string

__all__ = ["main"]

# Which verb `predict` uses when --task is not given: the richest output the backend offers.
_TASK_PREFERENCE = (
    Task.SEGMENT_INSTANCES,
    Task.DETECT,
    Task.SEGMENT_SEMANTIC,
    Task.CLASSIFY,
    Task.SEGMENT_PROMPT,
)


def parse_option(item: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` → ``(key, value)``; the value is JSON when it parses as JSON, else the string."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise InvalidOptionError(f"Option {item!r} must look like KEY=VALUE (e.g. conf=0.5).")
    try:
        return key.strip(), json.loads(raw)  # numbers, true/false, null, lists
    except json.JSONDecodeError:
        return key.strip(), raw  # plain strings need no quotes: device=cpu


def parse_kv(items: Sequence[str] | None) -> dict[str, Any]:
    """Several ``KEY=VALUE`` strings (``-O``/``-R`` flags) as a dict."""
    return dict(parse_option(item) for item in items or ())


def parse_floats(text: str, n: int, what: str) -> list[float]:
    """``"x,y"`` → ``[x, y]``, exactly ``n`` numbers."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != n:
        raise InvalidOptionError(f"{what} {text!r} must be {n} comma-separated numbers.")
    return vals


def prompt_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """``segment_prompt`` keyword arguments from ``--point``/``--box`` flags (points are positive)."""
    points = [parse_floats(p, 2, "--point") for p in getattr(args, "point", None) or []]
    boxes = [parse_floats(b, 4, "--box") for b in getattr(args, "box", None) or []]
    if not points and not boxes:
        return None
    prompt: dict[str, Any] = {}
    if points:
        prompt["points"], prompt["labels"] = points, [1] * len(points)
    if boxes:
        prompt["boxes"] = boxes
    return prompt


# -- list / info ------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    reg = get_registry()
    specs = reg.specs(args.task, available_only=args.available)
    if args.json:
        payload = {
            "backends": [s.to_dict() for s in specs],
            "runtimes": [
                {"name": r.name, "precisions": list(r.precisions), "plugin": r.plugin}
                for r in reg.runtimes.values()
            ],
            "plugin_errors": [str(e) for e in reg.errors],
            "conflicts": [str(c) for c in reg.conflicts],
        }
        print(json.dumps(payload, indent=2))
        return 0
    if not specs:
        print("No backends found." + ("" if args.task is None else f" (task {args.task})"))
    rows = [("NAME", "TASKS", "STATUS", "FROM", "DESCRIPTION")]
    for s in specs:
        status = "ok" if s.available else f"missing {','.join(s.missing())}"
        name = s.name + (f" ({', '.join(s.aliases)})" if s.aliases else "")
        rows.append(
            (name, ",".join(t.value for t in s.tasks), status, s.distribution or s.plugin, s.description)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:4])) + "  " + r[4])
    if reg.runtimes:
        print(
            "\nruntimes: " + ", ".join(f"{r.name} ({'/'.join(r.precisions)})" for r in reg.runtimes.values())
        )
    for err in reg.errors:
        print(f"\nwarning: {err}", file=sys.stderr)
    for conflict in reg.conflicts:
        print(f"\nwarning: {conflict}", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    reg = get_registry()
    spec = reg.get(args.name)
    info = spec.to_dict()
    if spec.options:
        model = import_string(spec.options, owner=spec.name, install=spec.install, plugin=spec.plugin)
        info["options"] = {
            k: {"default": repr(f.default), "description": f.description or ""}
            for k, f in model.model_fields.items()
        }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    for key, value in info.items():
        if key == "options":
            print("options:")
            for opt, meta in value.items():
                print(f"  {opt} = {meta['default']}  {meta['description']}")
        else:
            print(f"{key}: {value}")
    return 0


# -- predict ----------------------------------------------------------------------------------------
def _describe(result: Any) -> list[str]:
    from visionkit.results import Classifications, Detections, PromptMasks, SemanticMask

    if isinstance(result, Detections):
        lines = [f"{len(result)} detections"]
        for d in result:
            box = ", ".join(f"{v:.1f}" for v in d.xyxy)
            lines.append(f"  {d.class_name}: {d.confidence:.3f} at [{box}]")
        return lines
    if isinstance(result, Classifications):
        return [f"top-{len(result)}"] + [f"  {name}: {conf:.3f}" for _, name, conf in result]
    if isinstance(result, SemanticMask):
        return ["classes present: " + ", ".join(result.present_classes())]
    if isinstance(result, PromptMasks):
        return [f"{len(result)} masks"] + [
            f"  prompt {int(p)}: score {float(s):.3f}, {int(m.sum())} px"
            for p, s, m in zip(result.prompt_index, result.score, result.mask, strict=True)
        ]
    return [repr(result)]


def cmd_predict(args: argparse.Namespace) -> int:
    from visionkit._cli_scale import predict_stream, wants_stream

    if wants_stream(args):  # folders, globs, videos, --out/--ray: streamed, resumable, batched
        return predict_stream(args)
    import visionkit

    options = parse_kv(args.option)
    backend = visionkit.load(
        args.name,
        task=args.task,
        weights=args.weights if args.weights is not None else visionkit.DEFAULT,
        device=args.device,
        precision=args.precision,
        **options,
    )
    tasks = tuple(getattr(backend, "tasks", ()))
    task = Task.parse(args.task) if args.task else next(t for t in _TASK_PREFERENCE if t in tasks)
    records = []
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    for source in args.images:
        if task is Task.SEGMENT_PROMPT:
            result = backend.segment_prompt(source, **(prompt_from_args(args) or {}))
        else:
            result = getattr(backend, task.value)(source)
        print(f"{source}: " + "\n".join(_describe(result)))
        records.append(
            {
                "source": str(source),
                "task": task.value,
                "type": type(result).__name__,
                "result": result.to_dict(),
            }
        )
        if save_dir:
            from visionkit.draw import annotate

            out = save_dir / (Path(str(source)).stem + ".jpg")
            annotate(source, result).save(out, quality=90)
            print(f"  annotated image: {out}")
    if args.json:
        Path(args.json).write_text(json.dumps(records))
        print(f"wrote {len(records)} result(s) to {args.json}")
    return 0


# -- export -----------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    import visionkit

    reg = get_registry()
    spec = reg.get(args.name)
    runtimes = [r for r in reg.runtimes.values() if args.precision in r.precisions and r.exporter]
    if args.runtime:
        runtimes = [r for r in runtimes if r.name == args.runtime]
    if not runtimes:
        raise InvalidOptionError(
            f"No installed runtime can export precision {args.precision!r}"
            + (f" with runtime {args.runtime!r}" if args.runtime else "")
            + ". Install one: `pip install visionkit-onnx`."
        )
    rt = runtimes[0]
    backend = visionkit.load(
        spec.name,
        weights=args.weights if args.weights is not None else visionkit.DEFAULT,
        device=args.device,
        **parse_kv(args.option),
    )
    runtime_options = parse_kv(args.runtime_option)
    if args.calib:
        runtime_options["calib"] = args.calib
    if args.max_drop is not None:
        runtime_options["max_drop"] = args.max_drop
    exporter = (
        rt.exporter
        if callable(rt.exporter)
        else import_string(rt.exporter or "", owner=rt.name, install=rt.install)
    )
    report = exporter(backend, precision=args.precision, output=args.output, **runtime_options)
    print(json.dumps(report, indent=2, default=str))
    return 0


# -- parser -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionkit", description="One typed API over computer-vision models."
    )
    parser.add_argument("--version", action="version", version=f"visionkit {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list installed backends (imports no model library)")
    p.add_argument("--task", help="only backends doing this task (detect, classify, segment_instances ...)")
    p.add_argument("--available", action="store_true", help="only backends whose dependencies are installed")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="everything known about one backend, before loading it")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights", help="weights path or name (default: the backend's default)")
    common.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps, auto")
    common.add_argument(
        "-O", "--option", action="append", metavar="KEY=VALUE", help="backend option (repeatable)"
    )

    p = sub.add_parser("predict", parents=[common], help="run a backend on images, print and save results")
    p.add_argument("name", help="backend name or alias")
    p.add_argument("images", nargs="+", help="image files, directories, glob patterns or videos")
    p.add_argument("--task", help="task to run (default: the richest the backend offers)")
    p.add_argument("--precision", default="fp32", help="fp32, fp16, int8 ...")
    p.add_argument("--json", metavar="PATH", help="write all results as JSON")
    p.add_argument("--save-dir", metavar="DIR", help="write annotated images here")
    p.add_argument("--point", action="append", metavar="X,Y", help="prompt point (prompt segmenters)")
    p.add_argument("--box", action="append", metavar="X1,Y1,X2,Y2", help="prompt box (prompt segmenters)")
    from visionkit._cli_scale import add_commands as add_scale_commands
    from visionkit._cli_scale import add_predict_arguments

    add_predict_arguments(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", parents=[common], help="export a backend to another runtime/precision")
    p.add_argument("name")
    p.add_argument("--precision", default="int8")
    p.add_argument("--runtime", help="runtime name (default: the first that offers the precision)")
    p.add_argument("--calib", help="folder of calibration images (int8)")
    p.add_argument("--max-drop", type=float, help="refuse a model losing more AP points than this")
    p.add_argument("-o", "--output", required=True, help="output file")
    p.add_argument("-R", "--runtime-option", action="append", metavar="KEY=VALUE", help="runtime option")
    p.set_defaults(func=cmd_export)

    from visionkit._cli_reports import add_commands as add_report_commands

    add_report_commands(sub)  # eval, bench, compare
    add_scale_commands(sub)  # serve
    return parser


def _version() -> str:
    from visionkit import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``visionkit`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VisionKitError as exc:
        if os.environ.get("VISIONKIT_TRACEBACK") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
