"""The accuracy gate: score the candidate runtime against the float torch network on real images.

Metrics, in points (x100) so ``max_drop=1.5`` means 1.5 mAP points:

Scored with the core's own tools, so a gate's number means what ``visionkit eval`` reports: predictions
become COCO records through :func:`visionkit.coco.to_coco_results`, mAP is
:func:`visionkit.evaluation.coco_metrics`, and mIoU comes from one confusion matrix over all gate images
(:func:`visionkit.evaluation.confusion_matrix`), not a mean of per-image IoUs.

* detectors: COCO mAP50-95 (pycocotools). With ``annotations=`` (COCO instances JSON) both runtimes
  are scored against the real boxes and the drop is ``mAP(fp32) - mAP(int8)``. Without, fp32's
  confident detections (conf >= 0.25) are the ground truth: fp32 scores ~100 by construction and the
  drop says how far INT8 strays from it (stricter than a real-label drop).
* classifiers: top-1 agreement with fp32 (fp32 = 100).
* semantic segmenters: mIoU of the INT8 label maps against fp32's over the whole gate set (fp32 = 100).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionkit import BackendError, InvalidOptionError, Task, load_image
from visionkit.coco import to_coco_results
from visionkit.evaluation import COCO_MAX_DETS, coco_metrics, confusion_matrix, iou_from_confusion
from visionkit_onnx._calib import BUNDLED, bundled_files, folder_fingerprint, image_files
from visionkit_onnx._options import RuntimeOptions

__all__ = ["PSEUDO_GT_CONF", "GateRun", "evaluate", "gate_fingerprint", "gate_task"]

PSEUDO_GT_CONF = 0.25
_GATED = (Task.DETECT, Task.CLASSIFY, Task.SEGMENT_SEMANTIC)


def gate_task(backend: Any) -> Task:
    """The task the gate scores: the first of detect, classify, segment_semantic the backend does."""
    tasks = tuple(getattr(backend, "tasks", ()))
    for t in _GATED:
        if t in tasks:
            return t
    raise InvalidOptionError(
        f"max_drop cannot be checked for backend {getattr(backend, 'name', '?')!r}: the gate scores "
        f"detect, classify or segment_semantic, but it does {', '.join(t.value for t in tasks) or 'nothing'}."
    )


def _gate_images(opts: RuntimeOptions) -> tuple[list[Path], dict[str, Any] | None, str]:
    """Image files, the COCO annotations filtered to them, and a fingerprint.

    ``val``, else ``calib``, else ``VISIONKIT_CALIB``, else the photos bundled with the plugin.
    """
    folder = opts.val or opts.calib or os.environ.get("VISIONKIT_CALIB")
    if opts.annotations is not None:
        ann_path = Path(opts.annotations).expanduser()
        try:
            coco = json.loads(ann_path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidOptionError(
                f"annotations={str(ann_path)!r} must be a readable COCO instances JSON file: {exc}"
            ) from exc
        if folder is None:
            folder = ann_path.parent / "images"
        folder = Path(folder).expanduser()
        by_name = {im["file_name"]: im for im in coco.get("images", [])}
        files = sorted(p for p in image_files(folder, 10**9, "val") if p.name in by_name)[: opts.val_images]
        if not files:
            raise InvalidOptionError(
                f"No image of val={str(folder)!r} is listed in annotations={str(ann_path)!r} (matched by file_name)."
            )
        keep = {by_name[p.name]["id"] for p in files}
        coco = {
            "images": [by_name[p.name] for p in files],
            "annotations": [a for a in coco.get("annotations", []) if a["image_id"] in keep],
            "categories": coco.get("categories", []),
        }
        st = ann_path.stat()
        return files, coco, f"{folder_fingerprint(files)}-{st.st_size}-{st.st_mtime_ns}"
    if folder is None:
        files = bundled_files()[: opts.val_images]
        return files, None, f"{BUNDLED}-{len(files)}"
    files = image_files(Path(folder), opts.val_images, "val")
    return files, None, folder_fingerprint(files)


def gate_fingerprint(opts: RuntimeOptions, task: Task) -> str:
    """Identifies the gate's data and settings; results are cached under it."""
    _, _, fp = _gate_images(opts)
    return hashlib.sha256(f"{task.value}|{fp}|{opts.val_images}|{PSEUDO_GT_CONF}".encode()).hexdigest()[:16]


