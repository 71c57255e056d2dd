"""CLI for work at scale: folder/glob/video ``predict`` (streamed, resumable, optionally on Ray) and ``serve``.

``visionkit.cli`` wires this in: :func:`add_predict_arguments` adds the flags to ``predict``,
:func:`wants_stream` says when ``predict`` should hand over to :func:`predict_stream`, and
:func:`add_commands` adds ``serve``. Heavy modules (tqdm, cv2, ray, fastapi) are imported only when
a command needs them. Also runnable on its own: ``python -m visionkit._cli_scale serve yolo``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from visionkit.cli import TRUST_PICKLE_HELP, parse_kv, prompt_from_args
from visionkit.errors import InvalidOptionError, VisionKitError

__all__ = [
    "add_commands",
    "add_predict_arguments",
    "annotated_names",
    "cli_weights",
    "cmd_serve",
    "predict_stream",
    "wants_stream",
]

#: Failures listed one by one at the end of a run; more are counted.
_MAX_LISTED = 20


# -- predict --------------------------------------------------------------------------------------
def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the streaming flags to the ``predict`` parser."""
    g = parser.add_argument_group("folders, globs, video (streamed, resumable)")
    g.add_argument(
        "--out",
        metavar="PATH",
        help="results file: .jsonl (a record per image/frame) or .json (COCO results); with --ray also a "
        "directory (Parquet). Re-running with the same --out skips inputs already in it.",
    )
    g.add_argument(
        "--every", type=int, default=1, metavar="N", help="video: keep every N-th frame (default 1)"
    )
    g.add_argument(
        "--batch-size", type=int, metavar="N", help="images per backend call (default: the backend's)"
    )
    g.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any input could not be read"
    )
    g.add_argument(
        "--categories",
        metavar="JSON",
        help="COCO annotations file: class names → category ids and file names → image ids for .json output",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--ray", action="store_true", help="run on Ray Data (a local Ray unless --ray-address)")
    g.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join, e.g. auto or ray://head:10001")
    g.add_argument(
        "--ray-workers", type=int, default=2, metavar="N", help="Ray actors, one backend each (default 2)"
    )
    g.add_argument("--ray-gpus", type=float, default=0, metavar="N", help="GPUs per Ray actor (default 0)")


def wants_stream(args: argparse.Namespace) -> bool:
    """True when ``predict`` should stream: a directory, glob or video input, or a streaming flag."""
    from visionkit.stream import is_stream_input

    flags = (
        getattr(args, "out", None)
        or getattr(args, "ray", False)
        or getattr(args, "ray_address", None)
        or getattr(args, "strict", False)
        or getattr(args, "batch_size", None) is not None  # --batch-size 0 must reach its check
        or getattr(args, "every", 1) != 1
    )
    return bool(flags) or any(is_stream_input(str(i)) for i in args.images)


def cli_weights(value: str | None) -> Any:
    """``--weights`` as ``visionkit.load`` takes it: absent → the default, ``none`` → random init.

    ``none`` means random initialisation in every command (``eval``, ``bench``, ``serve`` ...); a file
    really named ``none`` is ``./none``.
    """
    from visionkit.loading import DEFAULT

    if value is None:
        return DEFAULT
    return None if value.lower() == "none" else value


def _weights(args: argparse.Namespace) -> Any:
    return cli_weights(getattr(args, "weights", None))


def annotated_names(sources: Sequence[str]) -> Callable[[str, int | None], str]:
    """File names for ``--save-dir``: ``stem.jpg`` (video frames ``stem_f000005.jpg``).

    Sources that share a stem (``a/x.jpg`` and ``b/x.jpg``, or ``x.png`` next to ``x.jpg``) get
    ``stem-<8 hex digits of their resolved path's sha1>.jpg`` instead, so none overwrites another and a
    re-run gives every source the same name.
    """
    from visionkit.stream import resolve_source

    by_stem: dict[str, set[str]] = {}
    for src in sources:
        by_stem.setdefault(Path(src).stem.casefold(), set()).add(resolve_source(src))

    def name(source: str, frame: int | None = None) -> str:
        stem = Path(source).stem
        if len(by_stem.get(stem.casefold(), ())) > 1:
            stem += "-" + hashlib.sha1(resolve_source(source).encode()).hexdigest()[:8]
        return stem + ("" if frame is None else f"_f{frame:06d}") + ".jpg"

    return name


def check_prompt_task(args: argparse.Namespace, task: Any) -> None:
    """``--point``/``--box`` only with ``segment_prompt``: refused, not ignored, for other tasks."""
    from visionkit.protocols import Task

    if task is not Task.SEGMENT_PROMPT and prompt_from_args(args):
        raise InvalidOptionError(
            f"--point and --box are prompts for task 'segment_prompt', but backend {args.name!r} runs "
            f"{task.value!r} here; drop them, or pass --task segment_prompt to a prompt segmenter."
        )


def predict_stream(args: argparse.Namespace) -> int:
    """``visionkit predict`` over folders, globs and videos; returns the exit status.

    0 when the run finished (failed inputs are listed), 1 with ``--strict`` when any input failed,
    130 when interrupted (re-run the same command to resume).
    """
    if getattr(args, "json", None):
        raise InvalidOptionError(
            "--json keeps every result in memory; with folders, globs or video write them as they come "
            "with --out results.jsonl (or --out results.json for COCO results)."
        )
    if args.every < 1:
        raise InvalidOptionError(f"--every must be a positive number of frames, but got {args.every}.")
    if args.batch_size is not None and args.batch_size < 1:
        raise InvalidOptionError(f"--batch-size must be at least 1, but got {args.batch_size}.")
    if args.ray_workers < 1:
        raise InvalidOptionError(f"--ray-workers must be at least 1, but got {args.ray_workers}.")
    if args.ray_gpus < 0:
        raise InvalidOptionError(f"--ray-gpus must be 0 or more, but got {args.ray_gpus}.")
    if args.out and Path(args.out).suffix.lower() in (".jsonl", ".ndjson", ".json"):
        from visionkit.cli import _writable_file

        _writable_file(args.out, "--out")  # before the model loads, not after
    options = parse_kv(getattr(args, "option", None))
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        summary = (
            _run_ray(args, options) if (args.ray or args.ray_address) else _run_local(args, options, progress)
        )
    except KeyboardInterrupt:
        where = f" with --out {args.out}" if args.out else ""
        print(f"\ninterrupted; run the same command again{where} to resume.", file=sys.stderr)
        return 130
    for failure in summary.failed[:_MAX_LISTED]:
        print(f"failed: {failure}", file=sys.stderr)
    if len(summary.failed) > _MAX_LISTED:
        print(f"... and {len(summary.failed) - _MAX_LISTED} more failures", file=sys.stderr)
    print(str(summary), file=sys.stderr)
    return 1 if args.strict and summary.failed else 0


def _run_local(args: argparse.Namespace, options: dict[str, Any], progress: bool) -> Any:
    import visionkit
    from visionkit.stream import _resolve_task, expand_inputs
    from visionkit.stream import predict_stream as stream

    backend = visionkit.load(
        args.name,
        task=args.task,
        weights=_weights(args),
        device=args.device,
        precision=args.precision,
        **options,
    )
    check_prompt_task(args, _resolve_task(backend, args.task))
    save_dir = Path(args.save_dir) if getattr(args, "save_dir", None) else None
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        name_of = annotated_names(expand_inputs([str(i) for i in args.images])[0])

    def on_result(item: Any, result: Any, image: Any) -> None:
        if args.out is None:
            where = item.source if item.frame is None else f"{item.source}#{item.frame}"
            print(f"{where}: {_one_line(result)}", flush=True)
        if save_dir is not None:
            from visionkit.draw import annotate

            annotate(image, result).save(save_dir / name_of(item.source, item.frame), quality=90)

    return stream(
        backend,
        args.images,
        out=args.out,
        task=args.task,
        every=args.every,
        batch_size=args.batch_size,
        categories=args.categories,
        prompt=prompt_from_args(args),
        progress=progress,
        on_result=on_result,
        on_failure=None if progress else (lambda f: print(f"failed: {f}", file=sys.stderr)),
    )


def _run_ray(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    if not args.out:
        raise InvalidOptionError(
            "--ray writes its results to --out (a .jsonl file or a directory for Parquet)."
        )
    if args.every != 1 or prompt_from_args(args):
        raise InvalidOptionError(
            "--ray runs image files with a batch task; --every and prompts are local only."
        )
    try:
        from visionkit.ray import BackendLoader, predict_ray
    except ModuleNotFoundError as exc:
        from visionkit.errors import BackendUnavailableError

        raise BackendUnavailableError("ray", [exc.name or "ray"], "pip install 'visionkit[ray]'") from exc
    loader = BackendLoader(
        args.name, weights=_weights(args), device=args.device, precision=args.precision, options=options
    )
    return predict_ray(
        loader,
        [str(i) for i in args.images],
        out=args.out,
        task=args.task,
        batch_size=args.batch_size or 8,
        workers=args.ray_workers,
        num_gpus=args.ray_gpus,
        address=args.ray_address,
    )


def _one_line(result: Any) -> str:
    n = None
    with contextlib.suppress(TypeError):  # results without items (SemanticMask) have no len()
        n = len(result)
    kind = type(result).__name__
    names = getattr(result, "class_name", None)
    if names is not None and n is not None:
        top = ", ".join(sorted(set(names))[:6])
        return f"{n} {kind.lower()}" + (f" ({top})" if top else "")
    if hasattr(result, "present_classes"):
        return "classes present: " + ", ".join(result.present_classes())
    return f"{kind}" + (f" n={n}" if n is not None else "")


# -- serve ----------------------------------------------------------------------------------------
def add_commands(subparsers: Any) -> None:
    """Add ``serve`` to the ``visionkit`` command."""
    p = subparsers.add_parser("serve", help="serve backends over HTTP (FastAPI; OpenAPI docs at /docs)")
    p.add_argument("names", nargs="+", metavar="NAME", help="backends to load and serve")
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; 0.0.0.0 for all)"
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port, 1-65535 (default 8000)")
    p.add_argument(
        "--weights",
        action="append",
        metavar="[NAME=]PATH",
        help="weights per backend (repeatable; plain PATH when serving one backend; 'none' = random init)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps, auto")
    p.add_argument("--precision", default="fp32")
    p.add_argument(
        "-O",
        "--option",
        action="append",
        metavar="[NAME:]KEY=VALUE",
        help="load-time backend option (repeatable)",
    )
    p.add_argument(
        "--trust-pickle",
        action="append_const",
        dest="option",
        const="trust_pickle=true",
        help=TRUST_PICKLE_HELP,
    )
    p.add_argument("--workers", type=int, default=2, help="inferences running at once (default 2)")
    p.add_argument(
        "--per-backend",
        type=int,
        default=1,
        help="inferences at once on one backend, if it declares thread_safe; else 1 (default 1)",
    )
    p.add_argument("--queue", type=int, default=16, help="requests waiting before 503 Busy (default 16)")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body (default 20 MB)")
    p.add_argument(
        "--max-pixels", type=int, default=40_000_000, help="largest image width*height (default 40M)"
    )
    p.add_argument(
        "--max-connections", type=int, default=64, help="open connections served at once (default 64)"
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds for a request head to arrive (default 10)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds for a request body to arrive in full (default 60)",
    )
    p.add_argument(
        "--send-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds a client may leave its answer unread (default 60)",
    )
    p.add_argument("--max-response-mb", type=float, default=16.0, help="largest JSON answer (default 16 MB)")
    p.add_argument(
        "--max-prompts",
        type=int,
        default=256,
        help="most points + boxes per segment_prompt request (default 256)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="uvicorn's log level (default info)",
    )
    p.set_defaults(func=cmd_serve)


def serve_settings(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], Any]:
    """``(load keyword arguments per backend, ServeConfig)`` from ``serve`` arguments."""
    from visionkit.serve import ServeConfig

    names = list(dict.fromkeys(args.names))
    kwargs: dict[str, dict[str, Any]] = {
        n: {"device": args.device, "precision": args.precision} for n in names
    }
    for raw in args.weights or []:
        name, sep, path = raw.partition("=")
        if not sep:
            if len(names) != 1:
                raise InvalidOptionError(
                    f"--weights {raw!r} is ambiguous with {len(names)} backends; write --weights NAME=PATH."
                )
            name, path = names[0], raw
        if name not in kwargs:
            raise InvalidOptionError(
                f"--weights {raw!r} names {name!r}, which is not served; served: {', '.join(names)}."
            )
        kwargs[name]["weights"] = None if path.lower() == "none" else path
    for raw in args.option or []:
        head, _, _ = raw.partition("=")
        name, colon, _ = head.partition(":")
        if colon:
            if name not in kwargs:
                raise InvalidOptionError(
                    f"Option {raw!r} names {name!r}, which is not served; served: {', '.join(names)}."
                )
            kwargs[name].update(parse_kv([raw[len(name) + 1 :]]))
        elif len(names) == 1:
            kwargs[names[0]].update(parse_kv([raw]))
        else:
            raise InvalidOptionError(
                f"Option {raw!r} is ambiguous with {len(names)} backends; write -O NAME:{raw}."
            )
    if not 1 <= args.port <= 65535:
        raise InvalidOptionError(f"--port {args.port} is not a TCP port; use 1-65535.")
    for flag, mb in (("--max-body-mb", args.max_body_mb), ("--max-response-mb", args.max_response_mb)):
        if not (math.isfinite(mb) and mb > 0):
            raise InvalidOptionError(f"{flag} must be a positive number of megabytes, but got {mb!r}.")
    config = ServeConfig(
        workers=args.workers,
        per_backend=args.per_backend,
        queue_size=args.queue,
        max_body_bytes=max(1, int(args.max_body_mb * 1024 * 1024)),
        max_pixels=args.max_pixels,
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        send_timeout_s=args.send_timeout,
        max_response_bytes=max(1, int(args.max_response_mb * 1024 * 1024)),
        max_prompts=args.max_prompts,
    )
    return kwargs, config


