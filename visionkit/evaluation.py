"""Accuracy of any backend on a labelled dataset, through the public task protocols only.

Three dataset layouts, one entry point (:func:`evaluate`) that picks by the arguments given::

    evaluate("yolo", coco="instances.json", images="val2017/")   # COCO bbox (+ segm) mAP -> DetectionReport
    evaluate("resnet50", imagefolder="val/")                     # top-1 / top-5           -> ClassificationReport
    evaluate("deeplabv3", masks="masks/", images="images/")      # mIoU, per-class IoU     -> SegmentationReport

COCO mAP is never computed here: predictions are exported with :func:`visionkit.coco.to_coco_results`
and scored by pycocotools' ``COCOeval``, so the numbers are the ones the COCO toolkit prints. COCO
practice is applied and recorded in the report: a low score threshold (0.001) and at most 100
detections per image, set through the backend's own options when it has them (``conf``,
``threshold``, ``max_det`` ...). Model class names are mapped to the dataset's category ids by name,
so contiguous 0-79 (YOLO) and 91-id (DETR) label spaces both score correctly.

Semantic mIoU comes from one confusion matrix accumulated over the whole dataset (not a mean of
per-image IoUs), with an ignore index (255 by default, as in Pascal VOC / Cityscapes).

A Ctrl-C during the loop stops early and returns a report over the images done so far, marked
``interrupted=True``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from visionkit._tools import SCHEMA_VERSION, option_fields, progress
from visionkit.coco import category_map, to_coco_results
from visionkit.errors import (
    BackendUnavailableError,
    DatasetError,
    InvalidOptionError,
    TaskNotSupportedError,
    VisionKitError,
)
from visionkit.images import list_images
from visionkit.loading import DEFAULT, resolve
from visionkit.protocols import Task, TextPromptedDetector
from visionkit.registry import Registry
from visionkit.results import Classifications, Detections, SemanticMask

__all__ = [
    "COCO_MAX_DETS",
    "COCO_SCORE_THRESHOLD",
    "SCORE_OPTIONS",
    "COCOMetrics",
    "ClassificationReport",
    "DetectionReport",
    "EvalReport",
    "EvalSettings",
    "SegmentationReport",
    "coco_metrics",
    "confusion_matrix",
    "evaluate",
    "evaluate_coco",
    "evaluate_imagefolder",
    "evaluate_semantic",
    "iou_from_confusion",
    "load_coco",
]

#: Score threshold for COCO mAP (COCO practice: keep nearly everything, let the PR curve decide).
COCO_SCORE_THRESHOLD = 0.001
#: Detections kept per image for COCO mAP (the COCO detection challenge limit).
COCO_MAX_DETS = 100

# Option names backends use for the same knob (ultralytics, transformers, torchvision, the fakes).
SCORE_OPTIONS = ("conf", "score_threshold", "threshold", "box_threshold", "confidence", "conf_threshold")
MAX_DET_OPTIONS = ("max_det", "max_dets", "max_detections", "detections_per_img", "max_detections_per_image")
TOP_K_OPTIONS = ("top_k", "topk")


T = TypeVar("T")


# -- reports --------------------------------------------------------------------------------------
class _Report(BaseModel):
    """Common fields and output of every evaluation report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    backend: str = Field(description="Canonical name of the evaluated backend.")
    precision: str = Field("fp32", description="Precision the backend ran at.")
    num_images: int = Field(
        description="Images evaluated (fewer than the dataset when interrupted or limited)."
    )
    seconds: float = Field(description="Wall-clock time of the prediction loop.")
    interrupted: bool = Field(
        False, description="True when Ctrl-C stopped the loop; metrics cover the images done."
    )
    notes: list[str] = Field(
        default_factory=list, description="Caveats: options the backend lacks, mismatches."
    )

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (stable schema, ``schema_version`` tells which)."""
        return self.model_dump_json(indent=indent)

    def table(self) -> str:
        """Human-readable summary."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.table()

    def _footer(self) -> list[str]:
        lines = [f"{self.num_images} images in {self.seconds:.1f} s"]
        if self.interrupted:
            lines.append("INTERRUPTED: metrics cover only the images processed before Ctrl-C.")
        lines += [f"note: {n}" for n in self.notes]
        return lines


