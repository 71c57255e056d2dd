"""Batch inference on Ray Data: the same backend, one copy per actor, on one machine or a cluster.

::

    from visionkit.ray import BackendLoader, predict_ray

    summary = predict_ray(BackendLoader("yolo"), ["photos/"], out="detections.jsonl", workers=4)

The pipeline is plain Ray Data::

    from_items(paths) | read_binary_files(uris)      one row per image (decoded on the workers)
      → map_batches(_Predictor, compute=ActorPoolStrategy(size=workers))
            _Predictor.__init__ loads the backend once per actor (BackendLoader())
            _Predictor.__call__ decodes with visionkit.load_image and calls backend.<task>(list)
      → .jsonl: rows streamed back to this process and appended as by visionkit.stream (resumable)
        directory: write_parquet / write_json on the workers (one file per block)

Images are decoded with :func:`visionkit.load_image`, exactly as the local path does (EXIF,
grayscale, 16-bit), so results are identical to :func:`visionkit.stream.predict_stream`; Ray's own
``read_images`` would convert differently. Local paths must be readable by every worker (one machine
or a shared filesystem); ``s3://`` / ``gs://`` URIs are read by Ray's ``read_binary_files``.

Needs ``pip install 'visionkit-core[ray]'`` and, on a cluster, visionkit plus the backend's plugin
installed on every node.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data

from visionkit._records import JSONL_SUFFIXES, JsonlSink, describe_error, resolve_source, source_key
from visionkit.errors import BackendError, InvalidOptionError, VisionKitError
from visionkit.images import load_image, media_kind
from visionkit.loading import LoadRecipe, resolve_task
from visionkit.protocols import Task
from visionkit.stream import Failure, StreamSummary, expand_inputs

__all__ = ["BackendLoader", "build_dataset", "init", "predict_ray"]


#: A picklable recipe for :func:`visionkit.load`, run once inside each Ray actor (the core's
#: :class:`~visionkit.loading.LoadRecipe`; this name is kept for code written against it).
BackendLoader = LoadRecipe


class _Predictor:
    """Ray Data callable class: one backend per actor, one backend call per batch."""

    def __init__(self, loader: BackendLoader, options: Mapping[str, Any]) -> None:
        self.backend = loader()
        self.task = resolve_task(self.backend, loader.task, prompt=False)
        self.verb = getattr(self.backend, self.task.value)
        self.options = dict(options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        data = None
        if "sources" in batch:  # local paths: one row is one batch, as the local path forms them
            sources = [str(s) for chunk in batch["sources"] for s in chunk]
        else:  # read_binary_files rows: one image each, bytes already read
            sources = [str(s) for s in batch["source"]]
            data = batch.get("bytes")
        images: list[np.ndarray | None] = []
        errors: list[str] = []
        for i in range(len(sources)):
            try:
                images.append(load_image(bytes(data[i]) if data is not None else sources[i]))
                errors.append("")
            except Exception as exc:  # reported per row; the job goes on
                images.append(None)
                errors.append(describe_error(exc))
        ok = [i for i, im in enumerate(images) if im is not None]
        results: dict[int, Any] = {}
        if ok:
            try:
                for i, res in zip(ok, self.verb([images[i] for i in ok], **self.options), strict=True):
                    results[i] = res
            except Exception:
                for i in ok:  # isolate the image that broke the batch
                    try:
                        results[i] = self.verb(images[i], **self.options)
                    except Exception as exc:
                        errors[i] = describe_error(exc)
        return {
            "source": np.asarray(sources, dtype=object),
            "task": np.asarray([self.task.value] * len(sources), dtype=object),
            "type": np.asarray(
                [type(results[i]).__name__ if i in results else "" for i in range(len(sources))], dtype=object
            ),
            # JSON text, not nested columns: result shapes vary per row and Arrow wants one schema.
            "result": np.asarray(
                [
                    json.dumps(results[i].to_dict(), separators=(",", ":")) if i in results else ""
                    for i in range(len(sources))
                ],
                dtype=object,
            ),
            "error": np.asarray(errors, dtype=object),
        }


def init(address: str | None = None, *, connect_timeout: float = 5.0, **kwargs: Any) -> None:
    """Connect to Ray once: ``address=None`` starts (or reuses) a local Ray, ``"auto"`` or
    ``"ray://host:10001"`` joins a cluster. Extra ``kwargs`` go to ``ray.init``.

    A ``host:port`` address is tried first with a plain TCP connection (``connect_timeout`` seconds):
    ``ray.init`` itself retries an address where nothing listens for minutes.

    Raises:
        BackendError: the cluster cannot be reached, or Ray refused to connect (the cause is chained).
    """
    if ray.is_initialized():
        return
    kwargs.setdefault("include_dashboard", False)
    kwargs.setdefault("log_to_driver", False)
    endpoint = _endpoint(address)
    if endpoint is not None:
        try:
            socket.create_connection(endpoint, timeout=connect_timeout).close()
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise BackendError(
                f"Cannot reach the Ray cluster at {address!r}: nothing answers at {endpoint[0]}:{endpoint[1]} "
                f"({reason}). Start one there with `ray start --head`, or check the address."
            ) from exc
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        where = "a local Ray" if address is None else f"the Ray cluster at {address!r}"
        raise BackendError(f"Cannot connect to {where}: {str(exc).strip() or type(exc).__name__}") from exc


def _endpoint(address: str | None) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` or ``ray://host:port`` address; ``None`` for the others."""
    if address is None:
        return None
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "", address
    elif scheme != "ray":
        return None  # a scheme Ray may know and we do not: let ray.init judge it
    rest = rest.rstrip("/")
    if rest in ("", "auto", "local"):
        return None
    host, colon, port = rest.rpartition(":")
    if not colon or "]" in port:  # no port (or a bare IPv6 address): Ray's defaults
        host, port = rest, "10001" if scheme == "ray" else "6379"
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