def _predict_all(
    backend: Any, forward: Callable[..., Any], images: list[np.ndarray], task: Task
) -> list[Any]:
    overrides: dict[str, Any] = {}
    fields = getattr(type(backend.options), "model_fields", {})
    if task is Task.DETECT and "conf" in fields:
        overrides["conf"] = 0.001  # the mAP protocol scores the whole precision-recall curve
    with backend.stage_replaced("forward", forward):
        return [backend.predict(im, task, **overrides) for im in images]


def coco_map(gt: dict[str, Any], records: list[dict[str, Any]], image_ids: Sequence[int]) -> float:
    """COCO AP@[.5:.95] in 0-1 from :func:`visionkit.evaluation.coco_metrics` (0 when nothing to score)."""
    from pycocotools.coco import COCO

    if not gt["annotations"]:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
    ap = coco_metrics(coco, records, "bbox", image_ids=image_ids, max_dets=COCO_MAX_DETS).ap
    return max(0.0, ap or 0.0)


def pseudo_ground_truth(ref: list[Any], images: list[np.ndarray]) -> dict[str, Any]:
    """fp32's confident detections (confidence >= ``PSEUDO_GT_CONF``) as a COCO ground truth, ids ``1..n``."""
    ids = list(range(1, len(images) + 1))
    confident = [det[det.confidence >= PSEUDO_GT_CONF] for det in ref]
    cids = {int(c) for det in confident for c in det.class_id}
    records = to_coco_results(confident, ids, class_to_category={c: c + 1 for c in cids})
    anns = [
        {**r, "id": i, "area": r["bbox"][2] * r["bbox"][3], "iscrowd": 0}
        for i, r in enumerate(records, start=1)
    ]
    if not anns:
        raise BackendError(
            f"The accuracy gate found no fp32 detection with confidence >= {PSEUDO_GT_CONF} on its "
            f"{len(images)} images, so there is nothing to compare against; pass val= with images of "
            "your domain, or annotations= with a COCO JSON."
        )
    return {
        "images": [
            {"id": i, "width": int(im.shape[1]), "height": int(im.shape[0])}
            for i, im in zip(ids, images, strict=True)
        ],
        "annotations": anns,
        "categories": [],  # filled by the caller with every class either runtime emits
    }


def _detection(
    ref: list[Any],
    cand: list[Any],
    images: list[np.ndarray],
    coco: dict | None,
    ref_score: float | None = None,
) -> dict[str, Any]:
    """mAP of both runtimes; ``ref_score`` (points) is the reference's, when already known (the INT8
    search scores several candidates against one reference: one COCOeval per step, not two)."""
    if coco is not None:
        ids = [im["id"] for im in coco["images"]]
        gt = {**coco, "annotations": [dict(a, id=i + 1) for i, a in enumerate(coco["annotations"])]}
        cats = coco["categories"]
        if ref_score is None:
            ref_score = 100 * coco_map(gt, to_coco_results(ref, ids, categories=cats), ids)
        c = coco_map(gt, to_coco_results(cand, ids, categories=cats), ids)
        return {"metric": "mAP50-95", "against": "annotations", "reference": ref_score, "candidate": 100 * c}
    ids = list(range(1, len(images) + 1))
    gt = pseudo_ground_truth(ref, images)
    cids = {int(c) for d in [*ref, *cand] for c in d.class_id}
    gt["categories"] = [{"id": c + 1, "name": str(c + 1)} for c in sorted(cids)]
    to_cat: dict[str | int, int] = {c: c + 1 for c in cids}
    # categories only the candidate emits have no ground truth: COCOeval leaves them out of the mean,
    # so the reference's score does not depend on the candidate
    if ref_score is None:
        ref_score = 100 * coco_map(gt, to_coco_results(ref, ids, class_to_category=to_cat), ids)
    c = coco_map(gt, to_coco_results(cand, ids, class_to_category=to_cat), ids)
    return {
        "metric": "mAP50-95",
        "against": f"fp32 detections with confidence >= {PSEUDO_GT_CONF}",
        "reference": ref_score,
        "candidate": 100 * c,
    }