class COCOMetrics(BaseModel):
    """The twelve COCOeval summary numbers plus per-class AP, for one IoU type.

    Values are fractions in ``[0, 1]``; ``None`` where COCOeval reports -1 (no ground truth in that
    area range). ``per_class`` maps category name to AP@[.5:.95] over ``max_dets``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    iou_type: Literal["bbox", "segm"]
    ap: float | None = Field(description="AP @ IoU=0.50:0.95, all areas.")
    ap50: float | None = Field(description="AP @ IoU=0.50.")
    ap75: float | None = Field(description="AP @ IoU=0.75 (strict localisation).")
    ap_small: float | None
    ap_medium: float | None
    ap_large: float | None
    ar1: float | None = Field(description="AR given 1 detection per image.")
    ar10: float | None
    ar100: float | None = Field(description="AR given max_dets detections per image.")
    ar_small: float | None
    ar_medium: float | None
    ar_large: float | None
    per_class: dict[str, float | None] = Field(default_factory=dict)
    summary: str = Field("", description="COCOeval's own printed summary.")

    STAT_FIELDS: ClassVar[tuple[str, ...]] = (
        "ap",
        "ap50",
        "ap75",
        "ap_small",
        "ap_medium",
        "ap_large",
        "ar1",
        "ar10",
        "ar100",
        "ar_small",
        "ar_medium",
        "ar_large",
    )

    def stats(self) -> list[float]:
        """The 12 values in ``COCOeval.stats`` order (-1 where undefined), for comparisons."""
        return [-1.0 if (v := getattr(self, f)) is None else float(v) for f in self.STAT_FIELDS]


class EvalSettings(BaseModel):
    """How predictions were made for COCO mAP, so a number can be reproduced."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    score_threshold: float = Field(description="Requested minimum score (COCO practice 0.001).")
    max_dets: int = Field(description="Detections kept per image, highest scores first (COCO practice 100).")
    backend_options: dict[str, Any] = Field(
        default_factory=dict, description="Per-call options actually passed to the backend."
    )
    iou_types: list[str] = Field(default_factory=list)


class DetectionReport(_Report):
    """COCO mAP of a detector (``bbox``) and, for instance segmenters, of its masks (``segm``)."""

    kind: Literal["coco"] = "coco"
    annotations: str = Field(description="Path of the COCO instances JSON.")
    images_dir: str
    settings: EvalSettings
    bbox: COCOMetrics
    segm: COCOMetrics | None = None
    class_mapping: dict[str, int] = Field(
        default_factory=dict, description="Model class name → dataset category id used for export."
    )
    unmatched_classes: list[str] = Field(
        default_factory=list,
        description="Model classes absent from the dataset; their detections were dropped.",
    )
    num_detections: int = 0

    def table(self) -> str:
        """COCO summary table: AP, AP50, AP75, AP S/M/L, AR, per IoU type, then per-class AP."""
        metrics = [m for m in (self.bbox, self.segm) if m is not None]
        head = f"{'':<22}" + "".join(f"{m.iou_type:>8}" for m in metrics)
        labels = {
            "ap": "AP",
            "ap50": "AP50",
            "ap75": "AP75",
            "ap_small": "AP_S",
            "ap_medium": "AP_M",
            "ap_large": "AP_L",
            "ar1": "AR1",
            "ar10": "AR10",
            "ar100": f"AR{self.settings.max_dets}",
            "ar_small": "AR_S",
            "ar_medium": "AR_M",
            "ar_large": "AR_L",
        }
        lines = [
            f"COCO evaluation of {self.backend!r} ({self.precision}) on {self.annotations}",
            f"score threshold {self.settings.score_threshold:g}, max {self.settings.max_dets} detections/image, "
            f"backend options {self.settings.backend_options or '{}'}",
            head,
        ]
        for f, label in labels.items():
            lines.append(f"{label:<22}" + "".join(f"{_fmt(getattr(m, f)):>8}" for m in metrics))
        lines.append(f"{'per-class AP':<22}" + "".join(f"{m.iou_type:>8}" for m in metrics))
        for name in sorted(self.bbox.per_class):
            vals = [m.per_class.get(name) for m in metrics]
            lines.append(f"  {name:<20}" + "".join(f"{_fmt(v):>8}" for v in vals))
        lines.append(f"{self.num_detections} detections exported")
        if self.unmatched_classes:
            lines.append(f"dropped classes not in the dataset: {', '.join(self.unmatched_classes)}")
        return "\n".join(lines + self._footer())


