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
import io
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.errors import InvalidOptionError, VisionKitError
from visionkit.images import load_image
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

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
JSONL_SUFFIXES = (".jsonl", ".ndjson")
#: Tasks whose results COCO results JSON can hold.
COCO_TASKS = (Task.DETECT, Task.SEGMENT_INSTANCES)
# Which verb runs when ``task`` is not given: the richest output the backend offers (as `predict`).
_TASK_PREFERENCE = (Task.SEGMENT_INSTANCES, Task.DETECT, Task.SEGMENT_SEMANTIC, Task.CLASSIFY)


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
        return _key(self.source, self.frame)

    @property
    def path(self) -> str:
        """The resolved absolute path of ``source`` (see :func:`resolve_source`)."""
        return resolve_source(self.source)

    def load(self) -> np.ndarray:
        """The image as ``(H, W, 3)`` uint8 RGB (raises :class:`~visionkit.InvalidImageError`)."""
        return self.array if self.array is not None else load_image(self.source)


def resolve_source(source: str | os.PathLike[str]) -> str:
    """The absolute path of ``source`` with every symlink resolved (URIs such as ``s3://`` unchanged).

    Records are keyed by it, so the same file reached from another working directory, through a
    symlinked folder or under another relative spelling is the same input.
    """
    text = os.fspath(source)
    return text if "://" in text else os.path.realpath(text)


def _key(source: str, frame: int | None) -> tuple[str, int | None]:
    return os.path.normcase(resolve_source(source)), frame


def _record_key(rec: Mapping[str, Any]) -> tuple[str, int | None]:
    """The key of a record read back: its ``path``, or for files older than ``path``, its ``source``."""
    frame = rec.get("frame")
    return _key(str(rec.get("path") or rec["source"]), frame if isinstance(frame, int) else None)


def _has_magic(text: str) -> bool:
    return glob.has_magic(text)


def _kind(path: str) -> str:
    return "video" if Path(path).suffix.lower() in VIDEO_SUFFIXES else "image"


def is_stream_input(text: str) -> bool:
    """True for a directory, a glob pattern (that is not an existing file) or a video file."""
    p = Path(text)
    if p.is_dir():
        return True
    if p.is_file():
        return _kind(text) == "video"
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
        k = _key(path, None)[0]
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
            path, None, start, error="reading video needs OpenCV: `pip install opencv-python-headless`"
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
        if _kind(path) == "video":
            last = n
            for item in _iter_video(path, every, n, accept):
                last = item.index + 1
                yield item
            n = last
        else:
            yield Item(path, None, n)
            n += 1


# -- outputs --------------------------------------------------------------------------------------
def _parse_record(line: bytes) -> dict[str, Any] | None:
    """The record on one complete line, or ``None`` when the line is not a record."""
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("source"), str) else None


def read_records(path: str | os.PathLike[str], *, skip_corrupt: bool = False) -> Iterator[dict[str, Any]]:
    """The complete records of a JSONL results file (a half-written last line is ignored).

    Args:
        path: the results file.
        skip_corrupt: skip complete lines that are not records instead of raising.

    Raises:
        ValueError: a complete line that is not a record (with its line number), unless
            ``skip_corrupt``.
    """
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.endswith(b"\n"):
                return  # interrupted mid-write: that record was never complete
            if not line.strip():
                continue
            rec = _parse_record(line)
            if rec is None:
                if skip_corrupt:
                    continue
                raise ValueError(f"Line {lineno} of {os.fspath(path)!r} is not a visionkit record.")
            yield rec


def _lock(fh: io.BufferedWriter, path: Path) -> None:
    """Hold an exclusive lock on the open output, or fail at once when another run holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory file lock in the standard library that fits
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        fh.close()
        raise InvalidOptionError(
            f"Output {str(path)!r} is being written by another visionkit run right now; wait for it to "
            "finish (then run again to resume) or choose another output file."
        ) from exc
    except OSError:  # a filesystem without locks (some NFS mounts): write unlocked, as before
        return


def _os_reason(path: Path, exc: OSError) -> str:
    """Why ``path`` cannot be used, in words (``'x' is a file, not a folder`` rather than errno text)."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    return f"{str(parent)!r} is a file, not a folder"
                break
    if isinstance(exc, IsADirectoryError) or path.is_dir():
        return "it is a directory"
    return exc.strerror or f"{type(exc).__name__}: {exc}"


