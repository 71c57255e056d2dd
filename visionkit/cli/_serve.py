"""``visionkit serve``: load backends, then answer HTTP requests (FastAPI; OpenAPI docs at ``/docs``).

``serve`` names several backends, so its ``--weights`` and ``-O`` take an optional ``NAME=`` /
``NAME:`` prefix; otherwise the flags mean what they mean in every command.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from visionkit.cli._args import TRUST_PICKLE_HELP, cli_weights, parse_kv
from visionkit.errors import BackendUnavailableError, InvalidOptionError

__all__ = ["add_commands", "cmd_serve", "serve_settings"]


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
        kwargs[name]["weights"] = cli_weights(path)
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
        raise BackendUnavailableError(
            "serve", [exc.name or "fastapi"], "pip install 'visionkit-core[serve]'"
        ) from exc
    from visionkit.loading import load
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
        backends[name] = load(name, **kw)
    app = create_app(backends, config=config)
    print(
        f"serving {', '.join(backends)} on http://{args.host}:{args.port} (docs at /docs)",
        file=sys.stderr,
        flush=True,
    )
    run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