class ClassificationReport(_Report):
    """Top-1 / top-5 accuracy on an ImageFolder layout (one sub-directory per class)."""

    kind: Literal["imagefolder"] = "imagefolder"
    root: str
    top1: float
    top5: float
    k: int = Field(description="Predictions per image the backend returned (top-5 counts at most these).")
    per_class_top1: dict[str, float] = Field(default_factory=dict)
    label_mapping: dict[str, str] = Field(
        default_factory=dict, description="Directory name → model class name."
    )

    def table(self) -> str:
        """Top-1 / top-5 then per-class top-1."""
        lines = [
            f"ImageFolder evaluation of {self.backend!r} ({self.precision}) on {self.root}",
            f"top-1 {self.top1:.4f}   top-5 {self.top5:.4f}"
            + ("" if self.k >= 5 else f" (only {self.k} predicted)"),
            "per-class top-1:",
        ]
        lines += [f"  {name:<20}{acc:>8.4f}" for name, acc in sorted(self.per_class_top1.items())]
        return "\n".join(lines + self._footer())


class SegmentationReport(_Report):
    """Semantic segmentation scores from one dataset-wide confusion matrix."""

    kind: Literal["semantic"] = "semantic"
    masks_dir: str
    images_dir: str
    ignore_index: int | None
    miou: float = Field(description="Mean IoU over classes present in ground truth or prediction.")
    pixel_accuracy: float
    mean_class_accuracy: float
    per_class_iou: dict[str, float | None] = Field(default_factory=dict)
    confusion_matrix: list[list[int]] = Field(
        default_factory=list, description="Rows: ground truth class, columns: predicted class (pixel counts)."
    )

    def table(self) -> str:
        """mIoU, pixel accuracy, then per-class IoU."""
        lines = [
            f"Semantic segmentation evaluation of {self.backend!r} ({self.precision}) on {self.masks_dir}",
            f"mIoU {self.miou:.4f}   pixel acc {self.pixel_accuracy:.4f}   mean class acc "
            f"{self.mean_class_accuracy:.4f}   ignore_index {self.ignore_index}",
            "per-class IoU:",
        ]
        lines += [f"  {name:<20}{_fmt(v):>8}" for name, v in self.per_class_iou.items()]
        return "\n".join(lines + self._footer())


EvalReport = Annotated[
    DetectionReport | ClassificationReport | SegmentationReport, Field(discriminator="kind")
]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


