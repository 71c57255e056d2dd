"""The ``visionkit`` command line.

``list``, ``info``, ``export`` (:mod:`._basic`), ``predict`` (:mod:`._predict`), ``eval``, ``bench``,
``compare`` (:mod:`._reports`), ``tune`` (:mod:`._tune`), ``serve`` (:mod:`._serve`) and ``track``
(:mod:`._track`). Each command
module stands on :mod:`._args` (the shared flags and their one conversion to a load recipe) and never
on another command. Errors are printed as one ``error: ...`` line and exit with status 2 — no traceback
(set ``VISIONKIT_TRACEBACK=1`` to see one). :func:`main` lists every exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from visionkit._tools import version
from visionkit.cli import _basic, _predict, _reports, _serve, _track, _tune
from visionkit.cli._args import Parser, os_error_text, parse_kv, parse_option
from visionkit.errors import VisionKitError

__all__ = ["build_parser", "main", "parse_kv", "parse_option"]

#: The command modules, in the order ``visionkit --help`` lists their commands.
_COMMANDS = (_basic, _predict, _reports, _tune, _serve, _track)


def build_parser() -> argparse.ArgumentParser:
    """The ``visionkit`` argument parser with every command."""
    parser = Parser(prog="visionkit", description="One typed API over computer-vision models.")
    parser.add_argument("--version", action="version", version=f"visionkit {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for module in _COMMANDS:
        module.add_commands(sub)
    return parser


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
        print(f"error: {os_error_text(exc)}", file=sys.stderr)
        return 2


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so Python's exit flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests) or already closed
        pass
