"""Let visionkit pick the recipe: ``precision="auto"`` and ``visionkit tune``.

::

    report = visionkit.tune.tune("yolo", weights="yolov8n.pt", images="photos/", max_drop=1.0)
    print(report.table())                     # every candidate: accuracy change, median ms, ratio, pick
    det = visionkit.load("yolo", weights="yolov8n.pt", precision="auto")   # the cached pick, instantly
    det.runtime["auto"]                       # what was picked and why (the same table, as a dict)

The candidates are every way this machine can run the backend: its native precisions (``fp32``, plus
``bf16`` where the backend declares it, ``fp16`` only on a GPU device) and every installed runtime's
precisions (``onnxruntime:int8``, ``openvino:bf16`` ...). Each is loaded once and measured on the same
images:

- **accuracy change** against the backend's own fp32 output, in points (0-100): detectors score the
  candidate's detections with COCO AP@[.5:.95] (pycocotools) against the fp32 detections as pseudo
  ground truth, or real AP with ``coco=annotations.json``; classifiers: top-1 agreement in %; semantic
  segmenters: mIoU against the fp32 label maps; prompt segmenters: mask IoU for a centre click;
- **latency**: end-to-end per image (the task verb, batch 1), interleaved rounds over the candidates,
  warm-up calls discarded, the median over all rounds.

The pick is the fastest candidate whose accuracy change is within ``max_drop`` points. Candidates that
cannot run (a runtime's library missing, an export that fails) are reported with the reason; only a
failing fp32 reference is fatal (nothing to measure against).

The measurements are cached as JSON under ``$VISIONKIT_CACHE/tune`` (default ``~/.cache/visionkit/tune``),
keyed by this machine (CPU model, ISA flags, core count, GPU name on a GPU device), the
library versions, the backend, the weights file (path, size, mtime; ``"random"`` for none), the device,
the task and the backend and runtime options. The images and ``max_drop`` are not in the key: the last
measurement for a key is the one ``precision="auto"`` uses, and a different ``max_drop`` re-picks from it
without measuring again.

``visionkit.load(name, precision="auto")`` resolves through this module (the package root installs
:func:`load_auto` as the loading layer's auto-precision hook, so the loading layer never imports a tool).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from visionkit._tools import SCHEMA_VERSION, option_fields, synthetic_image
from visionkit.bench import environment
from visionkit.coco import to_coco_results
from visionkit.errors import BackendError, DatasetError, InvalidOptionError, VisionKitError
from visionkit.evaluation import (
    COCO_SCORE_THRESHOLD,
    SCORE_OPTIONS,
    coco_metrics,
    confusion_matrix,
    iou_from_confusion,
    load_coco,
)
from visionkit.images import list_images, load_image
from visionkit.loading import DEFAULT, LoadRecipe, load, resolve_task
from visionkit.protocols import Task
from visionkit.registry import BackendSpec, Registry, get_registry
from visionkit.weights import weights_dirs

__all__ = [
    "AUTO",
    "AUTO_RUNTIME_OPTIONS",
    "CACHE_FORMAT",
    "CandidateResult",
    "TuneReport",
    "cache_dir",
    "cache_key",
    "cached",
    "candidates_for",
    "load_auto",
    "tune",
]

#: The precision that asks visionkit to measure and pick.
AUTO = "auto"
#: ``runtime_options`` keys that ``load(precision="auto")`` reads itself (not passed to a runtime):
#: ``max_drop`` (accuracy budget in points, default 1.0) and ``retune`` (measure again even when cached).
#: ``calib`` is read too (the images to measure on) and also passed on, as the INT8 calibration folder.
AUTO_RUNTIME_OPTIONS = ("max_drop", "retune")
#: Version of the cache file layout; bumped when the measurement changes meaning.
CACHE_FORMAT = 1
#: Images measured when tuning (the first N of a folder, sorted by name).
DEFAULT_MAX_IMAGES = 8
# Libraries whose version changes the speed of some candidate: a new one means measuring again.
_VERSIONED = ("torch", "onnxruntime", "openvino", "nncf", "ultralytics", "transformers")


# -- reports --------------------------------------------------------------------------------------
class CandidateResult(BaseModel):
    """One candidate recipe and what was measured for it (``error`` when it could not run)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = Field(description="`precision` for the backend's own code, else `runtime:precision`.")
    runtime: str | None = Field(None, description="Runtime plugin that ran it; None: the backend's own code.")
    precision: str
    ran: str | None = Field(None, description="What the loaded backend reports running (runtime:precision).")
    score: float | None = Field(None, description="Accuracy in points (0-100), see TuneReport.metric.")
    change: float | None = Field(None, description="score minus the fp32 reference's score, in points.")
    median_ms: float | None = Field(None, description="Median end-to-end ms per image over all rounds.")
    ratio: float | None = Field(None, description="median_ms / the fp32 reference's median_ms.")
    runs: int = 0
    load_s: float | None = Field(None, description="Seconds to load (and export/quantize) it.")
    within_budget: bool = False
    picked: bool = False
    error: str | None = None


