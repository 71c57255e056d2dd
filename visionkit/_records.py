"""Result records on disk, shared by the streamed, Ray and tracking runs.

One JSON record per image or video frame, appended to a locked JSONL file and keyed by the resolved
path of its input, so a run that is interrupted resumes without losing or repeating a record. The
record format and the resume rules are documented in :mod:`visionkit.stream`.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from visionkit.errors import InvalidOptionError, VisionKitError
from visionkit.protocols import Task

__all__ = [
    "JSONL_SUFFIXES",
    "CocoSink",
    "JsonlSink",
    "describe_error",
    "io_error",
    "lock_output",
    "os_reason",
    "read_records",
    "record_key",
    "resolve_source",
    "source_key",
]

JSONL_SUFFIXES = (".jsonl", ".ndjson")


def resolve_source(source: str | os.PathLike[str]) -> str:
    """The absolute path of ``source`` with every symlink resolved (URIs such as ``s3://`` unchanged).

    Records are keyed by it, so the same file reached from another working directory, through a
    symlinked folder or under another relative spelling is the same input.
    """
    text = os.fspath(source)
    return text if "://" in text else os.path.realpath(text)


def source_key(source: str, frame: int | None) -> tuple[str, int | None]:
    """How an input is matched to its record: ``(resolved path, case-folded where the OS folds, frame)``."""
    return os.path.normcase(resolve_source(source)), frame


def record_key(rec: Mapping[str, Any]) -> tuple[str, int | None]:
    """The key of a record read back: its ``path``, or for files older than ``path``, its ``source``."""
    frame = rec.get("frame")
    return source_key(str(rec.get("path") or rec["source"]), frame if isinstance(frame, int) else None)


def parse_record(line: bytes) -> dict[str, Any] | None:
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
            rec = parse_record(line)
            if rec is None:
                if skip_corrupt:
                    continue
                raise ValueError(f"Line {lineno} of {os.fspath(path)!r} is not a visionkit record.")
            yield rec


def lock_output(fh: io.BufferedWriter, path: Path) -> None:
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


def os_reason(path: Path, exc: OSError) -> str:
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


def io_error(path: Path, exc: OSError, doing: str) -> InvalidOptionError:
    """The error for a results file that cannot be read or written, with the reason in words."""
    return InvalidOptionError(f"Cannot {doing} results file {str(path)!r}: {os_reason(path, exc)}.")


class JsonlSink:
    """Append-only, locked JSONL file that knows which inputs it already holds.

    Attributes:
        done: keys (:func:`source_key`) of the inputs already in the file.
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
            raise io_error(path, exc, "write") from exc
        lock_output(self._fh, path)
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
                    rec = parse_record(line) if line.strip() else None
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
                    self.done.add(record_key(rec))
            if good < self.path.stat().st_size:
                with open(self.path, "r+b") as fh:
                    fh.truncate(good)
            if missing_newline:
                self._fh.write(b"\n")
        except OSError as exc:
            raise io_error(self.path, exc, "read") from exc

    def warning(self) -> str | None:
        """What to tell the user about lines that are not records, if any."""
        if not self.corrupt_lines:
            return None
        lines = ", ".join(str(n) for n in self.corrupt_lines[:MAX_LINES_NAMED])
        more = len(self.corrupt_lines) - MAX_LINES_NAMED
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
MAX_LINES_NAMED = 20


class CocoSink(JsonlSink):
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
            raise io_error(self.final, exc, "write") from exc
        return count


def describe_error(exc: BaseException | None) -> str:
    """One line for a failed input: our errors as they are, others prefixed with their type."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, VisionKitError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