def build_dataset(
    inputs: Sequence[str],
    loader: BackendLoader,
    *,
    task: Task | str | None = None,
    batch_size: int = 8,
    workers: int = 2,
    num_cpus: float = 1,
    num_gpus: float = 0,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """The lazy ``ray.data.Dataset`` of prediction rows for ``inputs``.

    Rows: ``source``, ``task``, ``type`` (result class name), ``result`` (``Result.to_dict()`` as JSON
    text) and ``error`` (empty when the image was predicted). Local inputs are expanded like
    :func:`visionkit.stream.expand_inputs`; URIs (``s3://bucket/dir/``) go to ``read_binary_files``.

    Args:
        inputs: image paths, directories, globs, or URIs (video is streamed locally, not here).
        loader: how each actor loads the backend.
        task: the verb to run (default: the richest the backend offers).
        batch_size: images per backend call.
        workers: actors in the pool (each holds one backend).
        num_cpus, num_gpus: resources reserved per actor.
        options: per-call backend options.
    """
    if batch_size < 1 or workers < 1:
        raise InvalidOptionError(
            f"batch_size and workers must be at least 1, but got {batch_size} and {workers}."
        )
    uris = [s for s in inputs if "://" in s]
    local = [s for s in inputs if "://" not in s]
    paths, failures = expand_inputs(local) if local else ([], [])
    if failures:
        raise InvalidOptionError("; ".join(str(f) for f in failures) + ".")
    if task is not None:
        loader = loader.with_task(task)
    return _pipeline(paths, uris, loader, batch_size, workers, num_cpus, num_gpus, options or {})


def _pipeline(
    paths: Sequence[str],
    uris: Sequence[str],
    loader: BackendLoader,
    batch_size: int,
    workers: int,
    num_cpus: float,
    num_gpus: float,
    options: Mapping[str, Any],
) -> Any:
    videos = [p for p in paths if media_kind(p) == "video"]
    if videos:
        raise InvalidOptionError(
            f"Video input {videos[0]!r} is streamed frame by frame on this machine; run it without --ray."
        )

    def predict(ds: Any, rows_per_call: int, actors: int) -> Any:
        return ds.map_batches(
            _Predictor,
            fn_constructor_kwargs={"loader": loader, "options": dict(options)},
            batch_size=rows_per_call,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=num_cpus,
            num_gpus=num_gpus or None,
        )

    parts = []
    if paths:
        # Rows are the local path's batches (consecutive, batch_size long), so a backend whose output
        # depends on the batch (YOLO letterboxes a batch to one size) gives the same numbers.
        chunks = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
        blocks = max(1, min(len(chunks), workers * 4))  # enough blocks to keep every actor busy
        ds = ray.data.from_items([{"sources": c} for c in chunks], override_num_blocks=blocks)
        parts.append(predict(ds, 1, min(workers, blocks)))
    if uris:
        ds = ray.data.read_binary_files(list(uris), include_paths=True).rename_columns({"path": "source"})
        parts.append(predict(ds, batch_size, workers))
    if not parts:
        raise InvalidOptionError("No inputs to predict.")
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def predict_ray(
    loader: BackendLoader,
    inputs: Sequence[str],
    *,
    out: str | os.PathLike[str],
    task: Task | str | None = None,
    batch_size: int = 8,
    workers: int = 2,
    num_cpus: float = 1,
    num_gpus: float = 0,
    address: str | None = None,
    format: str = "parquet",
    **options: Any,
) -> StreamSummary:
    """Run ``loader``'s backend over ``inputs`` on Ray and write the results.

    Args:
        loader: how each actor loads the backend (``BackendLoader("yolo", weights=...)``).
        inputs: image paths, directories, globs, URIs.
        out: a ``.jsonl`` file (same records as the local path, resumable: inputs already in it are
            not sent to Ray) or a directory for ``format`` files written by the workers (columns
            ``source, task, type, result, error``; must be new or empty).
        task: the verb to run (default: the richest the backend offers).
        batch_size, workers, num_cpus, num_gpus: see :func:`build_dataset`.
        address: Ray address (``None``: local Ray; ``"auto"``: the running cluster).
        format: ``"parquet"`` or ``"json"`` for directory output.
        **options: per-call backend options.

    Returns:
        A :class:`~visionkit.stream.StreamSummary` (failures are listed, not raised).
    """
    start = time.perf_counter()
    if task is not None:  # parsed once; the recipe carries it to the checks, the sink and the workers
        loader = loader.with_task(task)
    out_path = Path(out)
    jsonl = out_path.suffix.lower() in JSONL_SUFFIXES
    if not jsonl and format not in ("parquet", "json"):
        raise InvalidOptionError(f"format must be 'parquet' or 'json', but got {format!r}.")
    if not jsonl and out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise InvalidOptionError(
            f"Output directory {str(out_path)!r} already exists and is not empty; Ray would add files next "
            "to the old ones. Choose a new directory, or a .jsonl file to resume."
        )
    uris = [s for s in inputs if "://" in s]
    local = [s for s in inputs if "://" not in s]
    paths, failures = expand_inputs(local) if local else ([], [])
    summary = StreamSummary(out=os.fspath(out), failed=list(failures))
    sink = None
    if jsonl:
        sink = JsonlSink(out_path, loader.default_task(prompt=False))
        note = sink.warning()
        if note is not None:
            summary.warnings.append(note)
            print(f"warning: {note}", file=sys.stderr)
        before = len(paths)
        paths = [p for p in paths if source_key(p, None) not in sink.done]
        summary.skipped = before - len(paths)
    if not paths and not uris:
        if sink is not None:
            sink.close()
        summary.seconds = time.perf_counter() - start
        return summary
    try:
        loader.check()
        init(address)
        ds = _pipeline(paths, uris, loader, batch_size, workers, num_cpus, num_gpus, options)
    except BaseException:
        if sink is not None:
            sink.close()  # and release the lock
        raise
    try:
        if sink is not None:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                _write_rows(batch, sink, summary)
        else:
            if format == "parquet":
                ds.write_parquet(os.fspath(out_path))
            else:
                ds.write_json(os.fspath(out_path))
            _count_written(out_path, format, summary)
    except VisionKitError:
        raise
    except Exception as exc:
        raise _translate_ray_error(exc, loader) from exc
    finally:
        if sink is not None:
            sink.close()
        summary.seconds = time.perf_counter() - start
    return summary


def _count_written(out: Path, format: str, summary: StreamSummary) -> None:
    """Fill the summary from the files the workers wrote (two small columns; no second Ray pass)."""
    import pyarrow.dataset as pads

    table = pads.dataset(os.fspath(out), format=format).to_table(columns=["source", "error"])
    for source, error in zip(table["source"].to_pylist(), table["error"].to_pylist(), strict=True):
        if error:
            summary.failed.append(Failure(str(source), None, str(error)))
        else:
            summary.processed += 1


def _write_rows(batch: Mapping[str, np.ndarray], sink: JsonlSink, summary: StreamSummary) -> None:
    for source, task, typ, result, error in zip(
        batch["source"], batch["task"], batch["type"], batch["result"], batch["error"], strict=True
    ):
        if error:
            summary.failed.append(Failure(str(source), None, str(error)))
            continue
        sink.write(
            {
                "source": str(source),
                "path": resolve_source(str(source)),
                "frame": None,
                "task": str(task),
                "type": str(typ),
                "result": json.loads(result),
            }
        )
        summary.processed += 1
    sink.flush()


def _translate_ray_error(exc: BaseException, loader: BackendLoader) -> BaseException:
    """One clear error from Ray's wrappers: an actor that could not load the backend, or the cause."""
    text = str(exc)
    found = _VK_ERROR.findall(text)
    if found:
        kind, message = found[-1]
        return BackendError(f"A Ray worker could not run backend {loader.name!r}: {kind}: {message.strip()}")
    return exc


_VK_ERROR = re.compile(r"visionkit\.errors\.(\w+): (.+)")
