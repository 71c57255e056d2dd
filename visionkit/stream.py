"""Folders, globs and videos through any backend: streamed, batched, resumable.

::

    import visionkit
    from visionkit.stream import predict_stream

    det = visionkit.load("yolo")
    summary = predict_stream(det, ["photos/", "clips/*.mp4"], out="detections.jsonl", every=5)
    print(summary)   # 1234 processed, 0 skipped (already done), 2 failed in 61.0 s (20.2 img/s)

Images are decoded a batch at a time (a few decode threads run ahead of the model by at most two
batches), so memory does not grow with the number of inputs. Each batch goes to the backend as one
list (``backend.detect([img, ...])``), and its records are appended to ``out`` and flushed before the
next batch starts.

Output formats, chosen by the suffix of ``out``:

- ``.jsonl`` / ``.ndjson``: one JSON record per image or video frame::

      {"source": "photos/a.jpg", "path": "/data/photos/a.jpg", "frame": null, "task": "detect",
       "type": "Detections", "result": {...}}

  ``source`` is the path as given, ``path`` the resolved absolute path (what resuming matches on),
  ``result`` is ``Result.to_dict()``; rebuild it with ``visionkit.Detections.from_dict``.
- ``.json``: COCO *results* (``image_id, category_id, bbox, score`` + RLE ``segmentation``), what
  ``COCO.loadRes`` reads. Progress is kept in ``<out>.progress.jsonl`` (the JSONL records plus
  ``image_id``) and the JSON array is written from it, atomically, when the run ends.

**Resuming.** Run again with the same ``out`` and the inputs already in it are skipped: a record is
written only after its image was predicted, so an interrupted run (Ctrl-C, ``kill -9``, a crash) loses
at most the batch in flight, and a half-written last line is cut off before appending. Inputs are
matched by their resolved absolute path (symlinks followed; the record's ``path``) and frame index, so
the same files reached from another directory or through a symlink are still skipped. Any other line
that is not a record is kept as it is, never rewritten, and reported (``StreamSummary.warnings``).
Unreadable inputs are reported, counted in the summary and not written, so a re-run tries them again.

**One writer at a time.** The output is locked (``fcntl.flock``, POSIX) while a run writes it; a second
run on the same output fails at once with :class:`~visionkit.InvalidOptionError` instead of writing
every record twice. (Where ``fcntl`` does not exist, on Windows, no lock is taken.)
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionkit._records import (
    JSONL_SUFFIXES,
    CocoSink,
    JsonlSink,
    describe_error,
    read_records,
    resolve_source,
    source_key,
)
from visionkit._tools import Progress
from visionkit.errors import InvalidOptionError, VisionKitError
from visionkit.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, load_image, media_kind
from visionkit.loading import resolve_task
from visionkit.protocols import Task

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "Failure",
    "Item",
    "StreamSummary",
    "expand_inputs",
    "is_stream_input",
    "iter_items",
    "predict_iter",
    "predict_stream",
    "read_records",
    "resolve_source",
]

#: Tasks whose results COCO results JSON can hold.
COCO_TASKS = (Task.DETECT, Task.SEGMENT_INSTANCES)


# -- inputs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    """An input that could not be read or predicted."""

    source: str
    frame: int | None
    message: str

    def __str__(self) -> str:
        where = self.source if self.frame is None else f"{self.source} frame {self.frame}"
        return f"{where}: {self.message}"


@dataclass
class Item:
    """One image to predict: an image file, or one frame of a video.

    Attributes:
        source: the path as found (relative paths stay relative).
        frame: frame index in the video, ``None`` for an image file.
        index: position of this item in the whole run (0-based; stable when the inputs are the same).
        array: the decoded frame (video frames are decoded as the video is read); ``None`` for files,
            which :meth:`load` decodes.
        error: why the input cannot be read, when known before decoding (missing file, bad video).
    """

    source: str
    frame: int | None
    index: int
    array: np.ndarray | None = None
    error: str | None = None

    @property
    def key(self) -> tuple[str, int | None]:
        """``(resolved absolute path, frame)``: how a record in the output is matched to its input."""
        return source_key(self.source, self.frame)

    @property
    def path(self) -> str:
        """The resolved absolute path of ``source`` (see :func:`resolve_source`)."""
        return resolve_source(self.source)

    def load(self) -> np.ndarray:
        """The image as ``(H, W, 3)`` uint8 RGB (raises :class:`~visionkit.InvalidImageError`)."""
        return self.array if self.array is not None else load_image(self.source)


def _has_magic(text: str) -> bool:
    return glob.has_magic(text)


def is_stream_input(text: str) -> bool:
    """True for a directory, a glob pattern (that is not an existing file) or a video file."""
    p = Path(text)
    if p.is_dir():
        return True
    if p.is_file():
        return media_kind(text) == "video"
    return _has_magic(text)


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[Failure]]:
    """Turn files, directories (recursive) and glob patterns into a sorted, de-duplicated file list.

    Directories contribute files with an image or video suffix; a file named explicitly or matched
    by a glob is taken whatever its suffix (a file that is not an image fails when decoded).

    Returns:
        ``(paths, failures)``: failures are inputs that name nothing (missing path, empty
        directory, glob matching no file).
    """
    paths: list[str] = []
    failures: list[Failure] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        k = source_key(path, None)[0]
        if k not in seen:
            seen.add(k)
            paths.append(path)

    for raw in inputs:
        text = os.fspath(raw)
        p = Path(text)
        if p.is_dir():
            found = sorted(
                str(f)
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not found:
                failures.append(Failure(text, None, "directory holds no image or video files"))
            for f in found:
                add(f)
        elif p.is_file():
            add(text)
        elif _has_magic(text):
            found = sorted(f for f in glob.glob(text, recursive=True) if os.path.isfile(f))
            if not found:
                failures.append(Failure(text, None, "no file matches this pattern"))
            for f in found:
                add(f)
        else:
            failures.append(Failure(text, None, "no such file or directory"))
    return paths, failures


def _video_frames(path: str) -> int | None:
    cv2 = _cv2()
    if cv2 is None:
        return None
    cap = cv2.VideoCapture(path)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    return n if n > 0 else None


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _iter_video(path: str, every: int, start: int, want: Callable[[str, int], bool]) -> Iterator[Item]:
    """Every ``every``-th frame of a video; frames ``want`` refuses are skipped without decoding."""
    cv2 = _cv2()
    if cv2 is None:
        yield Item(
            path, None, start, error="reading video needs OpenCV: `pip install 'visionkit-core[batch]'`"
        )
        return
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        yield Item(path, None, start, error="OpenCV cannot open this file as a video")
        return
    idx, n = 0, start
    try:
        while True:
            if idx % every:
                if not cap.grab():
                    break
            elif not want(path, idx):
                if not cap.grab():  # already done: advance without decoding the pixels
                    break
                yield Item(path, idx, n)
                n += 1
            else:
                ok, frame = cap.read()
                if not ok:
                    break
                rgb = np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                yield Item(path, idx, n, array=rgb)
                n += 1
            idx += 1
    finally:
        cap.release()
    if idx == 0:
        yield Item(path, None, n, error="the video has no readable frames")


def iter_items(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    every: int = 1,
    want: Callable[[str, int], bool] | None = None,
) -> Iterator[Item]:
    """Every image file and every ``every``-th video frame of ``inputs``, in order, lazily.

    Inputs that name nothing are yielded as items with ``error`` set, so a caller can report them.
    """
    if every < 1:
        raise InvalidOptionError(f"every must be a positive number of frames, but got {every!r}.")
    paths, failures = expand_inputs(inputs)
    for f in failures:
        yield Item(f.source, None, -1, error=f.message)
    accept = want or (lambda _s, _f: True)
    n = 0
    for path in paths:
        if media_kind(path) == "video":
            last = n
            for item in _iter_video(path, every, n, accept):
                last = item.index + 1
                yield item
            n = last
        else:
            yield Item(path, None, n)
            n += 1


def _coco_index(path: str | os.PathLike[str] | None) -> tuple[list[dict[str, Any]] | None, dict[str, int]]:
    """``(categories, file name → image id)`` from a COCO annotations file."""
    if path is None:
        return None, {}
    try:
        data = json.loads(Path(path).read_text())
        cats = list(data["categories"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidOptionError(
            f"Categories file {os.fspath(path)!r} must be COCO annotations JSON with a 'categories' list "
            f"({type(exc).__name__}: {exc})."
        ) from exc
    ids = {Path(im["file_name"]).name: int(im["id"]) for im in data.get("images", [])}
    return cats, ids


def _image_id(item: Item, ids: Mapping[str, int]) -> int:
    name = Path(item.source).name
    if item.frame is None and name in ids:
        return ids[name]
    stem = Path(item.source).stem
    if item.frame is None and stem.isdigit():
        return int(stem)  # COCO's own naming: 000000039769.jpg is image 39769
    return item.index + 1


# -- the driver -----------------------------------------------------------------------------------
@dataclass
class StreamSummary:
    """What a streamed run did.

    Attributes:
        processed: images/frames predicted and written in this run.
        skipped: inputs already in the output (resumed).
        failed: inputs that could not be read or predicted (not written; a re-run retries them).
        seconds: wall time of the run.
        out: the output file, if any.
        coco_records: COCO result entries written (``.json`` output).
        warnings: what the user should know that is not a failed input (lines of ``out`` that are not
            records, kept as they are).
    """

    processed: int = 0
    skipped: int = 0
    failed: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    out: str | None = None
    coco_records: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        """Throughput of this run (processed images per second)."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed

    def __str__(self) -> str:
        text = (
            f"{self.processed} processed, {self.skipped} skipped (already done), {len(self.failed)} failed "
            f"in {self.seconds:.1f} s ({self.images_per_s:.1f} img/s)"
        )
        return text + (f"; results in {self.out}" if self.out else "")


