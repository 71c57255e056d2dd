"""``visionkit predict``: explicit files here; folders, globs, videos and ``--out`` streamed (resumable,
batched), optionally on Ray.

Heavy modules (tqdm, cv2, ray) are imported only when a run needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionkit._records import describe_error, resolve_source
from visionkit.cli._args import add_load_flags, prompt_from_args, recipe_from_args, writable_file
from visionkit.errors import BackendError, BackendUnavailableError, InvalidOptionError, VisionKitError
from visionkit.loading import LoadRecipe, resolve_task
from visionkit.protocols import Task

__all__ = ["add_commands", "annotated_names", "cmd_predict"]

#: Failures listed one by one at the end of a streamed run; more are counted.
_MAX_LISTED = 20


def add_commands(sub: Any) -> None:
    """Add ``predict``."""
    p = sub.add_parser("predict", help="run a backend on images, print and save results")
    p.add_argument("name", help="backend name or alias")
    p.add_argument("images", nargs="+", help="image files, directories, glob patterns or videos")
    add_load_flags(p)
    p.add_argument("--task", help="task to run (default: the richest the backend offers)")
    p.add_argument("--json", metavar="PATH", help="write all results as JSON")
    p.add_argument("--save-dir", metavar="DIR", help="write annotated images here")
    p.add_argument("--point", action="append", metavar="X,Y", help="prompt point (prompt segmenters)")
    p.add_argument("--box", action="append", metavar="X1,Y1,X2,Y2", help="prompt box (prompt segmenters)")
    g = p.add_argument_group("folders, globs, video (streamed, resumable)")
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
    p.set_defaults(func=cmd_predict)


@dataclass(frozen=True)
class _Run:
    """Everything ``predict`` does besides loading, as plain values taken from the arguments once."""

    inputs: tuple[str, ...]
    prompt: dict[str, Any] | None
    json: str | None
    save_dir: Path | None
    out: str | None
    every: int
    batch_size: int | None
    strict: bool
    categories: str | None
    progress: bool
    ray: bool
    ray_address: str | None
    ray_workers: int
    ray_gpus: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> _Run:
        return cls(
            inputs=tuple(str(i) for i in args.images),
            prompt=prompt_from_args(args),
            json=args.json,
            save_dir=Path(args.save_dir) if args.save_dir else None,
            out=args.out,
            every=args.every,
            batch_size=args.batch_size,
            strict=args.strict,
            categories=args.categories,
            progress=not args.no_progress and sys.stderr.isatty(),
            ray=bool(args.ray or args.ray_address),
            ray_address=args.ray_address,
            ray_workers=args.ray_workers,
            ray_gpus=args.ray_gpus,
        )

    @property
    def streamed(self) -> bool:
        """A directory, glob or video input, or a streaming flag."""
        from visionkit.stream import is_stream_input

        flags = (
            self.out
            or self.ray
            or self.strict
            or self.batch_size is not None  # --batch-size 0 must reach its check
            or self.every != 1
        )
        return bool(flags) or any(is_stream_input(i) for i in self.inputs)


def cmd_predict(args: argparse.Namespace) -> int:
    """``visionkit predict``; the exit status.

    Files named one by one: every file is tried; one that cannot be predicted is reported (``failed:
    ...``) and skipped. 0 all predicted, 1 some failed, 2 none could be predicted (or a usage error),
    130 interrupted (``--json`` then holds the results so far). Streamed runs: see :func:`_stream`.
    """
    recipe, run = recipe_from_args(args), _Run.from_args(args)
    if run.streamed:
        return _stream(recipe, run)
    return _files(recipe, run)


def annotated_names(sources: Sequence[str]) -> Callable[[str, int | None], str]:
    """File names for ``--save-dir``: ``stem.jpg`` (video frames ``stem_f000005.jpg``).

    Sources that share a stem (``a/x.jpg`` and ``b/x.jpg``, or ``x.png`` next to ``x.jpg``) get
    ``stem-<8 hex digits of their resolved path's sha1>.jpg`` instead, so none overwrites another and a
    re-run gives every source the same name.
    """
    by_stem: dict[str, set[str]] = {}
    for src in sources:
        by_stem.setdefault(Path(src).stem.casefold(), set()).add(resolve_source(src))

    def name(source: str, frame: int | None = None) -> str:
        stem = Path(source).stem
        if len(by_stem.get(stem.casefold(), ())) > 1:
            stem += "-" + hashlib.sha1(resolve_source(source).encode()).hexdigest()[:8]
        return stem + ("" if frame is None else f"_f{frame:06d}") + ".jpg"

    return name


def _check_prompt_task(recipe: LoadRecipe, run: _Run, task: Task) -> None:
    """``--point``/``--box`` only with ``segment_prompt``: refused, not ignored, for other tasks."""
    if task is not Task.SEGMENT_PROMPT and run.prompt:
        raise InvalidOptionError(
            f"--point and --box are prompts for task 'segment_prompt', but backend {recipe.name!r} runs "
            f"{task.value!r} here; drop them, or pass --task segment_prompt to a prompt segmenter."
        )


# -- files named one by one --------------------------------------------------------------------------
def _describe(result: Any) -> list[str]:
    from visionkit.results import Classifications, Detections, PromptMasks, SemanticMask

    if isinstance(result, Detections):
        lines = [f"{len(result)} detections"]
        for d in result:
            box = ", ".join(f"{v:.1f}" for v in d.xyxy)
            lines.append(f"  {d.class_name}: {d.confidence:.3f} at [{box}]")
        return lines
    if isinstance(result, Classifications):
        return [f"top-{len(result)}"] + [f"  {name}: {conf:.3f}" for _, name, conf in result]
    if isinstance(result, SemanticMask):
        return ["classes present: " + ", ".join(result.present_classes())]
    if isinstance(result, PromptMasks):
        return [f"{len(result)} masks"] + [
            f"  prompt {int(p)}: score {float(s):.3f}, {int(m.sum())} px"
            for p, s, m in zip(result.prompt_index, result.score, result.mask, strict=True)
        ]
    return [repr(result)]


def _files(recipe: LoadRecipe, run: _Run) -> int:
    json_path = writable_file(run.json, "--json") if run.json else None
    backend = recipe.load()
    task = resolve_task(backend, recipe.task)
    _check_prompt_task(recipe, run, task)
    if run.save_dir:
        run.save_dir.mkdir(parents=True, exist_ok=True)
    name_of = annotated_names(list(run.inputs))
    records: list[dict[str, Any]] = []
    failed: list[str] = []
    finished = False
    try:
        for source in run.inputs:
            try:
                if task is Task.SEGMENT_PROMPT:
                    result = backend.segment_prompt(source, **(run.prompt or {}))
                else:
                    result = getattr(backend, task.value)(source)
            except Exception as exc:  # one bad file costs only itself, as in the streamed path
                failed.append(f"{source}: {describe_error(exc)}")
                if len(run.inputs) > 1:
                    print(f"failed: {failed[-1]}", file=sys.stderr, flush=True)
                    continue
                if isinstance(exc, VisionKitError):
                    raise  # the only input: its error is the command's error
                raise BackendError(failed[-1]) from exc
            print(f"{source}: " + "\n".join(_describe(result)))
            records.append(
                {
                    "source": source,
                    "task": task.value,
                    "type": type(result).__name__,
                    "result": result.to_dict(),
                }
            )
            if run.save_dir:
                from visionkit.draw import annotate

                out = run.save_dir / name_of(source, None)
                annotate(source, result).save(out, quality=90)
                print(f"  annotated image: {out}")
        finished = True
    except KeyboardInterrupt:
        where = f"; results so far in {json_path}" if json_path and records else ""
        print(
            f"\ninterrupted after {len(records) + len(failed)} of {len(run.inputs)} input(s){where}",
            file=sys.stderr,
        )
        return 130
    finally:
        if json_path is not None and records:  # what was done is kept, whatever stopped the loop
            json_path.write_text(json.dumps(records))
            if finished:
                print(f"wrote {len(records)} result(s) to {json_path}")
    if failed:
        print(f"{len(records)} predicted, {len(failed)} failed", file=sys.stderr)
        if not records:
            raise VisionKitError(f"None of the {len(failed)} inputs could be predicted (listed above).")
        return 1
    return 0


# -- folders, globs, videos ------------------------------------------------------------------------
def _stream(recipe: LoadRecipe, run: _Run) -> int:
    """Streamed ``predict``: 0 when the run finished (failed inputs are listed), 1 with ``--strict``
    when any input failed, 130 when interrupted (re-run the same command to resume)."""
    if run.json:
        raise InvalidOptionError(
            "--json keeps every result in memory; with folders, globs or video write them as they come "
            "with --out results.jsonl (or --out results.json for COCO results)."
        )
    if run.every < 1:
        raise InvalidOptionError(f"--every must be a positive number of frames, but got {run.every}.")
    if run.batch_size is not None and run.batch_size < 1:
        raise InvalidOptionError(f"--batch-size must be at least 1, but got {run.batch_size}.")
    if run.ray_workers < 1:
        raise InvalidOptionError(f"--ray-workers must be at least 1, but got {run.ray_workers}.")
    if run.ray_gpus < 0:
        raise InvalidOptionError(f"--ray-gpus must be 0 or more, but got {run.ray_gpus}.")
    if run.out and Path(run.out).suffix.lower() in (".jsonl", ".ndjson", ".json"):
        writable_file(run.out, "--out")  # before the model loads, not after
    try:
        summary = _run_ray(recipe, run) if run.ray else _run_local(recipe, run)
    except KeyboardInterrupt:
        where = f" with --out {run.out}" if run.out else ""
        print(f"\ninterrupted; run the same command again{where} to resume.", file=sys.stderr)
        return 130
    for failure in summary.failed[:_MAX_LISTED]:
        print(f"failed: {failure}", file=sys.stderr)
    if len(summary.failed) > _MAX_LISTED:
        print(f"... and {len(summary.failed) - _MAX_LISTED} more failures", file=sys.stderr)
    print(str(summary), file=sys.stderr)
    return 1 if run.strict and summary.failed else 0


def _run_local(recipe: LoadRecipe, run: _Run) -> Any:
    from visionkit.stream import expand_inputs, predict_stream

    backend = recipe.load()
    task = resolve_task(backend, recipe.task, prompt=run.prompt is not None)
    _check_prompt_task(recipe, run, task)
    name_of: Callable[[str, int | None], str] | None = None
    if run.save_dir is not None:
        run.save_dir.mkdir(parents=True, exist_ok=True)
        name_of = annotated_names(expand_inputs(list(run.inputs))[0])

    def on_result(item: Any, result: Any, image: Any) -> None:
        if run.out is None:
            where = item.source if item.frame is None else f"{item.source}#{item.frame}"
            print(f"{where}: {_one_line(result)}", flush=True)
        if run.save_dir is not None and name_of is not None:
            from visionkit.draw import annotate

            annotate(image, result).save(run.save_dir / name_of(item.source, item.frame), quality=90)

    return predict_stream(
        backend,
        list(run.inputs),
        out=run.out,
        task=task,
        every=run.every,
        batch_size=run.batch_size,
        categories=run.categories,
        prompt=run.prompt,
        progress=run.progress,
        on_result=on_result,
        on_failure=None if run.progress else (lambda f: print(f"failed: {f}", file=sys.stderr)),
    )


def _run_ray(recipe: LoadRecipe, run: _Run) -> Any:
    if not run.out:
        raise InvalidOptionError(
            "--ray writes its results to --out (a .jsonl file or a directory for Parquet)."
        )
    if run.every != 1 or run.prompt:
        raise InvalidOptionError(
            "--ray runs image files with a batch task; --every and prompts are local only."
        )
    try:
        from visionkit.ray import predict_ray
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(
            "ray", [exc.name or "ray"], "pip install 'visionkit-core[ray]'"
        ) from exc
    return predict_ray(  # the recipe carries the task, parsed once by recipe_from_args
        recipe,
        list(run.inputs),
        out=run.out,
        batch_size=run.batch_size or 8,
        workers=run.ray_workers,
        num_gpus=run.ray_gpus,
        address=run.ray_address,
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
