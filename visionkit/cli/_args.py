"""What every ``visionkit`` command shares: the load flags, their one conversion to a load recipe, and
the parsing of ``KEY=VALUE``, prompts and output paths.

Commands stand on this module and never on each other. The argparse namespace stops here: a command
turns its arguments into a :class:`~visionkit.loading.LoadRecipe` (and plain values) at the edge and
hands those to the library.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from visionkit._records import os_reason
from visionkit.errors import InvalidOptionError
from visionkit.loading import DEFAULT, LoadRecipe
from visionkit.protocols import Task

__all__ = [
    "TRUST_PICKLE_HELP",
    "Parser",
    "add_load_flags",
    "cli_weights",
    "options_from_args",
    "os_error_text",
    "parse_floats",
    "parse_kv",
    "parse_option",
    "prompt_from_args",
    "recipe_from_args",
    "writable_file",
]

#: ``--trust-pickle`` in every command that loads a backend: the backend option ``trust_pickle=true``.
TRUST_PICKLE_HELP = (
    "load weights that need code to run (pickled checkpoints, eval-able model configs) from a file you "
    "trust; the same as -O trust_pickle=true"
)


class Parser(argparse.ArgumentParser):
    """argparse with usage mistakes reported as one ``error: ...`` line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


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
    """Several ``KEY=VALUE`` strings (``-O``/``-R``/``-T`` flags) as a dict."""
    return dict(parse_option(item) for item in items or ())


def _option_arg(text: str) -> str:
    """argparse ``type=`` for ``KEY=VALUE``: checked while parsing, kept as text until the edge."""
    try:
        parse_option(text)
    except InvalidOptionError as exc:  # argparse shows ArgumentTypeError messages verbatim
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


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


def cli_weights(value: str | None) -> Any:
    """``--weights`` as ``visionkit.load`` takes it: absent → the default, ``none`` → random init.

    ``none`` means random initialisation in every command; a file really named ``none`` is ``./none``.
    """
    if value is None or value == DEFAULT:
        return DEFAULT
    return None if value.lower() == "none" else value


def add_load_flags(
    parser: argparse.ArgumentParser,
    *,
    precision: str | None = "fp32",
    runtime_options: bool = False,
    plugins: bool = False,
) -> None:
    """The flags of every command that loads a backend (one spelling and meaning everywhere).

    ``--weights`` (``none``: random init), ``--device``, ``-O KEY=VALUE``, ``--trust-pickle``, ``--classes``, and when
    asked ``--precision``, ``-R KEY=VALUE`` (runtime options) and ``--plugin MODULE:ATTR``.
    """
    parser.add_argument(
        "--weights", help="weights path or name (default: the backend's default; 'none': random init)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps, auto (default: cpu)")
    if precision is not None:
        parser.add_argument(
            "--precision", default=precision, help=f"fp32, bf16, fp16, int8 ... (default {precision})"
        )
    parser.add_argument(
        "-O",
        "--option",
        action="append",
        type=_option_arg,
        metavar="KEY=VALUE",
        help="backend option (repeatable), e.g. -O imgsz=320; values are parsed as JSON when they can be",
    )
    parser.add_argument(
        "--trust-pickle",
        action="append_const",
        dest="option",
        const="trust_pickle=true",
        help=TRUST_PICKLE_HELP,
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        metavar="NAME",
        help="what a text-prompted detector (owlv2, grounding-dino ...) looks for, e.g. --classes 'red car' "
        'person; the same as -O classes=\'["red car", "person"]\'',
    )
    if runtime_options:
        parser.add_argument(
            "-R",
            "--runtime-option",
            action="append",
            type=_option_arg,
            metavar="KEY=VALUE",
            help="option of the runtime serving a non-native precision, e.g. -R calib=val2017/ for int8",
        )
    if plugins:
        parser.add_argument(
            "--plugin",
            dest="plugins",
            action="append",
            default=[],
            metavar="MODULE:ATTR",
            help="load an extra plugin object by import string (repeatable)",
        )


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The backend options of ``-O KEY=VALUE``, ``--trust-pickle`` and ``--classes``."""
    options = parse_kv(getattr(args, "option", None))
    if getattr(args, "classes", None):
        options["classes"] = list(args.classes)
    return options


def recipe_from_args(args: argparse.Namespace, name: str | None = None) -> LoadRecipe:
    """The one conversion from the load flags to a :class:`LoadRecipe` (``--task`` parsed here, once)."""
    task = getattr(args, "task", None)
    return LoadRecipe(
        name=name if name is not None else args.name,
        weights=cli_weights(getattr(args, "weights", None)),
        device=args.device,
        precision=getattr(args, "precision", None) or "fp32",
        options=options_from_args(args),
        task=Task.parse(task) if task else None,
        runtime_options=parse_kv(getattr(args, "runtime_option", None)),
    )


def writable_file(raw: str, flag: str) -> Path:
    """``raw`` as an output file path, checked before any work starts (parents are created)."""
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
        raise InvalidOptionError(f"{flag} {raw!r} cannot be written: {os_reason(path, exc)}.") from exc
    return path


def os_error_text(exc: OSError) -> str:
    """``[Errno 13] Permission denied: 'x'`` → ``Permission denied: 'x'`` (the errno helps nobody)."""
    if exc.strerror is None:
        return f"{type(exc).__name__}: {exc}"
    where = f": {os.fspath(exc.filename)!r}" if exc.filename is not None else ""
    return f"{exc.strerror}{where}."
