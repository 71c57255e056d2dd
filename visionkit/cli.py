"""The ``visionkit`` command line: ``list``, ``info``, ``predict``, ``export`` (+ report commands).

Errors are printed as one ``error: ...`` line and exit with status 2 — no traceback (set
``VISIONKIT_TRACEBACK=1`` to see one). :func:`main` lists every exit status.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from visionkit.errors import BackendError, InvalidOptionError, VisionKitError
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


#: ``--trust-pickle`` in every command that loads a backend: the backend option ``trust_pickle=true``.
TRUST_PICKLE_HELP = (
    "load weights that need code to run (pickled checkpoints, eval-able model configs) from a file you "
    "trust; the same as -O trust_pickle=true"
)


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
    """``visionkit predict``: explicit files here; folders, globs, videos and ``--out`` are streamed.

    Every file is tried: one that cannot be predicted is reported (``failed: ...``) and skipped, the
    others are still printed, annotated and saved. Exit status: 0 all predicted, 1 some failed, 2 none
    could be predicted (or a usage error), 130 interrupted (``--json`` then holds the results so far).
    """
    from visionkit._cli_scale import (
        annotated_names,
        check_prompt_task,
        cli_weights,
        predict_stream,
        wants_stream,
    )

    if wants_stream(args):  # folders, globs, videos, --out/--ray: streamed, resumable, batched
        return predict_stream(args)
    import visionkit
    from visionkit.stream import _describe_error

    options = parse_kv(args.option)
    json_path = _writable_file(args.json, "--json") if args.json else None
    backend = visionkit.load(
        args.name,
        task=args.task,
        weights=cli_weights(args.weights),
        device=args.device,
        precision=args.precision,
        **options,
    )
    tasks = tuple(getattr(backend, "tasks", ()))
    task = Task.parse(args.task) if args.task else next((t for t in _TASK_PREFERENCE if t in tasks), None)
    if task is None:
        raise InvalidOptionError(f"Backend {args.name!r} declares no task; pass --task.")
    check_prompt_task(args, task)
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    name_of = annotated_names([str(s) for s in args.images])
    records: list[dict[str, Any]] = []
    failed: list[str] = []
    finished = False
    try:
        for source in args.images:
            try:
                if task is Task.SEGMENT_PROMPT:
                    result = backend.segment_prompt(source, **(prompt_from_args(args) or {}))
                else:
                    result = getattr(backend, task.value)(source)
            except Exception as exc:  # one bad file costs only itself, as in the streamed path
                failed.append(f"{source}: {_describe_error(exc)}")
                if len(args.images) > 1:
                    print(f"failed: {failed[-1]}", file=sys.stderr, flush=True)
                    continue
                if isinstance(exc, VisionKitError):
                    raise  # the only input: its error is the command's error
                raise BackendError(failed[-1]) from exc
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

                out = save_dir / name_of(str(source), None)
                annotate(source, result).save(out, quality=90)
                print(f"  annotated image: {out}")
        finished = True
    except KeyboardInterrupt:
        where = f"; results so far in {json_path}" if json_path and records else ""
        print(
            f"\ninterrupted after {len(records) + len(failed)} of {len(args.images)} input(s){where}",
            file=sys.stderr,
        )
        return 130
    finally:
        if json_path is not None and records:  # what was done is kept, whatever stopped the loop
            json_path.write_text(json.dumps(records))
            if finished:
                print(f"wrote {len(records)} result(s) to {json_path}")
    if failed:
        print(f"{len(records)} predicted, {len(failed)} failed", file=sys.stderr)
        if not records:
            raise VisionKitError(f"None of the {len(failed)} inputs could be predicted (listed above).")
        return 1
    return 0


def _writable_file(raw: str, flag: str) -> Path:
    """``raw`` as an output file path, checked before any work starts (parents are created)."""
    from visionkit.stream import _os_reason

    path = Path(raw)
    if path.is_dir():
        raise InvalidOptionError(f"{flag} {raw!r} is a directory; give a file name.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Really create a file there: permission bits do not tell root, /proc or a read-only mount.
        tempfile.TemporaryFile(dir=path.parent).close()
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), raw)
    except OSError as exc:
        raise InvalidOptionError(f"{flag} {raw!r} cannot be written: {_os_reason(path, exc)}.") from exc
    return path


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
    from visionkit._cli_scale import cli_weights

    backend = visionkit.load(
        spec.name,
        weights=cli_weights(args.weights),
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
class _Parser(argparse.ArgumentParser):
    """argparse with usage mistakes reported as one ``error: ...`` line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="visionkit", description="One typed API over computer-vision models.")
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

    common = _Parser(add_help=False)
    common.add_argument(
        "--weights", help="weights path or name (default: the backend's default; 'none': random init)"
    )
    common.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps, auto")
    common.add_argument(
        "-O", "--option", action="append", metavar="KEY=VALUE", help="backend option (repeatable)"
    )
    common.add_argument(
        "--trust-pickle",
        action="append_const",
        dest="option",
        const="trust_pickle=true",
        help=TRUST_PICKLE_HELP,
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
    from visionkit._cli_track import add_commands as add_track_commands

    add_track_commands(sub)  # track
    return parser


def _version() -> str:
    from visionkit import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``visionkit`` command; returns the exit status.

    0 success; 1 the command ran but some of its work failed (listed: ``predict`` files that could not
    be read, ``bench``/``compare`` configurations that errored); 2 an error, printed as one
    ``error: ...`` line on stderr with no traceback (``VISIONKIT_TRACEBACK=1`` shows it), and for
    argparse usage errors; 130 interrupted (Ctrl-C); 141 stdout closed early (``visionkit list | head``),
    quietly, as a command killed by SIGPIPE.
    """
    show_traceback = os.environ.get("VISIONKIT_TRACEBACK") == "1"
    try:
        args = build_parser().parse_args(argv)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here rather than in the interpreter's exit flush
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except KeyboardInterrupt:
        if show_traceback:
            raise
        print("\ninterrupted", file=sys.stderr)
        return 130
    except VisionKitError as exc:
        if show_traceback:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder the command cannot read or write: say which, no traceback
        if show_traceback:
            raise
        print(f"error: {_os_error_text(exc)}", file=sys.stderr)
        return 2


def _os_error_text(exc: OSError) -> str:
    """``[Errno 13] Permission denied: 'x'`` → ``Permission denied: 'x'`` (the errno helps nobody)."""
    if exc.strerror is None:
        return f"{type(exc).__name__}: {exc}"
    where = f": {os.fspath(exc.filename)!r}" if exc.filename is not None else ""
    return f"{exc.strerror}{where}."


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so Python's exit flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests) or already closed
        pass


if __name__ == "__main__":
    sys.exit(main())