def _classification(ref: list[Any], cand: list[Any]) -> dict[str, Any]:
    agree = np.mean([int(r.class_id[0]) == int(c.class_id[0]) for r, c in zip(ref, cand, strict=True)])
    return {"metric": "top-1", "against": "fp32 top-1", "reference": 100.0, "candidate": 100 * float(agree)}


def mean_iou(ref: list[Any], cand: list[Any]) -> float:
    """mIoU (0-1) of ``cand``'s label maps against ``ref``'s: one confusion matrix over every image, as
    ``visionkit eval`` computes it (classes absent from both are left out of the mean)."""
    labels = [int(np.max(m.label_map)) for m in [*ref, *cand] if np.size(m.label_map)]
    n = max([len(m.class_names) for m in ref] + [max(labels, default=0) + 1])
    cm = np.zeros((n, n), np.int64)
    for r, c in zip(ref, cand, strict=True):
        cm += confusion_matrix(np.asarray(r.label_map), np.asarray(c.label_map), n)
    iou = iou_from_confusion(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0


def _semantic(ref: list[Any], cand: list[Any]) -> dict[str, Any]:
    return {
        "metric": "mIoU",
        "against": "fp32 label maps",
        "reference": 100.0,
        "candidate": 100 * mean_iou(ref, cand),
    }


class GateRun:
    """The gate's images and the float reference's predictions, computed once (on first use) and
    reused for every candidate: the INT8 search scores several models against the same reference."""

    def __init__(self, backend: Any, reference: Callable[..., Any], opts: RuntimeOptions) -> None:
        self.backend = backend
        self.reference = reference
        self.opts = opts
        self.task = gate_task(backend)
        self._state: tuple[list[np.ndarray], dict[str, Any] | None, list[Any], str] | None = None
        self._ref_score: float | None = None
        #: the reference forward's latency, when a caller measured it (the search: once for all steps)
        self.reference_ms: float | None = None

    def _load(self) -> tuple[list[np.ndarray], dict[str, Any] | None, list[Any], str]:
        if self._state is None:
            files, coco, _ = _gate_images(self.opts)
            images = [load_image(p) for p in files]
            ref = _predict_all(self.backend, self.reference, images, self.task)
            bundled = files[0].parent == bundled_files()[0].parent
            self._state = (images, coco, ref, BUNDLED if bundled else str(files[0].parent))
        return self._state

    def evaluate(self, candidate: Callable[..., Any]) -> dict[str, Any]:
        """Score ``candidate`` (a forward) against the reference on the gate images."""
        images, coco, ref, source = self._load()
        cand = _predict_all(self.backend, candidate, images, self.task)
        if self.task is Task.DETECT:
            out = _detection(ref, cand, images, coco, self._ref_score)
            self._ref_score = out["reference"]
        elif self.task is Task.CLASSIFY:
            out = _classification(ref, cand)
        else:
            out = _semantic(ref, cand)
        out["drop"] = out["reference"] - out["candidate"]
        out["images"] = len(images)
        out["task"] = self.task.value
        out["source"] = source
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}

    def latency_ms(self, forward: Callable[..., Any], repeats: int = 5) -> float:
        """Median milliseconds of ``forward`` on the first gate image's input, after one warm-up run.

        Cheap on purpose (a handful of runs, no interleaving): it ranks the search's steps against
        each other in one process, it is not a benchmark.
        """
        images = self._load()[0]
        x = self.backend.preprocess(images[:1], self.backend.options).inputs
        forward(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            forward(x)
            times.append(time.perf_counter() - t0)
        return round(1000 * float(np.median(times)), 2)


def evaluate(
    backend: Any, reference: Callable[..., Any], candidate: Callable[..., Any], opts: RuntimeOptions
) -> dict[str, Any]:
    """Score ``candidate`` (a forward) against ``reference`` (the float torch forward) on the gate images."""
    return GateRun(backend, reference, opts).evaluate(candidate)
