"""Let visionkit pick the recipe: ``precision="auto"`` and ``visionkit tune``.

::

    from visionkit.loading import LoadRecipe

    recipe = LoadRecipe("yolo", weights="yolov8n.pt")
    report = visionkit.tune.tune(recipe, images="photos/", max_drop=1.0, isolate=True)
    print(report.table())                     # every candidate: accuracy change, median ms, ratio, peak RSS, pick
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
  warm-up calls discarded, the median over all rounds;
- **memory and threads**: with ``isolate=True`` (``visionkit tune``'s default) every candidate is loaded,
  run and timed in a fresh interpreter process of its own, so no candidate's memory, thread
  pools (torch's OpenMP pool, ONNX Runtime's, OpenVINO's) or caches leak into another's timing, and its
  peak RSS is its own. The workers stay up, idle, while the others take their turn, so the rounds are
  still interleaved. Each row says the thread count it ran with (its runtime's, else torch's, else
  :func:`visionkit.devices.cpu_threads`). In-process (``isolate=False``) is faster to start, and reports
  no per-candidate memory.

The pick is the fastest candidate whose accuracy change is within ``max_drop`` points. Candidates that
cannot run (a runtime's library missing, an export that fails) are reported with the reason; only a
failing fp32 reference is fatal (nothing to measure against).

The measurements are cached as JSON under ``$VISIONKIT_CACHE/tune`` (default ``~/.cache/visionkit/tune``),
keyed by this machine (CPU model, ISA flags, core count, GPU name on a GPU device), the
library versions, the backend, the weights file (path, size, mtime; ``"random"`` for none), the device,
the task and the backend and runtime options. The images and ``max_drop`` are not in the key: the last
measurement for a key is the one ``precision="auto"`` uses, and a different ``max_drop`` re-picks from it
without measuring again.

Every function here takes the backend as a :class:`~visionkit.loading.LoadRecipe` (or a bare name):
its weights, device, task, options, runtime options and runtime are the key and what each candidate
loads with (its ``precision`` is what is being chosen, so it is ignored; ``runtime`` restricts the
candidates to that runtime's).

Where the decision shows: ``backend.runtime["auto"]`` (:meth:`TuneReport.summary`), ``visionkit info
NAME`` (reads the cache file only: no model, no model library) and ``visionkit compare ... NAME:auto``
(the row names the recipe it resolved to, and why).

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
import pickle
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from visionkit._tools import SCHEMA_VERSION, option_fields, synthetic_image
from visionkit.bench import environment
from visionkit.coco import to_coco_results
from visionkit.devices import cpu_has_bf16, thread_policy
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
from visionkit.loading import DEFAULT, LoadRecipe, load, registry_with, resolve_task
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
# Seconds an isolated worker is left alone before the next one is timed: idle thread pools (OpenMP,
# ONNX Runtime) spin for a moment after their last call, and must not steal the next one's cores.
_SETTLE_S = 0.05


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
    peak_rss_mb: float | None = Field(
        None,
        description="Peak resident memory of its own process (isolated runs only), MiB: loading, export "
        "and quantization included.",
    )
    run_peak_rss_mb: float | None = Field(
        None,
        description="Peak resident memory of its own process while it was timed (after loading and the "
        "accuracy pass), MiB: what serving it needs. Isolated runs on Linux only.",
    )
    threads: int | None = Field(
        None, description="Threads it ran with: its runtime's, else torch's, else the CPU thread policy's."
    )
    thread_info: dict[str, Any] = Field(
        default_factory=dict,
        description="Where `threads` comes from: `policy` (and `policy_source`), `torch`, `runtime` counts.",
    )
    isolated: bool = Field(False, description="Loaded, run and timed in a fresh process of its own.")
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
    isolated: bool = Field(False, description="Every candidate ran in a fresh process of its own.")
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
            "isolated": self.isolated,
            "notes": list(self.notes),
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
        head = (
            f"{'candidate':<22}{'ran':<22}{'score':>7}{'change':>8}{'median ms':>11}{'x fp32':>8}"
            f"{'peak MB':>9}{'run MB':>8}{'threads':>8}{'load s':>8}  picked"
        )
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
                f"{_num(c.median_ms, 2):>11}{_num(c.ratio, 2):>8}{_num(c.peak_rss_mb, 0):>9}{_num(c.run_peak_rss_mb, 0):>8}"
                f"{(str(c.threads) if c.threads else '-'):>8}{_num(c.load_s, 1):>8}  {mark}"
            )
        lines.append(
            f"score: {self.metric} (0-100); change vs fp32 in points; latency end to end per image, median of "
            f"{self.rounds} interleaved round(s) x {self.runs} runs after {self.warmup} warm-up; {self.images} "
            f"image(s) from {self.image_source}; device {self.device}; "
            + (
                "each candidate in a fresh process of its own (peak MB: its process's peak, loading "
                "included; run MB: its peak while timed)"
                if self.isolated
                else "all candidates in one process (no per-candidate memory)"
            )
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

    Native precisions the backend declares, then each registered runtime's precisions by runtime name.
    ``fp16`` only on a GPU; ``bf16`` only on a GPU or a CPU with bf16 units (AVX512-BF16, AMX, Arm BF16):
    elsewhere it is emulated, slower than fp32 and OpenVINO runs it as fp32 anyway. With ``runtime``,
    only that runtime's (the native fp32 reference is always measured). ``--candidates`` still times
    any recipe named explicitly.
    """
    gpu = _is_gpu(device)
    bf16 = gpu or cpu_has_bf16()

    def worth(p: str) -> bool:
        return (p != "fp16" or gpu) and (p != "bf16" or bf16)

    out: list[tuple[str | None, str]] = [(None, "fp32")]
    if runtime is None:
        out += [(None, p) for p in spec.precisions if p not in ("fp32", "int8") and worth(p)]
        out += [(None, "int8")] if "int8" in spec.precisions else []
    names = sorted(registry.runtimes) if runtime is None else [runtime]
    for name in names:
        rt = registry.runtimes.get(name)
        if rt is None:
            known = ", ".join(sorted(registry.runtimes)) or "(none installed)"
            raise InvalidOptionError(f"Unknown runtime {name!r}; installed runtimes: {known}.")
        out += [(name, p) for p in rt.precisions if worth(p)]
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