def _estimate_total(inputs: Sequence[str | os.PathLike[str]], every: int) -> int | None:
    paths, _ = expand_inputs(inputs)
    total = 0
    for p in paths:
        if media_kind(p) == "video":
            n = _video_frames(p)
            if n is None:
                return None
            total += (n + every - 1) // every
        else:
            total += 1
    return total


def _prefetch(
    items: Iterator[Item], workers: int, window: int
) -> Iterator[tuple[Item, np.ndarray | None, Exception | None]]:
    """Decode items ahead of the model in ``workers`` threads, at most ``window`` in flight, in order."""

    def decode(item: Item) -> tuple[np.ndarray | None, Exception | None]:
        if item.error is not None:
            return None, None
        try:
            return item.load(), None
        except VisionKitError as exc:
            return None, exc
        except Exception as exc:  # an exotic decoder failure must not end a long run
            return None, exc

    if workers <= 0:
        for item in items:
            yield (item, *decode(item))
        return
    pending: deque[tuple[Item, Future[tuple[np.ndarray | None, Exception | None]]]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visionkit-decode") as pool:
        try:
            for item in items:
                pending.append((item, pool.submit(decode, item)))
                while len(pending) >= window:
                    it, fut = pending.popleft()
                    yield (it, *fut.result())
            while pending:
                it, fut = pending.popleft()
                yield (it, *fut.result())
        finally:
            for _, fut in pending:
                fut.cancel()


def predict_iter(
    backend: Any,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    task: Task | str | None = None,
    every: int = 1,
    batch_size: int | None = None,
    prompt: Mapping[str, Any] | None = None,
    skip: Callable[[str, int | None], bool] | None = None,
    decode_workers: int = 2,
    **options: Any,
) -> Iterator[tuple[Item, Any, np.ndarray | None, Failure | None]]:
    """Predict lazily; yield ``(item, result, image, failure)`` for every input.

    Exactly one of ``result`` and ``failure`` is set, except for inputs ``skip`` accepted, which are
    yielded with both ``None`` and never decoded. Results come in input order. Batches of
    ``batch_size`` decoded images go to the backend as one list; when a batch fails, its images are
    retried one by one so that one bad image costs only itself.

    Args:
        backend: a loaded backend (``visionkit.load(...)``).
        inputs: image files, directories, glob patterns, video files.
        task: the verb to run (default: the richest task the backend offers).
        every: keep every ``every``-th video frame.
        batch_size: images per backend call (default: the backend's ``batch_size`` option, else 8).
        prompt: for ``segment_prompt``: ``points``, ``labels``, ``boxes`` applied to every image.
        skip: ``skip(source, frame)`` True means the input is already done (resume).
        decode_workers: threads decoding images ahead of the model (0: decode in this thread).
        **options: per-call backend options (e.g. ``conf=0.5``).
    """
    t = resolve_task(backend, task, prompt=prompt is not None)
    if t is Task.SEGMENT_PROMPT and not prompt:
        raise InvalidOptionError(
            "Task 'segment_prompt' needs a prompt applied to every image: prompt=dict(points=[(x, y)]) "
            "or prompt=dict(boxes=[(x1, y1, x2, y2)])."
        )
    size = batch_size or int(getattr(getattr(backend, "options", None), "batch_size", 8) or 8)
    if size < 1:
        raise InvalidOptionError(f"batch_size must be at least 1, but got {size!r}.")
    is_done = skip or (lambda _s, _f: False)
    items = iter_items(inputs, every=every, want=lambda s, f: not is_done(s, f))
    verb = getattr(backend, t.value)

    def run(
        batch: list[tuple[Item, np.ndarray]],
    ) -> Iterator[tuple[Item, Any, np.ndarray | None, Failure | None]]:
        if t is Task.SEGMENT_PROMPT:  # prompt segmenters take one image per call
            for it, arr in batch:
                yield _one(verb, it, arr, dict(prompt or {}), options)
            return
        try:
            results = verb([arr for _, arr in batch], **options)
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, InvalidOptionError):
                for it, arr in batch:
                    yield it, None, arr, Failure(it.source, it.frame, describe_error(exc))
                return
            for it, arr in batch:  # isolate the image that broke the batch
                yield _one(verb, it, arr, {}, options)
            return
        for (it, arr), res in zip(batch, results, strict=True):
            yield it, res, arr, None

    def marked() -> Iterator[Item]:
        for item in items:
            if item.error is None and item.array is None and is_done(item.source, item.frame):
                item.error = _DONE  # not decoded; yielded as skipped
            yield item

    # Batches are runs of `size` consecutive inputs (an unreadable one keeps its slot), so the same
    # inputs always meet the backend in the same company: the Ray pipeline forms them the same way.
    batch: list[tuple[Item, np.ndarray]] = []
    slots = 0
    for item, arr, exc in _prefetch(marked(), decode_workers, window=2 * size):
        if item.error is _DONE:
            item.error = None
            yield item, None, None, None
            continue
        if item.index >= 0:
            slots += 1
        if item.error is not None or exc is not None or arr is None:
            yield item, None, None, Failure(item.source, item.frame, item.error or describe_error(exc))
        else:
            batch.append((item, arr))
        if slots >= size:
            if batch:
                yield from run(batch)
            batch, slots = [], 0
    if batch:
        yield from run(batch)