class TuneReport(BaseModel):
    """Every candidate measured for one backend on this machine, and the pick."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    backend: str
    task: str
    device: str
    metric: str = Field(description="What `score` measures, e.g. 'AP vs fp32 detections'.")
    max_drop: float
    picked: str = Field(description="Label of the picked candidate.")
    picked_runtime: str | None
    picked_precision: str
    reason: str
    candidates: list[CandidateResult]
    images: int = Field(description="Images measured on.")
    image_source: str
    runs: int
    warmup: int
    rounds: int
    seconds: float = Field(description="Wall time the measurement took.")
    measured_at: str
    key: str = Field("", description="Cache key (sha256 of `fingerprint`).")
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    cache_file: str | None = None
    from_cache: bool = False
    notes: list[str] = Field(default_factory=list)

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (what the cache file holds)."""
        return self.model_dump_json(indent=indent)

    def summary(self) -> dict[str, Any]:
        """What ``backend.runtime["auto"]`` holds: the pick, why, and one row per candidate."""
        return {
            "picked": self.picked,
            "reason": self.reason,
            "max_drop": self.max_drop,
            "metric": self.metric,
            "from_cache": self.from_cache,
            "cache_file": self.cache_file,
            "measured_at": self.measured_at,
            "candidates": [c.model_dump() for c in self.candidates],
        }

    def repick(self, max_drop: float) -> TuneReport:
        """The same measurements with the pick made for another accuracy budget (no measuring)."""
        rows, picked, reason = _pick(self.candidates, max_drop, self.metric)
        return self.model_copy(
            update={
                "max_drop": float(max_drop),
                "candidates": rows,
                "picked": picked.label,
                "picked_runtime": picked.runtime,
                "picked_precision": picked.precision,
                "reason": reason,
            }
        )

    def table(self) -> str:
        """One row per candidate: accuracy change, median latency, ratio to fp32, the pick."""
        head = f"{'candidate':<22}{'ran':<22}{'score':>7}{'change':>8}{'median ms':>11}{'x fp32':>8}{'load s':>8}  picked"
        lines = [head, "-" * len(head)]
        for c in self.candidates:
            if c.error:
                lines.append(f"{c.label:<22}error: {c.error}")
                continue
            mark = (
                "<- picked"
                if c.picked
                else f"ran as {c.ran}"
                if c.ran and c.ran != c.label
                else ""
                if c.within_budget
                else f"over {self.max_drop:g} budget"
            )
            lines.append(
                f"{c.label:<22}{(c.ran or '-'):<22}{_num(c.score, 1):>7}{_signed(c.change):>8}"
                f"{_num(c.median_ms, 2):>11}{_num(c.ratio, 2):>8}{_num(c.load_s, 1):>8}  {mark}"
            )
        lines.append(
            f"score: {self.metric} (0-100); change vs fp32 in points; latency end to end per image, median of "
            f"{self.rounds} interleaved round(s) x {self.runs} runs after {self.warmup} warm-up; {self.images} "
            f"image(s) from {self.image_source}; device {self.device}"
        )
        lines.append(f"picked {self.picked}: {self.reason}")
        if self.from_cache:
            lines.append(f"from the cache ({self.cache_file}), measured {self.measured_at}")
        elif self.cache_file:
            lines.append(f"cached in {self.cache_file}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def _signed(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:+.2f}"


def _label(runtime: str | None, precision: str) -> str:
    return precision if runtime is None else f"{runtime}:{precision}"


# -- candidates ----------------------------------------------------------------------------------------
def _is_gpu(device: str) -> bool:
    return str(device).startswith(("cuda", "mps"))


def candidates_for(
    spec: BackendSpec, registry: Registry, device: str = "cpu", runtime: str | None = None
) -> list[tuple[str | None, str]]:
    """``(runtime or None, precision)`` pairs worth measuring for ``spec`` on ``device``, fp32 first.

    Native precisions the backend declares (``fp16`` only on a GPU), then each registered runtime's
    precisions by runtime name (``fp16`` only on a GPU). With ``runtime``, only that runtime's (the
    native fp32 reference is always measured).
    """
    out: list[tuple[str | None, str]] = [(None, "fp32")]
    if runtime is None:
        out += [
            (None, p)
            for p in spec.precisions
            if p not in ("fp32", "int8") and (p != "fp16" or _is_gpu(device))
        ]
        out += [(None, "int8")] if "int8" in spec.precisions else []
    names = sorted(registry.runtimes) if runtime is None else [runtime]
    for name in names:
        rt = registry.runtimes.get(name)
        if rt is None:
            known = ", ".join(sorted(registry.runtimes)) or "(none installed)"
            raise InvalidOptionError(f"Unknown runtime {name!r}; installed runtimes: {known}.")
        out += [(name, p) for p in rt.precisions if p != "fp16" or _is_gpu(device)]
    return out


def _parse_candidate(text: str, registry: Registry) -> tuple[str | None, str]:
    """``"bf16"`` → native bf16; ``"onnxruntime:int8"`` → that runtime's int8."""
    runtime, sep, precision = text.rpartition(":")
    if not sep:
        return None, text
    if runtime not in registry.runtimes:
        known = ", ".join(sorted(registry.runtimes)) or "(none installed)"
        raise InvalidOptionError(
            f"Candidate {text!r} names runtime {runtime!r}; installed runtimes: {known}."
        )
    return runtime, precision


# -- fingerprints and the cache -----------------------------------------------------------------------
def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else ``$VISIONKIT_CACHE/tune``, else ``~/.cache/visionkit/tune`` (as the runtimes' caches)."""
    if path is not None:
        return Path(path).expanduser()
    root = os.environ.get("VISIONKIT_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "visionkit") / "tune"


def _machine(device: str) -> dict[str, Any]:
    env = environment()
    out: dict[str, Any] = {
        "cpu": env.processor or env.machine,
        "cpu_flags": env.cpu_flags,
        "cpu_count": env.cpu_count,
    }
    if _is_gpu(device):
        out["gpu"] = _gpu_name(device)
    return out


def _gpu_name(device: str) -> str | None:
    # A GPU device means the backend imports torch anyway; the name tells an H200 from a T4.
    try:
        import torch

        if str(device).startswith("cuda") and torch.cuda.is_available():
            index = int(device.split(":")[1]) if ":" in device else 0
            return str(torch.cuda.get_device_name(index))
    except Exception:  # no torch, no driver: the device string alone keys it
        return None
    return None


def _versions() -> dict[str, str]:
    from visionkit import __version__

    out = {"visionkit": __version__}
    for dist in _VERSIONED:
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def _weights_id(weights: Any, spec: BackendSpec) -> dict[str, Any] | str:
    """The weights as a key: ``"random"``, a file's path + size + mtime, or a name not found locally."""
    w = spec.default_weights if weights == DEFAULT else weights
    if w is None:
        return "random"
    path = Path(os.fspath(w)).expanduser()
    found = path if path.is_file() else next((d / path for d in weights_dirs() if (d / path).is_file()), None)
    if found is None:
        return f"name:{os.fspath(w)}"
    st = found.stat()
    return {"path": str(found.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def cache_key(
    name: str,
    *,
    weights: Any = DEFAULT,
    device: str = "cpu",
    task: Task | str | None = None,
    options: Mapping[str, Any] | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    runtime: str | None = None,
    registry: Registry | None = None,
) -> tuple[str, dict[str, Any]]:
    """``(sha256 hex, the fingerprint it hashes)`` for a backend on this machine (see the module doc)."""
    reg = registry or get_registry()
    spec = reg.get(name)
    rt_opts = {k: v for k, v in (runtime_options or {}).items() if k not in AUTO_RUNTIME_OPTIONS}
    fingerprint = {
        "format": CACHE_FORMAT,
        "machine": _machine(device),
        "versions": _versions(),
        "backend": spec.name,
        "task": None if task is None else Task.parse(task).value,
        "weights": _weights_id(weights, spec),
        "device": str(device),
        "options": _jsonable(dict(options or {})),
        "runtime_options": _jsonable(rt_opts),
        "runtime": runtime,
    }
    text = json.dumps(fingerprint, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), fingerprint


def _cache_file(folder: Path, backend: str, key: str) -> Path:
    return folder / f"{backend}-{key[:24]}.json"


def cached(
    name: str,
    *,
    max_drop: float = 1.0,
    weights: Any = DEFAULT,
    device: str = "cpu",
    task: Task | str | None = None,
    options: Mapping[str, Any] | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    runtime: str | None = None,
    registry: Registry | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> TuneReport | None:
    """The cached measurement for this key, picked for ``max_drop``; ``None`` when there is none.

    An unreadable or stale file (another format, another key) counts as none.
    """
    reg = registry or get_registry()
    key, _ = cache_key(
        name,
        weights=weights,
        device=device,
        task=task,
        options=options,
        runtime_options=runtime_options,
        runtime=runtime,
        registry=reg,
    )
    path = _cache_file(cache_dir(cache), reg.get(name).name, key)
    try:
        report = TuneReport.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None
    if report.key != key or report.fingerprint.get("format") != CACHE_FORMAT:
        return None
    return report.repick(max_drop).model_copy(update={"from_cache": True, "cache_file": str(path)})


def _write_cache(report: TuneReport, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = _cache_file(folder, report.backend, report.key)
    report = report.model_copy(update={"cache_file": str(path)})
    # Written whole then renamed: a reader never sees half a file, two writers leave one whole file.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=path.stem, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(report.to_json())
    os.replace(tmp, path)
    return path


# -- images ---------------------------------------------------------------------------------------------
def default_images() -> tuple[list[Path], str]:
    """What to tune on when no images are given: ``VISIONKIT_CALIB``, else visionkit-onnx's bundled photos."""
    env = os.environ.get("VISIONKIT_CALIB")
    if env and Path(env).is_dir():
        return list_images(env), f"VISIONKIT_CALIB ({env})"
    with contextlib.suppress(ImportError, ValueError):
        found = importlib.util.find_spec("visionkit_onnx")  # its package data; the plugin is not imported
        if found is not None and found.origin:
            folder = Path(found.origin).parent / "calibration"
            if folder.is_dir() and list_images(folder):
                return list_images(folder), "the photos bundled with visionkit-onnx"
    return [], "the synthetic test image"


def _gather(
    images: str | os.PathLike[str] | Sequence[Any] | None, max_images: int
) -> tuple[list[np.ndarray], list[str], str]:
    """Decoded images (so decoding is never timed), their names, and where they came from."""
    if images is None:
        paths, source = default_images()
        if not paths:
            return [synthetic_image(480, 640)], ["synthetic"], source
        items: list[Any] = list(paths)
    elif isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
        items, source = list(list_images(images)), str(images)
        if not items:
            raise DatasetError(f"No image files found in {str(images)!r}.")
    elif isinstance(images, (str, os.PathLike)):
        items, source = [images], str(images)
    else:
        items, source = list(images), f"{len(images)} given image(s)"
        if not items:
            raise InvalidOptionError("images= is an empty list; give image files or a folder.")
    items = items[:max_images]
    names = [Path(x).name if isinstance(x, (str, os.PathLike)) else f"image{i}" for i, x in enumerate(items)]
    return [load_image(x) for x in items], names, source


# -- accuracy ----------------------------------------------------------------------------------------------
def _call(bk: Any, task: Task, image: np.ndarray, **overrides: Any) -> Any:
    verb = getattr(bk, task.value)  # a task's value is its verb
    if task is Task.SEGMENT_PROMPT:
        h, w = image.shape[:2]
        return verb(image, points=[[w / 2, h / 2]], labels=[1], multimask_output=False)
    return verb(image, **overrides)


def _scoring_overrides(bk: Any, task: Task, user: Mapping[str, Any]) -> dict[str, Any]:
    """Per-call options for the scored pass: detectors keep every box down to COCO's 0.001 score.

    AP ranks boxes by score, so a box that moved from 0.26 to 0.24 across the default threshold costs a
    little, not a whole match (COCO practice). A threshold the user set is kept.
    """
    if task not in (Task.DETECT, Task.SEGMENT_INSTANCES):
        return {}
    fields = option_fields(bk)
    score = next((n for n in SCORE_OPTIONS if n in fields), None)
    if score is None or score in user:
        return {}
    try:
        bk.with_options({score: COCO_SCORE_THRESHOLD})  # a bounded field: keep the backend's own
    except (VisionKitError, AttributeError):
        return {}
    return {score: COCO_SCORE_THRESHOLD}


def _metric_name(task: Task, coco: bool) -> str:
    if task in (Task.DETECT, Task.SEGMENT_INSTANCES):
        return "COCO AP (real labels)" if coco else "AP vs fp32 detections"
    return {
        Task.CLASSIFY: "top-1 agreement with fp32 %",
        Task.SEGMENT_SEMANTIC: "mIoU vs fp32 label maps",
        Task.SEGMENT_PROMPT: "mask IoU vs fp32 (centre click)",
    }[task]


class _Scorer:
    """Scores a candidate's outputs against the reference's (or real COCO labels), in points 0-100."""

    def __init__(
        self, task: Task, sizes: list[tuple[int, int]], coco: Any = None, ids: Sequence[int] = ()
    ) -> None:
        self.task, self.sizes, self.coco, self.ids = task, sizes, coco, list(ids)
        self.notes: list[str] = []
        self._gt: Any = None

    def reference(self, outputs: list[Any]) -> None:
        if self.task in (Task.DETECT, Task.SEGMENT_INSTANCES) and self.coco is None:
            self._gt = self._pseudo_gt(outputs)
        self.ref = outputs

    def __call__(self, outputs: list[Any]) -> float:
        if self.task in (Task.DETECT, Task.SEGMENT_INSTANCES):
            return self._ap(outputs)
        if self.task is Task.CLASSIFY:
            same = [
                bool(len(a.class_id) and len(b.class_id) and int(a.class_id[0]) == int(b.class_id[0]))
                for a, b in zip(self.ref, outputs, strict=True)
            ]
            return 100.0 * float(np.mean(same))
        if self.task is Task.SEGMENT_SEMANTIC:
            n = 1 + max(
                int(max(r.label_map.max(), o.label_map.max())) for r, o in zip(self.ref, outputs, strict=True)
            )
            cm = sum(
                (
                    confusion_matrix(r.label_map, o.label_map, n)
                    for r, o in zip(self.ref, outputs, strict=True)
                ),
                np.zeros((n, n), np.int64),
            )
            return 100.0 * float(np.nanmean(iou_from_confusion(cm)))
        ious = []
        for r, o in zip(self.ref, outputs, strict=True):
            a, b = np.asarray(r.mask[0], bool), np.asarray(o.mask[0], bool)
            union = int((a | b).sum())
            ious.append(1.0 if union == 0 else int((a & b).sum()) / union)
        return 100.0 * float(np.mean(ious))

    def _pseudo_gt(self, outputs: list[Any]) -> Any:
        """The fp32 detections as a COCO ground-truth file (loaded with the public ``load_coco``)."""
        cats: dict[int, str] = {}
        anns: list[dict[str, Any]] = []
        for i, det in enumerate(outputs, start=1):
            for box, cid, cname in zip(
                np.asarray(det.xyxy), np.asarray(det.class_id), det.class_name, strict=True
            ):
                x1, y1, x2, y2 = (float(v) for v in box)
                cats[int(cid)] = str(cname)
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": i,
                        "category_id": int(cid) + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": max(x2 - x1, 0.0) * max(y2 - y1, 0.0),
                        "iscrowd": 0,
                    }
                )
        if not anns:
            self.notes.append(
                "the fp32 reference found nothing on these images, so agreement only checks that a candidate "
                "finds nothing either; tune on images with objects in them"
            )
            return None
        self.ids = list(range(1, len(outputs) + 1))
        dataset = {
            "images": [{"id": i, "width": w, "height": h} for i, (h, w) in enumerate(self.sizes, start=1)],
            "annotations": anns,
            "categories": [{"id": c + 1, "name": n} for c, n in sorted(cats.items())],
        }
        with tempfile.TemporaryDirectory(prefix="visionkit-tune-") as tmp:
            path = Path(tmp, "fp32.json")
            path.write_text(json.dumps(dataset))
            return load_coco(path)

    def _ap(self, outputs: list[Any]) -> float:
        if self.coco is not None:
            records = to_coco_results(outputs, self.ids, categories=self.coco.dataset["categories"])
            m = coco_metrics(self.coco, records, "bbox", image_ids=self.ids, max_dets=100)
            return 100.0 * (m.ap or 0.0)
        if self._gt is None:  # the reference found nothing
            return 100.0 * float(np.mean([len(o) == 0 for o in outputs]))
        mapping: dict[str | int, int] = {int(c): int(c) + 1 for o in outputs for c in np.asarray(o.class_id)}
        known = set(self._gt.cats)
        records = [
            r
            for r in to_coco_results(outputs, self.ids, class_to_category=mapping)
            if r["category_id"] in known
        ]
        m = coco_metrics(self._gt, records, "bbox", image_ids=self.ids, max_dets=100)
        return 100.0 * (m.ap or 0.0)


# -- the pick ----------------------------------------------------------------------------------------------
def _pick(
    rows: Sequence[CandidateResult], max_drop: float, metric: str
) -> tuple[list[CandidateResult], CandidateResult, str]:
    """Rows marked (within budget, picked), the pick, and why, for an accuracy budget of ``max_drop``.

    A candidate that ran as another one (``openvino:bf16`` on a CPU without bf16 runs
    ``openvino:fp32``) is never picked over that one: its timing is the other's plus noise.
    """
    if max_drop < 0 or not math.isfinite(max_drop):
        raise InvalidOptionError(f"max_drop must be a number of points >= 0, but got {max_drop!r}.")
    ok = [r for r in rows if r.error is None and r.median_ms is not None and r.change is not None]
    labels = {r.label for r in ok}
    stand_ins = [r for r in ok if r.ran is not None and r.ran != r.label and r.ran in labels]
    inside = [r for r in ok if r.change is not None and r.change >= -max_drop - 1e-9]
    choices = [r for r in inside if not any(r is d for d in stand_ins)]
    if not choices:
        raise BackendError("No candidate could be measured; see the table for each one's error.")
    best = min(choices, key=lambda r: (r.median_ms or 0.0, r.label))
    ref = next((r for r in ok if r.runtime is None and r.precision == "fp32"), None)
    excluded = sorted(
        (r for r in ok if not any(r is x for x in inside) and (r.median_ms or 0.0) < (best.median_ms or 0.0)),
        key=lambda r: r.median_ms or 0.0,
    )
    why = [
        f"the fastest within the {max_drop:g}-point budget ({best.median_ms:.2f} ms"
        + (f", {best.ratio:.2f}x fp32" if best.ratio is not None and ref is not best else "")
        + f", {metric} change {best.change:+.2f})"
    ]
    if excluded:
        why.append(
            "faster but over budget: "
            + ", ".join(f"{r.label} ({r.change:+.2f}, {r.median_ms:.2f} ms)" for r in excluded)
        )
    if stand_ins:
        why.append("not offered here: " + ", ".join(f"{r.label} (ran as {r.ran})" for r in stand_ins))
    failed = [r.label for r in rows if r.error]
    if failed:
        why.append(f"could not run: {', '.join(failed)}")
    marked = [
        r.model_copy(update={"within_budget": any(r is x for x in inside), "picked": r is best}) for r in rows
    ]
    return marked, best, "; ".join(why)


# -- measuring ---------------------------------------------------------------------------------------------
def tune(
    backend: str | LoadRecipe,
    *,
    images: str | os.PathLike[str] | Sequence[Any] | None = None,
    coco: str | os.PathLike[str] | None = None,
    max_drop: float = 1.0,
    candidates: Sequence[str] | None = None,
    weights: Any = DEFAULT,
    device: str = "cpu",
    task: Task | str | None = None,
    options: Mapping[str, Any] | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    runtime: str | None = None,
    runs: int = 5,
    warmup: int = 1,
    rounds: int = 3,
    max_images: int = DEFAULT_MAX_IMAGES,
    registry: Registry | None = None,
    cache: bool = True,
    cache_path: str | os.PathLike[str] | None = None,
    log: Callable[[str], Any] | None = None,
) -> TuneReport:
    """Measure every candidate recipe of ``backend`` on this machine and these images, pick, and cache.

    Args:
        backend: a backend name or a :class:`~visionkit.loading.LoadRecipe` (its weights, device,
            options, runtime options and task stand for the arguments of the same names).
        images: a folder, files or arrays to measure on (the first ``max_images``); default
            ``VISIONKIT_CALIB``, else visionkit-onnx's bundled photos, else the synthetic test image.
        coco: a COCO instances file whose ``file_name``\\ s are the ``images``: real AP instead of
            agreement with fp32 (detectors).
        max_drop: the accuracy budget, in points (AP points, % agreement, mIoU points).
        candidates: restrict to these (``"fp32"``, ``"bf16"``, ``"onnxruntime:int8"`` ...); default
            :func:`candidates_for`. The native fp32 reference is always measured.
        runtime: only this runtime's precisions (plus the fp32 reference).
        runs, warmup, rounds: timed calls per candidate per round, discarded calls before them, and
            interleaved rounds over the candidates.
        registry: look the backend and runtimes up here (default: the installed plugins).
        cache: write the result to the cache (:func:`cache_dir`, or ``cache_path``).
        log: called with one line per step (default: silent).

    Returns:
        A :class:`TuneReport`; ``report.table()`` prints it.

    Raises:
        BackendError: the fp32 reference itself cannot load or run (nothing to measure against).
        InvalidOptionError, DatasetError: bad arguments or images.
    """
    if isinstance(backend, LoadRecipe):
        recipe = backend
        backend, weights, device = recipe.name, recipe.weights, recipe.device
        options = {**recipe.options, **(options or {})}
        runtime_options = {**recipe.runtime_options, **(runtime_options or {})}
        task = task if task is not None else recipe.task
        runtime = runtime if runtime is not None else recipe.runtime
        if recipe.plugins and registry is None:
            registry = recipe.registry()
    if runs < 1 or warmup < 0 or rounds < 1 or max_images < 1:
        raise InvalidOptionError(
            f"runs, rounds and max_images must be >= 1 and warmup >= 0, but got runs={runs}, "
            f"rounds={rounds}, max_images={max_images}, warmup={warmup}."
        )
    say = log or (lambda _line: None)
    reg = registry or get_registry()
    spec = reg.get(backend)
    t_start = time.perf_counter()
    options = dict(options or {})
    rt_opts = {k: v for k, v in (runtime_options or {}).items() if k not in AUTO_RUNTIME_OPTIONS}
    key, fingerprint = cache_key(
        spec.name,
        weights=weights,
        device=device,
        task=task,
        options=options,
        runtime_options=rt_opts,
        runtime=runtime,
        registry=reg,
    )
    pairs = (
        [(None, "fp32")] + [_parse_candidate(c, reg) for c in candidates if c != "fp32"]
        if candidates
        else candidates_for(spec, reg, device, runtime)
    )
    pairs = list(dict.fromkeys(pairs))
    pool, names, source = _gather(images, max_images)
    coco_gt, ids = None, [0] * len(pool)
    if coco is not None:
        coco_gt = load_coco(coco)
        by_name = {im["file_name"]: int(im["id"]) for im in coco_gt.dataset["images"]}
        keep = [i for i, n in enumerate(names) if n in by_name]
        if not keep:
            raise DatasetError(f"None of the {len(names)} image(s) from {source} is in {str(coco)!r}.")
        pool, names = [pool[i] for i in keep], [names[i] for i in keep]
        ids = [by_name[n] for n in names]
    say(f"tuning {spec.name}: {len(pairs)} candidate(s) on {len(pool)} image(s) from {source}")

    loaded: dict[tuple[str | None, str], Any] = {}
    notes: list[str] = []
    rows: dict[tuple[str | None, str], dict[str, Any]] = {}
    outputs: dict[tuple[str | None, str], list[Any]] = {}
    reference: list[Any] = []
    resolved_task: Task | None = None
    for pair in pairs:
        rt, prec = pair
        label = _label(rt, prec)
        row: dict[str, Any] = {"label": label, "runtime": rt, "precision": prec}
        rows[pair] = row
        say(f"  loading {label} ...")
        t0 = time.perf_counter()
        try:
            # A runtime's warning (e.g. "this CPU cannot run bf16, running fp32") belongs in the report.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                bk = load(
                    spec.name,
                    task=task,
                    weights=weights,
                    device=device,
                    precision=prec,
                    runtime=rt,
                    runtime_options=dict(rt_opts) if rt is not None else None,
                    registry=reg,
                    **options,
                )
            notes += [
                f"{label}: {w.message}"
                for w in caught
                if issubclass(w.category, (RuntimeWarning, UserWarning))
                and f"{label}: {w.message}" not in notes
            ]
            row["load_s"] = time.perf_counter() - t0
            resolved_task = resolved_task or resolve_task(bk, task)
            # The accuracy pass is also the first warm-up (runtimes compile on their first call).
            low = _scoring_overrides(bk, resolved_task, options)
            outputs[pair] = [_call(bk, resolved_task, im, **low) for im in pool]
            if pair == (None, "fp32"):  # the pseudo ground truth: what the user's options keep
                reference = [_call(bk, resolved_task, im) for im in pool] if low else outputs[pair]
            said = getattr(bk, "runtime", None)  # what a runtime reports running, when one runs it
            row["ran"] = _label(str(said.get("name")) if said else None, str(getattr(bk, "precision", prec)))
            loaded[pair] = bk
        except Exception as exc:  # one failing candidate must not lose the others
            row["error"] = f"{type(exc).__name__}: {exc}".strip()
            say(f"  {label}: could not run ({row['error']})")
            if pair == (None, "fp32"):
                raise BackendError(
                    f"Cannot tune {spec.name!r}: the fp32 reference failed ({row['error']})."
                ) from exc
    assert resolved_task is not None
    metric = _metric_name(resolved_task, coco_gt is not None)
    scorer = _Scorer(resolved_task, [im.shape[:2] for im in pool], coco_gt, ids)
    scorer.reference(reference)
    for pair, outs in outputs.items():
        rows[pair]["score"] = scorer(outs)
    ref_score = rows[(None, "fp32")]["score"]
    for pair in outputs:
        rows[pair]["change"] = rows[pair]["score"] - ref_score

    samples: dict[tuple[str | None, str], list[float]] = {p: [] for p in loaded}
    for r in range(rounds):
        say(f"  timing, round {r + 1} of {rounds}")
        for pair, bk in loaded.items():
            try:
                for i in range(warmup):
                    _call(bk, resolved_task, pool[i % len(pool)])
                for i in range(runs):
                    im = pool[(r * runs + i) % len(pool)]
                    t0 = time.perf_counter()
                    _call(bk, resolved_task, im)
                    samples[pair].append((time.perf_counter() - t0) * 1e3)
            except Exception as exc:  # reported in its row; the others keep running
                rows[pair]["error"] = f"{type(exc).__name__}: {exc}"
    ref_ms = float(np.median(samples[(None, "fp32")])) if samples.get((None, "fp32")) else None
    for pair, ms in samples.items():
        if ms and rows[pair].get("error") is None:
            med = float(np.median(ms))
            rows[pair].update(median_ms=med, runs=len(ms), ratio=med / ref_ms if ref_ms else None)
    loaded.clear()  # free every candidate's model before the next is asked for
    results = [CandidateResult(**row) for row in rows.values()]
    marked, best, reason = _pick(results, max_drop, metric)
    report = TuneReport(
        backend=spec.name,
        task=resolved_task.value,
        device=str(device),
        metric=metric,
        max_drop=float(max_drop),
        picked=best.label,
        picked_runtime=best.runtime,
        picked_precision=best.precision,
        reason=reason,
        candidates=marked,
        images=len(pool),
        image_source=source,
        runs=runs,
        warmup=warmup,
        rounds=rounds,
        seconds=time.perf_counter() - t_start,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        key=key,
        fingerprint=fingerprint,
        notes=notes + scorer.notes,
    )
    if cache:
        path = _write_cache(report, cache_dir(cache_path))
        report = report.model_copy(update={"cache_file": str(path)})
    return report


# -- precision="auto" ----------------------------------------------------------------------------------------
def load_auto(
    name: str,
    *,
    task: Task | str | None = None,
    weights: Any = DEFAULT,
    device: str = "cpu",
    runtime: str | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    **options: Any,
) -> Any:
    """``visionkit.load(name, precision="auto", ...)``: the cached pick for this key, else tune once, then load it.

    ``runtime_options`` may hold ``max_drop`` (points, default 1.0), ``retune`` (measure again) and
    ``calib`` (a folder: measured on, and passed on as the INT8 calibration folder); the rest goes to the
    picked runtime. The first call for a key measures every candidate (a note on stderr says so; minutes
    for a real model); later calls read the cache. The loaded backend's ``runtime`` reports what runs it,
    with the decision under ``runtime["auto"]`` (:meth:`TuneReport.summary`).
    """
    reg = registry or get_registry()
    ro = dict(runtime_options or {})
    max_drop = float(ro.get("max_drop", 1.0))
    retune = bool(ro.get("retune", False))
    common: dict[str, Any] = {
        "weights": weights,
        "device": device,
        "task": task,
        "options": options,
        "runtime_options": ro,
        "runtime": runtime,
        "registry": reg,
    }
    report = None if retune else cached(name, max_drop=max_drop, **common)
    if report is None:
        spec = reg.get(name)
        calib = ro.get("calib")
        print(
            f"visionkit: precision='auto' for {spec.name!r}: nothing measured yet for this machine, weights "
            "and options, so this first call times every candidate recipe once (this may take a few minutes; "
            "`visionkit tune` does the same ahead of time). Later calls read the cache.",
            file=sys.stderr,
        )
        report = tune(
            name,
            images=calib,
            max_drop=max_drop,
            log=lambda line: print(f"visionkit: {line}", file=sys.stderr),
            **common,
        )
    rt_opts = {k: v for k, v in ro.items() if k not in AUTO_RUNTIME_OPTIONS}
    bk = load(
        name,
        task=task,
        weights=weights,
        device=device,
        precision=report.picked_precision,
        runtime=report.picked_runtime,
        runtime_options=rt_opts or None,
        registry=reg,
        **options,
    )
    ran = dict(getattr(bk, "runtime", None) or {})
    if not ran:  # the backend's own code runs it: say so in the same place a runtime reports
        ran = {
            "name": getattr(bk, "native_runtime", "native"),
            "precision": str(getattr(bk, "precision", "")),
        }
    ran["auto"] = report.summary()
    with contextlib.suppress(AttributeError):  # frozen third-party objects keep their own report
        bk.runtime = ran
    return bk