def _check_listen(host: str, port: int) -> None:
    """Fail before the backends load (seconds to minutes) when ``host:port`` cannot be listened on."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InvalidOptionError(
            f"Cannot listen on {host}:{port} ({reason}); choose another --port or --host."
        ) from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Load every backend (fail fast with a clear error), then serve until interrupted."""
    try:
        from visionkit.serve import create_app, run
    except ModuleNotFoundError as exc:
        from visionkit.errors import BackendUnavailableError

        raise BackendUnavailableError(
            "serve", [exc.name or "fastapi"], "pip install 'visionkit[serve]'"
        ) from exc
    import visionkit
    from visionkit.registry import get_registry

    kwargs, config = serve_settings(args)
    reg = get_registry()
    for name in kwargs:  # cheap checks first: a misspelt name, then the port; then the slow loads
        if reg.for_file(name) is None:  # a model file (e.g. a deployed .onnx) names its own backend
            reg.get(name)
    _check_listen(args.host, args.port)
    backends = {}
    for name, kw in kwargs.items():
        print(f"loading {name} ...", file=sys.stderr, flush=True)
        backends[name] = visionkit.load(name, **kw)
    app = create_app(backends, config=config)
    print(
        f"serving {', '.join(backends)} on http://{args.host}:{args.port} (docs at /docs)",
        file=sys.stderr,
        flush=True,
    )
    run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m visionkit._cli_scale serve ...`` (the same command ``visionkit serve`` runs)."""
    parser = argparse.ArgumentParser(prog="visionkit")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VisionKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