def _as_recipe(backend: LoadRecipe | str) -> LoadRecipe:
    """A bare name is the recipe of that name with every default."""
    if isinstance(backend, LoadRecipe):
        return backend
    if isinstance(backend, str):
        return LoadRecipe(backend)
    raise InvalidOptionError(
        f"Give a backend name or a visionkit.LoadRecipe, but got {type(backend).__name__}: {backend!r}."
    )


def _registry_for(recipe: LoadRecipe, plugins: Sequence[str] = ()) -> Registry:
    """Where ``recipe`` is looked up: its own plugins only, else the installed ones plus ``plugins``.

    The same rule in the parent and in an isolated worker, so both see the same backends and runtimes.
    """
    if recipe.plugins:
        return recipe.registry()
    return registry_with(plugins) or get_registry()


def _key_runtime_options(recipe: LoadRecipe) -> dict[str, Any]:
    return {k: v for k, v in recipe.runtime_options.items() if k not in AUTO_RUNTIME_OPTIONS}


def cache_key(recipe: LoadRecipe | str, *, registry: Registry | None = None) -> tuple[str, dict[str, Any]]:
    """``(sha256 hex, the fingerprint it hashes)`` for a backend on this machine (see the module doc).

    The recipe's weights, device, task, options, runtime options (less ``max_drop`` and ``retune``) and
    runtime are the key; its ``precision`` is not (it is what the measurement chooses).
    """
    recipe = _as_recipe(recipe)
    reg = registry or _registry_for(recipe)
    spec = reg.get(recipe.name)
    fingerprint = {
        "format": CACHE_FORMAT,
        "machine": _machine(recipe.device),
        "versions": _versions(),
        "backend": spec.name,
        "task": None if recipe.task is None else recipe.task.value,
        "weights": _weights_id(recipe.weights, spec),
        "device": str(recipe.device),
        "options": _jsonable(dict(recipe.options)),
        "runtime_options": _jsonable(_key_runtime_options(recipe)),
        "runtime": recipe.runtime,
    }
    text = json.dumps(fingerprint, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), fingerprint