_DONE = "already done"


def _one(
    verb: Callable[..., Any], item: Item, arr: np.ndarray, prompt: dict[str, Any], options: dict[str, Any]
) -> tuple[Item, Any, np.ndarray | None, Failure | None]:
    try:
        return item, verb(arr, **prompt, **options), arr, None
    except Exception as exc:
        return item, None, arr, Failure(item.source, item.frame, describe_error(exc))


def predict_stream(
    backend: Any,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str] | None = None,
    task: Task | str | None = None,
    every: int = 1,
    batch_size: int | None = None,
    categories: str | os.PathLike[str] | None = None,
    prompt: Mapping[str, Any] | None = None,
    progress: bool = True,
    decode_workers: int = 2,
    on_result: Callable[[Item, Any, np.ndarray], None] | None = None,
    on_failure: Callable[[Failure], None] | None = None,
    **options: Any,
) -> StreamSummary:
    """Predict every image/frame of ``inputs`` and append the results to ``out``, resumably.

    Args:
        backend: a loaded backend.
        inputs: image files, directories (searched recursively), glob patterns, video files.
        out: ``.jsonl`` (one record per image) or ``.json`` (COCO results); ``None`` writes nothing
            (use ``on_result``). Inputs already in ``out`` are skipped.
        task: the verb to run (default: the richest the backend offers).
        every: keep every ``every``-th video frame (frame indices 0, every, 2*every ...).
        batch_size: images per backend call (default: the backend's ``batch_size`` option).
        categories: COCO annotations JSON; its ``categories`` map class names to category ids and its
            ``images`` map file names to image ids, for ``.json`` output. Without it, the image id is
            the file name's number (COCO naming) or the input's position + 1, and the category id is
            the model's ``class_id``.
        prompt: for ``segment_prompt``: the same ``points``/``labels``/``boxes`` for every image.
        progress: show a progress bar (images/s) on stderr.
        decode_workers: threads decoding images ahead of the model.
        on_result: called as ``on_result(item, result, image)`` after each result is written.
        on_failure: called with each :class:`Failure` (default: printed to stderr).
        **options: per-call backend options.

    Returns:
        A :class:`StreamSummary`. Failures do not raise; check ``summary.ok``.
    """
    t = resolve_task(backend, task, prompt=prompt is not None)
    cats, ids = _coco_index(categories)
    sink = _open_sink(out, t, cats)
    done = sink.done if sink is not None else set()
    summary = StreamSummary(out=os.fspath(out) if out is not None else None)
    try:
        bar = Progress(_estimate_total(inputs, every) if progress else None, progress)
    except BaseException:
        if sink is not None:
            sink.close()
        raise
    report = on_failure or (lambda f: bar.write(f"failed: {f}"))
    note = sink.warning() if sink is not None else None
    if note is not None:
        summary.warnings.append(note)
        bar.write(f"warning: {note}")
    start = time.perf_counter()
    try:
        stream = predict_iter(
            backend,
            inputs,
            task=t,
            every=every,
            batch_size=batch_size,
            prompt=prompt,
            skip=(lambda s, f: source_key(s, f) in done) if done else None,
            decode_workers=decode_workers,
            **options,
        )
        for item, result, image, failure in stream:
            if failure is not None:
                summary.failed.append(failure)
                report(failure)
                bar.failed(len(summary.failed))
                if item.index >= 0:
                    bar.update()
                continue
            if result is None:
                summary.skipped += 1
                bar.skip()
                continue
            if sink is not None:
                sink.write(_record(item, result, t, ids if isinstance(sink, CocoSink) else None))
                sink.flush()  # one write per image: a killed run keeps every finished record
            summary.processed += 1
            bar.update()
            if on_result is not None and image is not None:
                on_result(item, result, image)
        if sink is not None:
            sink.flush()
            if isinstance(sink, CocoSink):
                summary.coco_records = sink.finish()
    finally:
        summary.seconds = time.perf_counter() - start
        bar.close()
        if sink is not None:
            with contextlib.suppress(Exception):
                sink.close()
    return summary


