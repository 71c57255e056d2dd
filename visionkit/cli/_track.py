"""``visionkit track``: follow objects through videos with any detector, resumable JSONL, MOT text, video.

``visionkit track yolo traffic.mp4 --tracker bytetrack --out tracks.jsonl --save-video annotated.mp4``
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from visionkit._records import JsonlSink, resolve_source, source_key
from visionkit.cli._args import add_load_flags, parse_floats, parse_kv, recipe_from_args
from visionkit.errors import InvalidOptionError
from visionkit.protocols import Task

__all__ = ["add_commands", "cmd_track"]


def add_commands(subparsers: Any) -> None:
    """Add ``track`` to the ``visionkit`` parser."""
    p = subparsers.add_parser(
        "track",
        help="follow objects through videos: ids that persist from frame to frame (any detector)",
        description=(
            "Run a detector or instance segmenter on every frame of each video and give its objects ids "
            "with a tracker (ByteTrack, SORT, OC-SORT). --out is resumable: a run stopped by Ctrl-C or "
            "killed continues where it stopped, without duplicates (frames already written are replayed "
            "through the detector to rebuild the tracker state, then only the missing frames are written)."
        ),
    )
    p.add_argument("name", help="backend name or alias (a Detector or InstanceSegmenter)")
    p.add_argument("sources", nargs="+", help="video files, folders of frames, camera indices or stream URLs")
    add_load_flags(p)
    p.add_argument("--task", help="detect or segment_instances (default: the richest the backend offers)")
    p.add_argument("--tracker", default="bytetrack", help="bytetrack (default), sort or ocsort")
    p.add_argument(
        "-T", "--tracker-option", action="append", metavar="KEY=VALUE", help="tracker option (repeatable)"
    )
    p.add_argument("--every", type=int, default=1, help="track every N-th frame (default 1)")
    p.add_argument("--out", metavar="JSONL", help="one JSON record per frame; resumable")
    p.add_argument("--mot", metavar="TXT", help="MOT-challenge text (one source only)")
    p.add_argument(
        "--save-video", metavar="PATH", help="annotated video with ids and trails (one source only)"
    )
    p.add_argument("--trail", type=int, default=30, help="trail length in frames on the saved video")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the saved video")
    p.add_argument(
        "--box",
        action="append",
        metavar="[ID@]FRAME:X1,Y1,X2,Y2",
        help="promptable video segmenters (sam2): a box prompt for an object on a frame (repeatable)",
    )
    p.add_argument(
        "--point",
        action="append",
        metavar="[ID@]FRAME:X,Y[:LABEL]",
        help="promptable video segmenters: a click (label 1 foreground, 0 background) for an object",
    )
    p.add_argument("--quiet", action="store_true", help="no per-frame lines")
    p.set_defaults(func=cmd_track)


def cmd_track(args: argparse.Namespace) -> int:
    """Run ``visionkit track``."""
    from visionkit.tracking import TrailDrawer, VideoWriter, mot_lines, track

    if args.every < 1:
        raise InvalidOptionError(f"--every must be >= 1, but got {args.every}.")
    if (args.mot or args.save_video) and len(args.sources) > 1:
        raise InvalidOptionError("--mot and --save-video take one source; run once per video.")
    recipe = recipe_from_args(args)
    # Load without the task: tracking checks it itself (detect or segment_instances only).
    backend = recipe.with_task(None).load()
    prompts = video_prompts(args.box, args.point)
    tracker: Any
    if prompts:
        if not callable(getattr(backend, "track", None)):
            raise InvalidOptionError(
                f"--box/--point prompt a promptable video segmenter such as sam2; {args.name!r} is not one "
                "(detectors are tracked without prompts)."
            )
        tracker = _Prompted(backend, prompts)
    else:
        tracker = track(backend, args.tracker, task=recipe.task, **parse_kv(args.tracker_option))
    frames_written = skipped = 0
    with ExitStack() as stack:
        records = JsonlSink(Path(args.out), tracker.task) if args.out else None
        if records is not None:
            stack.callback(records.close)
            note = records.warning()
            if note is not None:
                print(f"warning: {note}", file=sys.stderr)
        mot = stack.enter_context(open(args.mot, "w", encoding="utf-8")) if args.mot else None
        video = stack.enter_context(VideoWriter(args.save_video, fps=args.fps)) if args.save_video else None
        drawer = TrailDrawer(args.trail) if video is not None else None
        for source in args.sources:
            path = resolve_source(source)
            for frame in tracker.track(source, every=args.every):
                frame_index = frame.index
                if mot is not None:
                    mot.writelines(line + "\n" for line in mot_lines(frame))
                if video is not None and drawer is not None:
                    video.write(drawer.draw(frame))
                if records is not None:
                    if source_key(source, frame_index) in records.done:
                        skipped += 1
                        continue
                    records.write(
                        {
                            "source": source,
                            "path": path,
                            "frame": frame_index,
                            "task": tracker.task.value,
                            "type": type(frame.result).__name__,
                            "result": frame.result.to_dict(),
                        }
                    )
                    records.flush()  # a record is on disk before the next frame: a kill loses none
                frames_written += 1
                if not args.quiet:
                    ids = frame.object_ids.tolist()
                    print(f"{source} frame {frame_index}: {len(ids)} tracked, ids {ids}")
    print(
        f"tracked {frames_written} frame(s)"
        + (f", {skipped} already in {args.out}" if skipped else "")
        + (f"; records: {args.out}" if args.out else "")
    )
    return 0


class _Prompted:
    """A promptable video segmenter (``backend.track(source, prompts=...)``) driven like a tracker."""

    task = Task.SEGMENT_INSTANCES

    def __init__(self, backend: Any, prompts: dict[int, list[dict[str, Any]]]) -> None:
        self.backend, self.prompts = backend, prompts

    def track(self, source: str, every: int = 1) -> Any:
        if every != 1:
            raise InvalidOptionError(
                "--every applies to detector tracking; prompted tracking reads every frame."
            )
        return self.backend.track(source, prompts=self.prompts)


def video_prompts(boxes: list[str] | None, points: list[str] | None) -> dict[int, list[dict[str, Any]]]:
    """``--box [ID@]FRAME:X1,Y1,X2,Y2`` / ``--point [ID@]FRAME:X,Y[:LABEL]`` as ``{id: [prompt, ...]}``.

    A flag without ``ID@`` starts a new object; points of one object on one frame are grouped.
    """
    prompts: dict[int, list[dict[str, Any]]] = {}

    def target(text: str, flag: str) -> tuple[int, int, str]:
        head, sep, rest = text.partition(":")
        if not sep:
            raise InvalidOptionError(
                f"{flag} {text!r} must look like [ID@]FRAME:numbers, e.g. 0:50,60,200,220."
            )
        ident, at, frame = head.rpartition("@")
        try:
            obj = int(ident) if at else max(prompts, default=0) + 1
            return obj, int(frame), rest
        except ValueError:
            raise InvalidOptionError(f"{flag} {text!r}: ID and FRAME must be integers.") from None

    for text in boxes or []:
        obj, frame, rest = target(text, "--box")
        prompts.setdefault(obj, []).append({"frame": frame, "boxes": [parse_floats(rest, 4, "--box")]})
    for text in points or []:
        obj, frame, rest = target(text, "--point")
        xy, _, label = rest.partition(":")
        if label not in ("", "0", "1"):
            raise InvalidOptionError(f"--point {text!r}: LABEL must be 1 (foreground) or 0 (background).")
        entry = next((p for p in prompts.get(obj, []) if p["frame"] == frame and "points" in p), None)
        if entry is None:
            entry = {"frame": frame, "points": [], "labels": []}
            prompts.setdefault(obj, []).append(entry)
        entry["points"].append(parse_floats(xy, 2, "--point"))
        entry["labels"].append(int(label or 1))
    return prompts