def _cache_file(folder: Path, backend: str, key: str) -> Path:
    return folder / f"{backend}-{key[:24]}.json"


def cached(
    recipe: LoadRecipe | str,
    *,
    max_drop: float = 1.0,
    registry: Registry | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> TuneReport | None:
    """The cached measurement for ``recipe``'s key (:func:`cache_key`), picked for ``max_drop``; ``None``
    when there is none. Reads one small JSON file: no model is built, no model library imported.

    An unreadable or stale file (another format, another key) counts as none.
    """
    recipe = _as_recipe(recipe)
    reg = registry or _registry_for(recipe)
    key, _ = cache_key(recipe, registry=reg)
    path = _cache_file(cache_dir(cache), reg.get(recipe.name).name, key)
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


# -- one candidate ---------------------------------------------------------------------------------------
def _peak_rss_mb() -> float | None:
    """Peak resident memory of this process, MiB (Linux ``VmHWM``: not ``ru_maxrss``, which a
    worker inherits from its parent when the parent's was larger)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    try:
        import resource
    except ModuleNotFoundError:  # Windows: not measured
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _reset_peak_rss() -> bool:
    """Restart this process's peak-RSS count from its current RSS (Linux >= 4.0); whether it could."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _threads_used(bk: Any) -> dict[str, Any]:
    """The thread counts a loaded candidate runs with: the CPU policy's, torch's (when torch is loaded),
    and its runtime's (when the runtime reports one)."""
    info: dict[str, Any] = {}
    # A bad VISIONKIT_THREADS fails the load itself where it matters; here it only leaves no policy.
    with contextlib.suppress(VisionKitError):
        policy = thread_policy()
        info.update(policy=int(policy["threads"]), policy_source=str(policy["source"]))
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            info["torch"] = int(torch.get_num_threads())
    said = getattr(bk, "runtime", None)
    if isinstance(said, Mapping):
        for key in ("threads", "intra_op_threads"):
            value = said.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                info["runtime"] = value
                break
    return info


def _effective_threads(info: Mapping[str, Any], native: bool) -> int | None:
    """One number for the table: a runtime's own count, else torch's for the backend's own code."""
    if "runtime" in info:
        return int(info["runtime"])
    if native and "torch" in info:
        return int(info["torch"])
    return int(info["policy"]) if "policy" in info else None


class _Candidate:
    """Loads one candidate recipe, runs the accuracy pass, times rounds: in this process, or inside an
    isolated worker (:func:`_worker`), where the same object does the same work."""

    def __init__(
        self,
        recipe: LoadRecipe,
        registry: Registry,
        pool: Sequence[np.ndarray],
        *,
        reference: bool = False,
        isolated: bool = False,
    ) -> None:
        self.recipe, self.registry, self.pool = recipe, registry, list(pool)
        self.want_reference, self.isolated = reference, isolated
        self.bk: Any = None
        self.task: Task | None = None
        self.load_peak: float | None = None
        self.peak_was_reset = False

    def load(self) -> dict[str, Any]:
        """Load, then run every image once (the scored pass, also the first warm-up)."""
        r, label = self.recipe, _label(self.recipe.runtime, self.recipe.precision)
        t0 = time.perf_counter()
        # A runtime's warning (e.g. "this CPU cannot run bf16, running fp32") belongs in the report.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.bk = load(
                r.name,
                task=r.task,
                weights=r.weights,
                device=r.device,
                precision=r.precision,
                runtime=r.runtime,
                runtime_options=dict(r.runtime_options) or None,
                registry=self.registry,
                **dict(r.options),
            )
        load_s = time.perf_counter() - t0
        notes = [
            f"{label}: {w.message}" for w in caught if issubclass(w.category, (RuntimeWarning, UserWarning))
        ]
        task = self.task = resolve_task(self.bk, r.task)
        low = _scoring_overrides(self.bk, task, r.options)
        outputs = [_call(self.bk, task, im, **low) for im in self.pool]
        reference = None
        if self.want_reference:  # the pseudo ground truth: what the user's options keep
            reference = [_call(self.bk, task, im) for im in self.pool] if low else outputs
        said = getattr(self.bk, "runtime", None)  # what a runtime reports running, when one runs it
        ran = _label(str(said.get("name")) if said else None, str(getattr(self.bk, "precision", r.precision)))
        if self.isolated:  # the peak so far is loading's (export, quantization); from here on, serving's
            self.load_peak = _peak_rss_mb()
            self.peak_was_reset = _reset_peak_rss()
        return {
            "load_s": load_s,
            "notes": list(dict.fromkeys(notes)),
            "task": task.value,
            "outputs": outputs,
            "reference": reference,
            "ran": ran,
        }

    def time(self, warmup: int, runs: int, offset: int) -> list[float]:
        """``warmup`` discarded calls, then ``runs`` timed ones (ms), cycling the images from ``offset``."""
        assert self.task is not None
        n = len(self.pool)
        for i in range(warmup):
            _call(self.bk, self.task, self.pool[i % n])
        samples = []
        for i in range(runs):
            im = self.pool[(offset + i) % n]
            t0 = time.perf_counter()
            _call(self.bk, self.task, im)
            samples.append((time.perf_counter() - t0) * 1e3)
        return samples

    def finish(self) -> dict[str, Any]:
        """Threads it ran with and, in its own process, its peak memory."""
        info = _threads_used(self.bk)
        out: dict[str, Any] = {
            "thread_info": info,
            "threads": _effective_threads(info, native=self.recipe.runtime is None),
        }
        if self.isolated:
            now = _peak_rss_mb()
            peaks = [p for p in (self.load_peak, now) if p is not None]
            out["peak_rss_mb"] = max(peaks) if peaks else None
            out["run_peak_rss_mb"] = now if self.peak_was_reset else None
        return out

    def close(self) -> None:
        self.bk = None


