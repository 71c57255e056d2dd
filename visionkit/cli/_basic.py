"""``visionkit list``, ``info`` and ``export``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from visionkit.cli._args import add_load_flags, parse_kv, recipe_from_args
from visionkit.errors import InvalidOptionError
from visionkit.registry import get_registry, import_string, resolve_options

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    """Add ``list``, ``info`` and ``export``."""
    p = sub.add_parser("list", help="list installed backends (imports no model library)")
    p.add_argument("--task", help="only backends doing this task (detect, classify, segment_instances ...)")
    p.add_argument("--available", action="store_true", help="only backends whose dependencies are installed")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "info",
        help="everything known about one backend, before loading it, and its cached precision='auto' decision",
        description=(
            "Print a backend's registration and options, and the precision='auto' decision `visionkit tune` "
            "cached for this machine and these --weights/-O/-R/--device/--task/--runtime (read from one "
            "small file: no model is built, no model library imported)."
        ),
    )
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    add_load_flags(p, precision=None, runtime_options=True)
    p.add_argument("--task", help="the task the decision was measured for (as given to `visionkit tune`)")
    p.add_argument(
        "--runtime", help="the runtime the decision was restricted to (`visionkit tune --runtime`)"
    )
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="export a backend to another runtime/precision")
    p.add_argument("name")
    add_load_flags(p, precision="int8", runtime_options=True)
    p.add_argument("--runtime", help="runtime name (default: the first that offers the precision)")
    p.add_argument("--calib", help="folder of calibration images (int8)")
    p.add_argument("--max-drop", type=float, help="refuse a model losing more AP points than this")
    p.add_argument("-o", "--output", required=True, help="output file")
    p.set_defaults(func=cmd_export)


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
    model = resolve_options(spec)  # a bad options class is a plugin bug, reported as one
    if model is not None:
        info["options"] = {
            k: {"default": repr(f.default), "description": f.description or ""}
            for k, f in model.model_fields.items()
        }
    decision = _auto_decision(args, spec.name, reg)
    info["auto"] = None if decision is None else decision.summary()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    for key, value in info.items():
        if key == "options":
            print("options:")
            for opt, meta in value.items():
                print(f"  {opt} = {meta['default']}  {meta['description']}")
        elif key != "auto":
            print(f"{key}: {value}")
    if decision is None:
        print(f"precision='auto': no cached decision: run `{_tune_command(args, spec.name)}`")
    else:
        print("precision='auto' on this machine:")
        print("\n".join(f"  {line}" for line in decision.table().splitlines()))
    return 0


def _auto_decision(args: argparse.Namespace, name: str, reg: Any) -> Any:
    """The cached ``precision="auto"`` decision for the flags' recipe, or ``None`` (reads one JSON file)."""
    from visionkit.tune import cached  # `import visionkit` has imported it already: the auto hook

    recipe = replace(recipe_from_args(args, name=name), runtime=args.runtime)
    max_drop = recipe.runtime_options.get("max_drop", 1.0)
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)):
        raise InvalidOptionError(
            f"-R max_drop must be a number of points, but got {max_drop!r}.", key="max_drop"
        )
    return cached(recipe, max_drop=max_drop, registry=reg)


def _tune_command(args: argparse.Namespace, name: str) -> str:
    """The ``visionkit tune`` command that measures what ``info`` looked for, with the same flags."""
    parts = ["visionkit", "tune", name]
    for flag in ("weights", "device", "task", "runtime"):
        value = getattr(args, flag, None)
        if value is not None and not (flag == "device" and value == "cpu"):
            parts += [f"--{flag}", str(value)]
    for flag, items in (("-O", args.option), ("-R", args.runtime_option)):
        parts += [x for item in items or () for x in (flag, item)]
    if args.classes:
        parts += ["--classes", *args.classes]
    return " ".join(shlex.quote(p) for p in parts) + " --images DIR"


def _exporter_for_file(runtimes: list[Any], output: Path) -> Any:
    """The runtime whose exporter writes ``output``'s suffix (``.onnx``, ``.xml`` ...).

    Runtimes that do not declare ``export_suffixes`` may write anything; the first of them serves a
    suffix nobody declares. Otherwise the file name is refused with the suffixes that would work.
    """
    suffix = output.suffix.lower()
    writes = [r for r in runtimes if suffix in r.export_suffixes] or [
        r for r in runtimes if not r.export_suffixes
    ]
    if writes:
        return writes[0]
    known = ", ".join(f"{s} ({r.name})" for r in runtimes for s in r.export_suffixes)
    raise InvalidOptionError(
        f"Cannot export to {output.name!r}: "
        + ("the exporter writes " if len(runtimes) == 1 else "the exporters write ")
        + f"{known}. Name the output with one of these suffixes"
        + ("." if len(runtimes) == 1 else ", or pass --runtime."),
        key="output",
    )


def cmd_export(args: argparse.Namespace) -> int:
    reg = get_registry()
    spec = reg.get(args.name)
    # by name, as load() picks runtimes: installing another exporter never changes which one serves a precision
    runtimes = sorted(
        (r for r in reg.runtimes.values() if args.precision in r.precisions and r.exporter),
        key=lambda r: r.name,
    )
    if args.runtime:
        runtimes = [r for r in runtimes if r.name == args.runtime]
    if not runtimes:
        raise InvalidOptionError(
            f"No installed runtime can export precision {args.precision!r}"
            + (f" with runtime {args.runtime!r}" if args.runtime else "")
            + ". Install one: `pip install visionkit-onnx`."
        )
    rt = _exporter_for_file(runtimes, Path(args.output))
    # The source backend loads natively; the runtime's exporter produces the precision asked for.
    recipe = recipe_from_args(args, name=spec.name)
    backend = replace(recipe, precision="fp32", runtime_options={}).load()
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