# -- helpers shared with bench / compare ----------------------------------------------------------
def _valid_overrides(backend: Any, overrides: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Drop overrides the backend's options model rejects (e.g. a bounded field); say which and why."""
    checker = getattr(backend, "with_options", None)
    kept: dict[str, Any] = {}
    notes: list[str] = []
    for key, value in overrides.items():
        try:
            if checker is not None:
                checker({**kept, key: value})
            kept[key] = value
        except InvalidOptionError as exc:
            notes.append(f"could not set {key}={value!r} ({exc}); the backend's own value applies")
    return kept, notes


def _pick(fields: Mapping[str, Any], names: Sequence[str]) -> str | None:
    return next((n for n in names if n in fields), None)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _batch_size(backend: Any) -> int:
    opts = getattr(backend, "options", None)
    return max(1, int(getattr(opts, "batch_size", 8) or 8))


def _run_batches(
    verb: Callable[..., list[Any]],
    items: Sequence[T],
    path: Callable[[T], str],
    consume: Callable[[Sequence[T], list[Any]], None],
    *,
    overrides: Mapping[str, Any],
    batch_size: int,
    desc: str,
    progress_bar: bool | None,
    has_results: Callable[[], bool],
) -> tuple[bool, float]:
    """Feed ``items`` to ``verb`` batch by batch and hand each batch's results to ``consume``.

    Ctrl-C stops early once ``has_results()`` says something was collected (the report is then marked
    partial); before that it propagates. Returns ``(interrupted, seconds)``.
    """
    t0 = time.perf_counter()
    chunks = list(_chunks(items, batch_size))
    try:
        for chunk in progress(chunks, total=len(chunks), desc=desc, enabled=progress_bar):
            consume(chunk, verb([path(x) for x in chunk], **overrides))
    except KeyboardInterrupt:
        if not has_results():
            raise
        return True, time.perf_counter() - t0
    return False, time.perf_counter() - t0


def _need_dir(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise DatasetError(f"{what} {str(p)!r} is not a directory; expected a folder of images.")
    return p


def _pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(
            "coco evaluation", ["pycocotools"], "pip install 'visionkit-core[coco]'"
        ) from exc
    return COCO, COCOeval


# -- COCO -----------------------------------------------------------------------------------------
def load_coco(annotations: str | os.PathLike[str]) -> Any:
    """Load a COCO instances file with pycocotools, quietly; a clear error when it is not one."""
    COCO, _ = _pycocotools()
    path = Path(annotations)
    if not path.is_file():
        raise DatasetError(f"COCO annotation file {str(path)!r} does not exist.")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(path))
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise DatasetError(
            f"{str(path)!r} is not a COCO instances file ({type(exc).__name__}: {exc}); expected JSON with "
            "'images', 'annotations' and 'categories'."
        ) from exc
    for key in ("images", "annotations", "categories"):
        if key not in gt.dataset:
            raise DatasetError(f"{str(path)!r} is not a COCO instances file: it has no {key!r} list.")
    return gt


def coco_metrics(
    gt: Any,
    records: list[dict[str, Any]],
    iou_type: Literal["bbox", "segm"],
    *,
    image_ids: Sequence[int],
    max_dets: int,
) -> COCOMetrics:
    """Score COCO results ``records`` against ground truth ``gt`` with pycocotools' COCOeval."""
    COCO, COCOeval = _pycocotools()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if records:
            dt = gt.loadRes(copy.deepcopy(records))  # loadRes adds id/area to the dicts it is given
        else:  # loadRes cannot take an empty list; no detections scores 0 AP, not an error
            dt = COCO()
            dt.dataset = {
                "images": list(gt.dataset["images"]),
                "categories": gt.dataset["categories"],
                "annotations": [],
            }
            dt.createIndex()
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.params.maxDets = [1, 10, int(max_dets)]
        ev.evaluate()
        ev.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        ev.summarize()
    stats = [None if s < 0 else float(s) for s in ev.stats]
    # Per-class AP from COCOeval's own precision array [T, R, K, A, M]: all areas, the largest max_dets.
    precision = ev.eval["precision"]
    per_class: dict[str, float | None] = {}
    for k, cat_id in enumerate(ev.params.catIds):
        pr = precision[:, :, k, 0, -1]
        pr = pr[pr > -1]
        per_class[str(gt.cats[cat_id]["name"])] = float(pr.mean()) if pr.size else None
    return COCOMetrics(
        iou_type=iou_type,
        **dict(zip(COCOMetrics.STAT_FIELDS, stats, strict=True)),
        per_class=per_class,
        summary=summary.getvalue().rstrip(),
    )


def _coco_overrides(
    backend: Any, score_threshold: float, max_dets: int, user: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Per-call options putting the backend in COCO-evaluation mode, plus notes on what it lacks."""
    fields = option_fields(backend)
    notes: list[str] = []
    wanted: dict[str, Any] = {}
    score = _pick(fields, SCORE_OPTIONS)
    if score is None:
        notes.append(
            f"the backend has no score-threshold option ({'/'.join(SCORE_OPTIONS[:3])}); its own threshold "
            f"applies, which lowers AP when it is above the COCO practice of {score_threshold:g}"
        )
    elif score not in user:
        wanted[score] = score_threshold
    maxdet = _pick(fields, MAX_DET_OPTIONS)
    if maxdet is not None and maxdet not in user:
        wanted[maxdet] = max_dets
    kept, more = _valid_overrides(backend, wanted)
    return {**kept, **user}, notes + more


def evaluate_coco(
    backend: Any,
    annotations: str | os.PathLike[str],
    images: str | os.PathLike[str],
    *,
    segm: bool | None = None,
    score_threshold: float = COCO_SCORE_THRESHOLD,
    max_dets: int = COCO_MAX_DETS,
    class_to_category: Mapping[str | int, int] | None = None,
    limit: int | None = None,
    results_path: str | os.PathLike[str] | None = None,
    registry: Registry | None = None,
    weights: Any = DEFAULT,
    device: str = "cpu",
    precision: str = "fp32",
    options: Mapping[str, Any] | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    progress_bar: bool | None = None,
) -> DetectionReport:
    """COCO mAP of a detector / instance segmenter; see :func:`evaluate` for the arguments."""
    gt = load_coco(annotations)
    img_dir = _need_dir(images, "Images directory")
    bk, name, prec = resolve(
        backend,
        registry=registry,
        weights=weights,
        device=device,
        precision=precision,
        options=options if isinstance(backend, str) else None,
        runtime_options=runtime_options,
    )
    verb, types = _coco_verb(bk, name, segm)
    records_img = _coco_images(gt, img_dir, limit, annotations)
    categories = gt.dataset["categories"]
    user_opts = dict(options or {})  # also for a name: its load-time options must not be overridden
    overrides, notes = _coco_overrides(bk, score_threshold, max_dets, user_opts)
    overrides, notes = _text_prompts(bk, categories, user_opts, overrides, notes)
    if class_to_category is None:
        spec_cats = getattr(getattr(bk, "spec", None), "categories", None)
        if isinstance(spec_cats, tuple) and spec_cats:
            category_map(spec_cats, categories)  # fail before the loop when the label spaces cannot meet
    collect = _CocoCollector(categories, class_to_category, max_dets)
    interrupted, seconds = _run_batches(
        verb,
        records_img,
        lambda r: str(img_dir / r["file_name"]),
        collect,
        overrides=overrides,
        batch_size=_batch_size(bk),
        desc=f"eval {name}",
        progress_bar=progress_bar,
        has_results=lambda: bool(collect.done),
    )
    if class_to_category is None and collect.unmatched and not collect.mapping:
        category_map(sorted(collect.unmatched), categories)  # raises the "no class name matches" error
    if collect.shape_mismatch:
        notes.append(
            f"{collect.shape_mismatch} images decoded at a size other than the annotation's width/height "
            "(EXIF rotation?); their boxes may not line up with the ground truth"
        )
    if results_path is not None:
        Path(results_path).write_text(json.dumps(collect.records))
    metrics = {
        t: coco_metrics(gt, collect.records, t, image_ids=collect.done, max_dets=max_dets) for t in types
    }
    return DetectionReport(
        backend=name,
        precision=prec,
        num_images=len(collect.done),
        seconds=seconds,
        interrupted=interrupted,
        notes=notes,
        annotations=str(annotations),
        images_dir=str(img_dir),
        settings=EvalSettings(
            score_threshold=score_threshold, max_dets=max_dets, backend_options=overrides, iou_types=types
        ),
        bbox=metrics["bbox"],
        segm=metrics.get("segm"),
        class_mapping={str(k): int(v) for k, v in (class_to_category or collect.mapping).items()},
        unmatched_classes=sorted(collect.unmatched),
        num_detections=len(collect.records),
    )


def _coco_verb(
    bk: Any, name: str, segm: bool | None
) -> tuple[Callable[..., Any], list[Literal["bbox", "segm"]]]:
    """The verb to call and the IoU types to score: masks too when the backend segments instances."""
    tasks = tuple(getattr(bk, "tasks", ()))
    can_segm = Task.SEGMENT_INSTANCES in tasks and hasattr(bk, "segment_instances")
    if segm and not can_segm:
        raise TaskNotSupportedError(name, Task.SEGMENT_INSTANCES.value, [t.value for t in tasks])
    if can_segm if segm is None else segm:
        return bk.segment_instances, ["bbox", "segm"]
    if hasattr(bk, "detect") and Task.DETECT in tasks:
        return bk.detect, ["bbox"]
    raise TaskNotSupportedError(name, Task.DETECT.value, [t.value for t in tasks])


def _coco_images(gt: Any, img_dir: Path, limit: int | None, annotations: Any) -> list[dict[str, Any]]:
    """The dataset's image records in id order (the first ``limit``), every file checked to exist."""
    records_img = sorted(gt.dataset["images"], key=lambda r: int(r["id"]))
    if limit is not None:
        records_img = records_img[: max(0, int(limit))]
    missing = [r["file_name"] for r in records_img if not (img_dir / r["file_name"]).is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(records_img)} images listed in {str(annotations)!r} are not in "
            f"{str(img_dir)!r} (first: {missing[:3]!r}); pass the folder holding the dataset's file_name paths."
        )
    return records_img


def _text_prompts(
    bk: Any,
    categories: Sequence[Mapping[str, Any]],
    user: Mapping[str, Any],
    overrides: dict[str, Any],
    notes: list[str],
) -> tuple[dict[str, Any], list[str]]:
    """An open-vocabulary detector is asked for the dataset's own class names (its prompts)."""
    own = getattr(getattr(bk, "options", None), "classes", None)
    if not isinstance(bk, TextPromptedDetector) or "classes" in user or own:
        return overrides, notes
    names = [str(c["name"]) for c in sorted(categories, key=lambda c: int(c["id"]))]
    return {**overrides, "classes": names}, [
        *notes,
        f"classes: the dataset's {len(categories)} category names were the text prompts",
    ]


class _CocoCollector:
    """Turns each batch's results into COCO result records, mapping class names to category ids."""

    def __init__(
        self,
        categories: Sequence[Mapping[str, Any]],
        class_to_category: Mapping[str | int, int] | None,
        max_dets: int,
    ) -> None:
        self.categories, self.class_to_category, self.max_dets = categories, class_to_category, max_dets
        self.mapping: dict[str, int] = {}
        self.unmatched: set[str] = set()
        self.records: list[dict[str, Any]] = []
        self.done: list[int] = []
        self.shape_mismatch = 0

    def __call__(self, chunk: Sequence[dict[str, Any]], results: list[Detections]) -> None:
        kept = []
        for rec, res in zip(chunk, results, strict=True):
            if tuple(res.image_shape) != (int(rec["height"]), int(rec["width"])):
                self.shape_mismatch += 1
            if len(res) > self.max_dets:
                res = res[np.argsort(-res.confidence, kind="stable")[: self.max_dets]]
            kept.append(res)
        if self.class_to_category is None:
            for cname in {n for r in kept for n in r.class_name} - self.mapping.keys() - self.unmatched:
                try:
                    self.mapping.update(category_map([cname], self.categories))
                except VisionKitError:
                    self.unmatched.add(cname)
        source = self.class_to_category if self.class_to_category is not None else self.mapping
        lookup: dict[str | int, int] = dict(source.items())
        self.records.extend(to_coco_results(kept, [int(r["id"]) for r in chunk], class_to_category=lookup))
        self.done.extend(int(r["id"]) for r in chunk)


# -- ImageFolder classification ---------------------------------------------------------------------
def _norm(name: str) -> str:
    return name.strip().lower().replace("_", " ").replace("-", " ")


def evaluate_imagefolder(
    backend: Any,
    root: str | os.PathLike[str],
    *,
    label_map: Mapping[str, str | int] | None = None,
    limit: int | None = None,
    registry: Registry | None = None,
    weights: Any = DEFAULT,
    device: str = "cpu",
    precision: str = "fp32",
    options: Mapping[str, Any] | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    progress_bar: bool | None = None,
) -> ClassificationReport:
    """Top-1 / top-5 accuracy over ``root/<class name>/<image>``; see :func:`evaluate`."""
    folder = _need_dir(root, "ImageFolder root")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    samples = [(img, d.name) for d in class_dirs for img in list_images(d)]
    if not samples:
        raise DatasetError(
            f"No images found under {str(folder)!r}; expected an ImageFolder layout root/<class name>/<image>.jpg."
        )
    if limit is not None:
        samples = samples[: max(0, int(limit))]
    bk, name, prec = resolve(
        backend,
        registry=registry,
        weights=weights,
        device=device,
        precision=precision,
        options=options if isinstance(backend, str) else None,
        runtime_options=runtime_options,
        task=Task.CLASSIFY,
    )
    user = dict(options or {})
    wanted: dict[str, Any] = {}
    topk = _pick(option_fields(bk), TOP_K_OPTIONS)
    if topk is not None and topk not in user:
        wanted[topk] = 5
    overrides, notes = _valid_overrides(bk, wanted)
    overrides.update(user)

    # Directory name → model class: explicit map, else the name itself (or a class id for digit names).
    targets: dict[str, str | int] = {}
    for d in class_dirs:
        t = (label_map or {}).get(d.name, d.name)
        targets[d.name] = int(t) if isinstance(t, str) and t.isdigit() and label_map is None else t
    known = getattr(getattr(bk, "spec", None), "categories", None)
    if isinstance(known, tuple) and known:
        names = {_norm(k) for k in known}
        unknown = sorted(d for d, t in targets.items() if isinstance(t, str) and _norm(t) not in names)
        if len(unknown) == len(targets):
            raise DatasetError(
                f"None of the class directories ({', '.join(unknown[:5])} ...) name a class of backend {name!r} "
                f"(e.g. {', '.join(sorted(known)[:5])}); pass label_map={{directory: class_name}}."
            )
        if unknown:
            notes.append(
                f"{len(unknown)} class directories match no model class and always count as wrong: {unknown[:5]}"
            )

    def hit(res: Classifications, target: str | int, k: int) -> bool:
        if isinstance(target, int):
            return target in res.class_id[:k].tolist()
        return _norm(target) in {_norm(n) for n in res.class_name[:k]}

    correct1: dict[str, list[bool]] = {d.name: [] for d in class_dirs}
    correct5: list[bool] = []
    k_seen: int | None = None

    def consume(chunk: Sequence[tuple[Path, str]], results: list[Classifications]) -> None:
        nonlocal k_seen
        for (_, label), res in zip(chunk, results, strict=True):
            correct1[label].append(hit(res, targets[label], 1))
            correct5.append(hit(res, targets[label], 5))
            k_seen = len(res) if k_seen is None else min(k_seen, len(res))

    interrupted, seconds = _run_batches(
        bk.classify,
        samples,
        lambda sample: str(sample[0]),
        consume,
        overrides=overrides,
        batch_size=_batch_size(bk),
        desc=f"eval {name}",
        progress_bar=progress_bar,
        has_results=lambda: bool(correct5),
    )
    k = min(5, k_seen or 0)
    if k < 5:
        notes.append(f"the backend returned only {k} classes per image; top-5 counts those")
    all1 = [c for v in correct1.values() for c in v]
    return ClassificationReport(
        backend=name,
        precision=prec,
        num_images=len(all1),
        seconds=seconds,
        interrupted=interrupted,
        notes=notes,
        root=str(folder),
        top1=float(np.mean(all1)),
        top5=float(np.mean(correct5)),
        k=k,
        per_class_top1={d: float(np.mean(v)) for d, v in correct1.items() if v},
        label_mapping={d: str(t) for d, t in targets.items()},
    )


# -- semantic segmentation ---------------------------------------------------------------------------
def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """``(C, C)`` int64 pixel counts, rows ground truth, columns prediction, ignoring ``ignore_index``.

    Raises:
        VisionKitError: a ground-truth value outside ``[0, num_classes)`` that is not the ignore index.
    """
    g = np.asarray(gt).astype(np.int64).ravel()
    p = np.asarray(pred).astype(np.int64).ravel()
    keep = np.ones_like(g, bool) if ignore_index is None else g != ignore_index
    g, p = g[keep], p[keep]
    bad = (g < 0) | (g >= num_classes)
    if bad.any():
        vals = np.unique(g[bad])[:5].tolist()
        raise DatasetError(
            f"Ground-truth mask has label values {vals} outside the model's {num_classes} classes "
            f"[0, {num_classes}) and not the ignore index {ignore_index!r}; pass ignore_index= or num_classes=."
        )
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU ``tp / (tp + fp + fn)``; NaN for classes absent from both ground truth and prediction."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        # Palette PNGs (Pascal VOC) hold class indices; asarray of a "P" image returns them, not colours.
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise DatasetError(
            f"Mask {str(path)!r} has shape {arr.shape}; expected a single-channel (H, W) label image "
            "(8/16-bit grayscale or palette PNG of class indices)."
        )
    return arr


def evaluate_semantic(
    backend: Any,
    masks: str | os.PathLike[str],
    images: str | os.PathLike[str],
    *,
    ignore_index: int | None = 255,
    num_classes: int | None = None,
    limit: int | None = None,
    registry: Registry | None = None,
    weights: Any = DEFAULT,
    device: str = "cpu",
    precision: str = "fp32",
    options: Mapping[str, Any] | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    progress_bar: bool | None = None,
) -> SegmentationReport:
    """mIoU from one dataset-wide confusion matrix; see :func:`evaluate`."""
    img_dir = _need_dir(images, "Images directory")
    mask_dir = _need_dir(masks, "Masks directory")
    files = list_images(img_dir)
    mask_by_stem = {p.stem: p for p in list_images(mask_dir)}
    pairs = [(f, mask_by_stem[f.stem]) for f in files if f.stem in mask_by_stem]
    if not pairs:
        raise DatasetError(
            f"No image in {str(img_dir)!r} has a mask with the same file stem in {str(mask_dir)!r} "
            f"({len(files)} images, {len(mask_by_stem)} masks)."
        )
    notes: list[str] = []
    if len(pairs) < len(files):
        notes.append(f"{len(files) - len(pairs)} images have no mask and were skipped")
    if limit is not None:
        pairs = pairs[: max(0, int(limit))]
    bk, name, prec = resolve(
        backend,
        registry=registry,
        weights=weights,
        device=device,
        precision=precision,
        options=options if isinstance(backend, str) else None,
        runtime_options=runtime_options,
        task=Task.SEGMENT_SEMANTIC,
    )
    user = dict(options or {})
    cm: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    done = 0

    def consume(chunk: Sequence[tuple[Path, Path]], results: list[SemanticMask]) -> None:
        nonlocal cm, class_names, done
        for (_, mpath), res in zip(chunk, results, strict=True):
            if cm is None:
                class_names = res.class_names
                n = num_classes or len(class_names)
                if not n:
                    raise DatasetError(f"Backend {name!r} returned no class_names; pass num_classes=.")
                cm = np.zeros((n, n), np.int64)
            gt = _read_mask(mpath)
            if gt.shape != res.label_map.shape:
                raise DatasetError(
                    f"Mask {str(mpath)!r} has shape {gt.shape} but its image has shape {res.label_map.shape}; "
                    "masks must be at the image's resolution."
                )
            cm += confusion_matrix(gt, res.label_map, cm.shape[0], ignore_index)
            done += 1

    interrupted, seconds = _run_batches(
        bk.segment_semantic,
        pairs,
        lambda pair: str(pair[0]),
        consume,
        overrides=user,
        batch_size=_batch_size(bk),
        desc=f"eval {name}",
        progress_bar=progress_bar,
        has_results=lambda: bool(done),
    )
    assert cm is not None
    iou = iou_from_confusion(cm)
    rows = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        class_acc = np.where(rows > 0, np.diag(cm) / rows, np.nan)
    total = int(cm.sum())
    names = [class_names[i] if i < len(class_names) else str(i) for i in range(cm.shape[0])]
    return SegmentationReport(
        backend=name,
        precision=prec,
        num_images=done,
        seconds=seconds,
        interrupted=interrupted,
        notes=notes,
        masks_dir=str(mask_dir),
        images_dir=str(img_dir),
        ignore_index=ignore_index,
        miou=float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        pixel_accuracy=float(np.trace(cm) / total) if total else 0.0,
        mean_class_accuracy=float(np.nanmean(class_acc)) if np.isfinite(class_acc).any() else 0.0,
        per_class_iou={n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou, strict=True)},
        confusion_matrix=cm.tolist(),
    )