def _open_sink(
    out: str | os.PathLike[str] | None, task: Task, categories: list[dict[str, Any]] | None
) -> JsonlSink | None:
    """The output for ``out`` by its suffix (``None``: results go only to the callbacks)."""
    if out is None:
        return None
    path = Path(out)
    if path.suffix.lower() in JSONL_SUFFIXES:
        return JsonlSink(path, task)
    if path.suffix.lower() == ".json":
        if task not in COCO_TASKS:
            raise InvalidOptionError(
                f"COCO results JSON holds boxes and instance masks, not {task.value!r} results; write "
                f"{path.with_suffix('.jsonl').name!r} instead."
            )
        return CocoSink(path, task, categories)
    raise InvalidOptionError(
        f"Output {os.fspath(out)!r} must end in .jsonl (one record per image) or .json (COCO "
        "results); for a directory of Parquet/JSON files use the Ray pipeline (--ray)."
    )


def _record(item: Item, result: Any, task: Task, coco_ids: Mapping[str, int] | None) -> dict[str, Any]:
    """The JSONL record of one result (with its COCO ``image_id`` when writing COCO results)."""
    record: dict[str, Any] = {
        "source": item.source,
        "path": item.path,
        "frame": item.frame,
        "task": task.value,
        "type": type(result).__name__,
        "result": result.to_dict(),
    }
    if coco_ids is not None:
        record["image_id"] = _image_id(item, coco_ids)
    return record