def _io_error(path: Path, exc: OSError, doing: str) -> InvalidOptionError:
    return InvalidOptionError(f"Cannot {doing} results file {str(path)!r}: {_os_reason(path, exc)}.")


class _JsonlSink:
    """Append-only, locked JSONL file that knows which inputs it already holds.

    Attributes:
        done: keys (:func:`_key`) of the inputs already in the file.
        corrupt_lines: 1-based numbers of complete lines that are not records: kept, never rewritten.
    """

    def __init__(self, path: Path, task: Task) -> None:
        self.path = path
        self.done: set[tuple[str, int | None]] = set()
        self.corrupt_lines: list[int] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Open (and lock) before reading: a second run must not read a file the first still writes.
            self._fh: io.BufferedWriter = open(path, "ab")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise _io_error(path, exc, "write") from exc
        _lock(self._fh, path)
        try:
            self._recover(task)
        except BaseException:
            self._fh.close()
            raise

    def _recover(self, task: Task) -> None:
        good = 0  # byte offset after the last complete line
        missing_newline = False
        try:
            with open(self.path, "rb") as fh:
                for lineno, line in enumerate(fh, 1):
                    rec = _parse_record(line) if line.strip() else None
                    if not line.endswith(b"\n"):
                        if rec is None:
                            break  # the last line, half-written when a run was killed: the only one dropped
                        missing_newline = True  # a complete record that only lacks its newline: keep it
                    good += len(line)
                    if not line.strip():
                        continue
                    if rec is None:  # kept as is: it may be a record a person can still repair
                        self.corrupt_lines.append(lineno)
                        continue
                    if rec.get("task") != task.value:
                        raise InvalidOptionError(
                            f"Output {str(self.path)!r} holds results of task {rec.get('task')!r} (line "
                            f"{lineno}), but this run does {task.value!r}; choose another output file."
                        )
                    self.done.add(_record_key(rec))
            if good < self.path.stat().st_size:
                with open(self.path, "r+b") as fh:
                    fh.truncate(good)
            if missing_newline:
                self._fh.write(b"\n")
        except OSError as exc:
            raise _io_error(self.path, exc, "read") from exc

    def warning(self) -> str | None:
        """What to tell the user about lines that are not records, if any."""
        if not self.corrupt_lines:
            return None
        lines = ", ".join(str(n) for n in self.corrupt_lines[:_MAX_LINES_NAMED])
        more = len(self.corrupt_lines) - _MAX_LINES_NAMED
        if len(self.corrupt_lines) == 1:
            what = f"line {lines} is not a valid record"
        else:
            what = f"lines {lines}" + (f" and {more} more" if more > 0 else "") + " are not valid records"
        return f"{str(self.path)!r}: {what}; kept unchanged (whatever was recorded there is predicted again)."

    def write(self, record: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()  # also releases the lock


#: Corrupt line numbers named in a warning; more are counted.
_MAX_LINES_NAMED = 20


class _CocoSink(_JsonlSink):
    """COCO results JSON, written at the end from a JSONL progress file that makes it resumable."""

    def __init__(self, path: Path, task: Task, categories: Sequence[Mapping[str, Any]] | None) -> None:
        self.final = path
        self.categories = categories
        super().__init__(path.with_name(path.name + ".progress.jsonl"), task)

    def finish(self) -> int:
        """Write the COCO results array (streamed from the progress file); return the record count."""
        from visionkit.coco import to_coco_results
        from visionkit.results import Detections, InstanceMasks

        self.flush()
        types: dict[str, type[Detections]] = {"Detections": Detections, "InstanceMasks": InstanceMasks}
        tmp = self.final.with_name(self.final.name + ".tmp")
        count = 0
        try:
            with open(tmp, "w") as out:
                out.write("[")
                for rec in read_records(self.path, skip_corrupt=True):  # reported when the run began
                    result = types[rec["type"]].from_dict(rec["result"])
                    for coco in to_coco_results(result, int(rec["image_id"]), categories=self.categories):
                        out.write(("," if count else "") + json.dumps(coco, separators=(",", ":")))
                        count += 1
                out.write("]\n")
            os.replace(tmp, self.final)  # readers never see a half-written results file
        except OSError as exc:
            raise _io_error(self.final, exc, "write") from exc
        return count


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


class _Progress:
    """tqdm when installed and wanted, else nothing (imported lazily: the CLI must start fast)."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def skip(self) -> None:
        # Skipped inputs shrink the total instead of counting, so img/s stays honest.
        if self.bar is not None and self.bar.total:
            self.bar.total -= 1

    def failed(self, count: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix(failed=count, refresh=False)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _estimate_total(inputs: Sequence[str | os.PathLike[str]], every: int) -> int | None:
    paths, _ = expand_inputs(inputs)
    total = 0
    for p in paths:
        if _kind(p) == "video":
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


def _resolve_task(backend: Any, task: Task | str | None) -> Task:
    tasks = tuple(getattr(backend, "tasks", ()))
    if task is not None:
        t = Task.parse(task)
        if tasks and t not in tasks:
            from visionkit.errors import TaskNotSupportedError

            raise TaskNotSupportedError(getattr(backend, "name", "?"), t.value, [x.value for x in tasks])
        return t
    for t in _TASK_PREFERENCE:
        if t in tasks:
            return t
    raise InvalidOptionError(
        f"Backend {getattr(backend, 'name', '?')!r} offers only {[t.value for t in tasks]}; pass task= "
        "(prompt segmentation needs prompt=dict(points=..., boxes=...))."
    )


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
    t = _resolve_task(backend, task)
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
                    yield it, None, arr, Failure(it.source, it.frame, _describe_error(exc))
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
            yield item, None, None, Failure(item.source, item.frame, item.error or _describe_error(exc))
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
        return item, None, arr, Failure(item.source, item.frame, _describe_error(exc))


def _describe_error(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, VisionKitError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


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
    t = _resolve_task(backend, task)
    sink: _JsonlSink | None = None
    cats, ids = _coco_index(categories)
    if out is not None:
        path = Path(out)
        if path.suffix.lower() in JSONL_SUFFIXES:
            sink = _JsonlSink(path, t)
        elif path.suffix.lower() == ".json":
            if t not in COCO_TASKS:
                raise InvalidOptionError(
                    f"COCO results JSON holds boxes and instance masks, not {t.value!r} results; write "
                    f"{path.with_suffix('.jsonl').name!r} instead."
                )
            sink = _CocoSink(path, t, cats)
        else:
            raise InvalidOptionError(
                f"Output {os.fspath(out)!r} must end in .jsonl (one record per image) or .json (COCO "
                "results); for a directory of Parquet/JSON files use the Ray pipeline (--ray)."
            )
    done = sink.done if sink is not None else set()
    summary = StreamSummary(out=os.fspath(out) if out is not None else None)
    try:
        bar = _Progress(_estimate_total(inputs, every) if progress else None, progress)
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
            skip=(lambda s, f: _key(s, f) in done) if done else None,
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
                record: dict[str, Any] = {
                    "source": item.source,
                    "path": item.path,
                    "frame": item.frame,
                    "task": t.value,
                    "type": type(result).__name__,
                    "result": result.to_dict(),
                }
                if isinstance(sink, _CocoSink):
                    record["image_id"] = _image_id(item, ids)
                sink.write(record)
                sink.flush()  # one write per image: a killed run keeps every finished record
            summary.processed += 1
            bar.update()
            if on_result is not None and image is not None:
                on_result(item, result, image)
        if sink is not None:
            sink.flush()
            if isinstance(sink, _CocoSink):
                summary.coco_records = sink.finish()
    finally:
        summary.seconds = time.perf_counter() - start
        bar.close()
        if sink is not None:
            with contextlib.suppress(Exception):
                sink.close()
    return summary