# -- the entry point ----------------------------------------------------------------------------------
def evaluate(
    backend: Any,
    *,
    coco: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
    imagefolder: str | os.PathLike[str] | None = None,
    masks: str | os.PathLike[str] | None = None,
    registry: Registry | None = None,
    weights: Any = DEFAULT,
    device: str = "cpu",
    precision: str = "fp32",
    options: Mapping[str, Any] | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    limit: int | None = None,
    progress: bool | None = None,
    **kwargs: Any,
) -> DetectionReport | ClassificationReport | SegmentationReport:
    """Evaluate a backend on a labelled dataset and return a typed report.

    The dataset arguments choose the evaluation:

    - ``coco=`` + ``images=``: COCO bbox mAP (and segm mAP for instance segmenters) via pycocotools.
      Extra keyword arguments: ``segm`` (default: when the backend segments instances), ``score_threshold`` (0.001), ``max_dets`` (100),
      ``class_to_category`` (explicit class name/id → category id), ``results_path`` (write the COCO
      results JSON that was scored).
    - ``imagefolder=``: top-1 / top-5 over ``root/<class name>/<image>``; ``label_map`` maps directory
      names to model class names (digit-only directory names are taken as class ids).
    - ``masks=`` + ``images=``: semantic-segmentation mIoU; masks are single-channel label images named
      like their image (any image suffix); ``ignore_index`` (255), ``num_classes``.

    Args:
        backend: a backend name (loaded with :func:`visionkit.load`) or an already-loaded backend.
        registry: look ``backend`` up here instead of the installed plugins.
        weights: weights for :func:`visionkit.load` (default: the backend's default weights).
        device: device for :func:`visionkit.load`.
        precision: precision for :func:`visionkit.load` (``"int8"`` needs a runtime plugin).
        options: backend options: load-time when ``backend`` is a name, per-call for a loaded backend.
            Options named here win over the COCO-practice defaults.
        runtime_options: options for the runtime serving a non-native precision (e.g. visionkit-onnx's
            ``calib`` folder and ``threads`` for ``int8``).
        limit: evaluate only the first ``limit`` images (sorted by COCO id / path).
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        :class:`DetectionReport`, :class:`ClassificationReport` or :class:`SegmentationReport`.

    Raises:
        InvalidOptionError: no dataset, or an ambiguous combination, was given.
        VisionKitError: unreadable dataset, or model classes that match none of the dataset's.
    """
    common: dict[str, Any] = {
        "registry": registry,
        "weights": weights,
        "device": device,
        "precision": precision,
        "options": options,
        "runtime_options": runtime_options,
        "limit": limit,
        "progress_bar": progress,
    }
    given = [n for n, v in (("coco", coco), ("imagefolder", imagefolder), ("masks", masks)) if v is not None]
    if len(given) != 1:
        raise InvalidOptionError(
            "Give exactly one dataset: coco= (with images=), imagefolder=, or masks= (with images=), "
            f"but got {given or 'none'}."
        )
    if coco is not None:
        if images is None:
            raise InvalidOptionError("coco= needs images=, the folder holding the annotation file's images.")
        return evaluate_coco(backend, coco, images, **common, **kwargs)
    if masks is not None:
        if images is None:
            raise InvalidOptionError("masks= needs images=, the folder of images the masks label.")
        return evaluate_semantic(backend, masks, images, **common, **kwargs)
    assert imagefolder is not None
    if images is not None:
        raise InvalidOptionError(
            "imagefolder= takes the images from its class sub-directories; drop images=."
        )
    return evaluate_imagefolder(backend, imagefolder, **common, **kwargs)