class _WorkerError(Exception):
    """A candidate failed inside its worker: the message is the worker's ``Type: text``."""


# The worker is a fresh interpreter started with ``-c`` (not multiprocessing's spawn, which re-runs the
# caller's main script in the child: a script calling tune() without an ``if __name__`` guard breaks).
_WORKER_CODE = "from visionkit.tune import _worker_main; _worker_main()"


def _worker_main() -> None:
    """An isolated worker: reads pickled commands on stdin, answers on stdout.

    First the parent's ``sys.path`` (so plugins importable there are importable here) and the
    candidate, then ``("load",)``, ``("time", warmup, runs, offset)`` ... and ``("finish",)``.
    """
    out = os.fdopen(os.dup(1), "wb")  # the protocol owns the real stdout ...
    os.dup2(2, 1)  # ... and whatever a library prints goes to stderr instead of corrupting it
    inp = sys.stdin.buffer
    try:
        sys.path[:0] = [p for p in pickle.load(inp) if p not in sys.path]
        payload = pickle.load(inp)
        recipe = payload["recipe"]
        cand = _Candidate(
            recipe,
            _registry_for(recipe, payload["plugins"]),
            payload["pool"],
            reference=payload["reference"],
            isolated=True,
        )
        while True:
            cmd, *args = pickle.load(inp)
            try:
                if cmd == "load":
                    reply: tuple[str, Any] = ("ok", cand.load())
                elif cmd == "time":
                    reply = ("ok", cand.time(*args))
                else:
                    reply = ("ok", cand.finish())
            except Exception as exc:  # reported in the candidate's row by the parent
                reply = ("error", f"{type(exc).__name__}: {exc}".strip())
            pickle.dump(reply, out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
            if cmd == "finish":
                return
    except (EOFError, KeyboardInterrupt, BrokenPipeError):  # the parent went away or was interrupted
        return


class _Isolated:
    """The parent's handle on one isolated worker process: the same methods as :class:`_Candidate`."""

    def __init__(
        self, recipe: LoadRecipe, plugins: Sequence[str], pool: Sequence[np.ndarray], reference: bool
    ) -> None:
        # Started at once (the interpreters import in parallel); the candidate is sent with "load".
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.payload: dict[str, Any] | None = {
            "recipe": recipe,
            "plugins": tuple(plugins),
            "pool": list(pool),
            "reference": reference,
        }

    def _ask(self, *msg: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            if self.payload is not None:
                pickle.dump(list(sys.path), self.proc.stdin)
                pickle.dump(self.payload, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self.payload = None
            pickle.dump(msg, self.proc.stdin)
            self.proc.stdin.flush()
            status, value = pickle.load(self.proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            code = self.proc.wait(timeout=10)
            raise _WorkerError(f"the worker process exited (code {code})") from exc
        if status == "error":
            raise _WorkerError(value)
        return value

    def load(self) -> dict[str, Any]:
        return dict(self._ask("load"))

    def time(self, warmup: int, runs: int, offset: int) -> list[float]:
        return list(self._ask("time", warmup, runs, offset))

    def finish(self) -> dict[str, Any]:
        return dict(self._ask("finish"))

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()  # EOF: an idle worker returns
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- measuring ---------------------------------------------------------------------------------------------
def tune(
    recipe: LoadRecipe | str,
    *,
    images: str | os.PathLike[str] | Sequence[Any] | None = None,
    coco: str | os.PathLike[str] | None = None,
    max_drop: float = 1.0,
    candidates: Sequence[str] | None = None,
    runs: int = 5,
    warmup: int = 1,
    rounds: int = 3,
    max_images: int = DEFAULT_MAX_IMAGES,
    registry: Registry | None = None,
    plugins: Sequence[str] = (),
    isolate: bool = False,
    cache: bool = True,
    cache_path: str | os.PathLike[str] | None = None,
    log: Callable[[str], Any] | None = None,
) -> TuneReport:
    """Measure every candidate recipe of a backend on this machine and these images, pick, and cache.

    Args:
        recipe: a :class:`~visionkit.loading.LoadRecipe` (or a bare backend name): its weights, device,
            task, options and runtime options are what every candidate loads with, and the cache key;
            its ``runtime`` restricts the candidates to that runtime's precisions (plus the fp32
            reference); its ``precision`` is ignored.
        images: a folder, files or arrays to measure on (the first ``max_images``); default
            ``VISIONKIT_CALIB``, else visionkit-onnx's bundled photos, else the synthetic test image.
        coco: a COCO instances file whose ``file_name``\\ s are the ``images``: real AP instead of
            agreement with fp32 (detectors).
        max_drop: the accuracy budget, in points (AP points, % agreement, mIoU points).
        candidates: restrict to these (``"fp32"``, ``"bf16"``, ``"onnxruntime:int8"`` ...); default
            :func:`candidates_for`. The native fp32 reference is always measured.
        runs, warmup, rounds: timed calls per candidate per round, discarded calls before them, and
            interleaved rounds over the candidates.
        registry: look the backend and runtimes up in this object (in-process only: an object cannot
            be handed to a worker process).
        plugins: extra plugins as ``"module:attr"`` import strings, added to the installed ones here
            and in every worker.
        isolate: load, run and time each candidate in a fresh process of its own (a new interpreter;
            they start in parallel, about a second each): memory and thread pools cannot leak between
            candidates, and each row gets its own peak RSS. ``visionkit tune`` isolates by default.
            Plugins are found in the workers as here (installed ones, ``plugins``, the recipe's).
        cache: write the result to the cache (:func:`cache_dir`, or ``cache_path``).
        log: called with one line per step (default: silent).

    Returns:
        A :class:`TuneReport`; ``report.table()`` prints it.

    Raises:
        BackendError: the fp32 reference itself cannot load or run (nothing to measure against).
        InvalidOptionError, DatasetError: bad arguments or images.
    """
    recipe = _as_recipe(recipe)
    if runs < 1 or warmup < 0 or rounds < 1 or max_images < 1:
        raise InvalidOptionError(
            f"runs, rounds and max_images must be >= 1 and warmup >= 0, but got runs={runs}, "
            f"rounds={rounds}, max_images={max_images}, warmup={warmup}."
        )
    if isolate and registry is not None:
        raise InvalidOptionError(
            "isolate=True needs the installed plugins (or plugins=['module:attr'], or a recipe's plugins): "
            "a Registry object cannot be handed to a worker process."
        )
    say = log or (lambda _line: None)
    reg = registry or _registry_for(recipe, plugins)
    spec = reg.get(recipe.name)
    t_start = time.perf_counter()
    rt_opts = _key_runtime_options(recipe)
    key, fingerprint = cache_key(recipe, registry=reg)
    pairs = (
        [(None, "fp32")] + [_parse_candidate(c, reg) for c in candidates if c != "fp32"]
        if candidates
        else candidates_for(spec, reg, recipe.device, recipe.runtime)
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
    where = "each in a fresh process" if isolate else "in this process"
    say(f"tuning {spec.name}: {len(pairs)} candidate(s) on {len(pool)} image(s) from {source}, {where}")

    base = replace(recipe, name=spec.name, precision="fp32", runtime=None, runtime_options={})
    handles: dict[tuple[str | None, str], _Candidate | _Isolated] = {}
    rows: dict[tuple[str | None, str], dict[str, Any]] = {}
    notes: list[str] = []
    outputs: dict[tuple[str | None, str], list[Any]] = {}
    reference: list[Any] = []
    resolved_task: Task | None = None
    try:
        for rt, prec in pairs:  # every worker starts (imports) at once; they load one at a time below
            cand = replace(base, precision=prec, runtime=rt, runtime_options=rt_opts if rt else {})
            ref = (rt, prec) == (None, "fp32")
            handles[(rt, prec)] = (
                _Isolated(cand, plugins, pool, ref) if isolate else _Candidate(cand, reg, pool, reference=ref)
            )
        for pair, handle in list(handles.items()):
            label = _label(*pair)
            row: dict[str, Any] = {
                "label": label,
                "runtime": pair[0],
                "precision": pair[1],
                "isolated": isolate,
            }
            rows[pair] = row
            say(f"  loading {label} ...")
            try:
                got = handle.load()
            except Exception as exc:  # one failing candidate must not lose the others
                row["error"] = (
                    str(exc) if isinstance(exc, _WorkerError) else f"{type(exc).__name__}: {exc}".strip()
                )
                say(f"  {label}: could not run ({row['error']})")
                handles.pop(pair).close()
                if pair == (None, "fp32"):
                    raise BackendError(
                        f"Cannot tune {spec.name!r}: the fp32 reference failed ({row['error']})."
                    ) from exc
                continue
            row.update(load_s=got["load_s"], ran=got["ran"])
            notes += [n for n in got["notes"] if n not in notes]
            resolved_task = resolved_task or Task.parse(got["task"])
            outputs[pair] = got["outputs"]
            if got["reference"] is not None:
                reference = got["reference"]
        assert resolved_task is not None
        samples: dict[tuple[str | None, str], list[float]] = {p: [] for p in handles}
        for r in range(rounds):
            say(f"  timing, round {r + 1} of {rounds}")
            for pair, handle in handles.items():
                if rows[pair].get("error"):
                    continue
                if isolate:
                    time.sleep(_SETTLE_S)
                try:
                    samples[pair] += handle.time(warmup, runs, r * runs)
                except Exception as exc:  # reported in its row; the others keep running
                    rows[pair]["error"] = (
                        str(exc) if isinstance(exc, _WorkerError) else f"{type(exc).__name__}: {exc}"
                    )
        for pair, handle in handles.items():
            with contextlib.suppress(Exception):  # a worker that died already has its error
                rows[pair].update(handle.finish())
    finally:
        for handle in handles.values():  # free every candidate's model (and end every worker)
            handle.close()
    metric = _metric_name(resolved_task, coco_gt is not None)
    scorer = _Scorer(resolved_task, [im.shape[:2] for im in pool], coco_gt, ids)
    scorer.reference(reference)
    for pair, outs in outputs.items():
        rows[pair]["score"] = scorer(outs)
    ref_score = rows[(None, "fp32")]["score"]
    for pair in outputs:
        rows[pair]["change"] = rows[pair]["score"] - ref_score
    ref_ms = float(np.median(samples[(None, "fp32")])) if samples.get((None, "fp32")) else None
    for pair, ms in samples.items():
        if ms and rows[pair].get("error") is None:
            med = float(np.median(ms))
            rows[pair].update(median_ms=med, runs=len(ms), ratio=med / ref_ms if ref_ms else None)
    results = [CandidateResult(**row) for row in rows.values()]
    marked, best, reason = _pick(results, max_drop, metric)
    report = TuneReport(
        backend=spec.name,
        task=resolved_task.value,
        device=str(recipe.device),
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
        isolated=isolate,
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
def _decision(recipe: LoadRecipe, max_drop: float, registry: Registry) -> TuneReport | None:
    """The cached decision for ``recipe``; with a ``threads`` runtime option and none for that key, the
    one measured without it (``threads`` only pins the picked runtime's pool: ``compare`` and ``bench``
    pass it to every entry, and must find what ``visionkit tune`` measured)."""
    report = cached(recipe, max_drop=max_drop, registry=registry)
    if report is None and "threads" in recipe.runtime_options:
        rest = {k: v for k, v in recipe.runtime_options.items() if k != "threads"}
        report = cached(replace(recipe, runtime_options=rest), max_drop=max_drop, registry=registry)
        if report is not None:
            pinned = recipe.runtime_options["threads"]
            report = report.model_copy(
                update={"notes": [*report.notes, f"measured without threads={pinned}; loaded with it"]}
            )
    return report


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

    Takes ``load()``'s arguments (it is the loading layer's hook) and works on their
    :class:`~visionkit.loading.LoadRecipe`. ``runtime_options`` may hold ``max_drop`` (points, default
    1.0), ``retune`` (measure again) and ``calib`` (a folder: measured on, and passed on as the INT8
    calibration folder); the rest goes to the picked runtime. The first call for a key measures every
    candidate in this process (a note on stderr says so; minutes for a real model; ``visionkit tune``
    does it ahead of time, each candidate in its own process); later calls read the cache. The loaded
    backend's ``runtime`` reports what runs it, with the decision under ``runtime["auto"]``
    (:meth:`TuneReport.summary`).
    """
    reg = registry or get_registry()
    ro = dict(runtime_options or {})
    recipe = LoadRecipe(
        name,
        weights=weights,
        device=device,
        precision=AUTO,
        options=dict(options),
        task=None if task is None else Task.parse(task),
        runtime=runtime,
        runtime_options=ro,
    )
    max_drop = float(ro.get("max_drop", 1.0))
    report = None if ro.get("retune", False) else _decision(recipe, max_drop, reg)
    if report is None:
        spec = reg.get(name)
        print(
            f"visionkit: precision='auto' for {spec.name!r}: nothing measured yet for this machine, weights "
            "and options, so this first call times every candidate recipe once (this may take a few minutes; "
            "`visionkit tune` does the same ahead of time). Later calls read the cache.",
            file=sys.stderr,
        )
        report = tune(
            recipe,
            images=ro.get("calib"),
            max_drop=max_drop,
            registry=reg,
            log=lambda line: print(f"visionkit: {line}", file=sys.stderr),
        )
    rt_opts = _key_runtime_options(recipe)
    bk = load(
        name,
        task=recipe.task,
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
