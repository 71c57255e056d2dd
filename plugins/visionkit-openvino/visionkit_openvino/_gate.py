"""The accuracy gate: score a candidate network against the float torch network on real images.

Metrics are in points (x100), so ``max_drop=1.0`` means one mAP point. They are the core's own, so a
gate's number means what ``visionkit eval`` reports:

* detectors: COCO mAP50-95 from :func:`visionkit.evaluation.coco_metrics`, predictions turned into COCO
  records by :func:`visionkit.coco.to_coco_results`. With ``annotations=`` both networks are scored against the
  real boxes; without, torch fp32's detections with confidence >= 0.25 are the ground truth (fp32
  scores ~100 by construction; the drop says how far the candidate strays from it).
* classifiers: top-1 agreement with torch fp32 (fp32 = 100).
* semantic segmenters: mIoU of the candidate's label maps against torch fp32's, from one confusion
  matrix over all gate images (:func:`visionkit.evaluation.confusion_matrix`), as ``visionkit eval``
  computes it (fp32 = 100).

The same scorer is NNCF's validation function for accuracy-aware INT8 (:meth:`GateData.validate`).
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
from visionkit_openvino._calib import folder_fingerprint, image_files, synthetic_images
from visionkit_openvino._options import RuntimeOptions

__all__ = ["PSEUDO_GT_CONF", "GateData", "gate_task"]

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


def _coco_map(gt: dict[str, Any], records: list[dict[str, Any]], image_ids: Sequence[int]) -> float:
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


def mean_iou(ref: Sequence[Any], cand: Sequence[Any]) -> float:
    """mIoU (0-1) of ``cand``'s label maps against ``ref``'s: one confusion matrix over every image, as
    ``visionkit eval`` computes it (classes absent from both are left out of the mean)."""
    labels = [int(np.max(m.label_map)) for m in [*ref, *cand] if np.size(m.label_map)]
    n = max([len(m.class_names) for m in ref] + [max(labels, default=0) + 1])
    cm = np.zeros((n, n), np.int64)
    for r, c in zip(ref, cand, strict=True):
        cm += confusion_matrix(np.asarray(r.label_map), np.asarray(c.label_map), n)
    iou = iou_from_confusion(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0


class GateData:
    """The gate's images, labels and torch fp32 reference predictions, and the scorer over them."""

    def __init__(self, backend: Any, reference: Callable[..., Any], opts: RuntimeOptions) -> None:
        self.backend = backend
        self.task = gate_task(backend)
        self.opts = opts
        files, self.coco, fp = self._images(opts)
        self.source = str(files[0].parent) if files else "synthetic"
        self.images = (
            [load_image(p) for p in files] if files else synthetic_images(min(opts.val_images, 8), seed=1)
        )
        self.fingerprint = hashlib.sha256(
            f"{self.task.value}|{fp}|{opts.val_images}|{PSEUDO_GT_CONF}".encode()
        ).hexdigest()[:16]
        self._reference_forward = reference
        self._reference: list[Any] | None = None
        self._gt_cache: dict[str, Any] | None = None

    @property
    def reference(self) -> list[Any]:
        """torch fp32's results on the gate images (computed on first use: a cached gate never needs them)."""
        if self._reference is None:
            self._reference = self.predict(self._reference_forward)
        return self._reference

    @property
    def _gt(self) -> dict[str, Any] | None:
        if self._gt_cache is None:
            self._gt_cache = self._ground_truth()
        return self._gt_cache

    # -- data ---------------------------------------------------------------------------------------
    @staticmethod
    def _images(opts: RuntimeOptions) -> tuple[list[Path] | None, dict[str, Any] | None, str]:
        folder = opts.val or opts.calib or os.environ.get("VISIONKIT_CALIB")
        if opts.annotations is None:
            if folder is None:
                return None, None, f"synthetic-{opts.val_images}"
            files = image_files(Path(folder), opts.val_images, "val")
            return files, None, folder_fingerprint(files)
        ann = Path(opts.annotations).expanduser()
        try:
            coco = json.loads(ann.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidOptionError(
                f"annotations={str(ann)!r} must be a readable COCO instances JSON: {exc}"
            ) from exc
        folder = Path(folder).expanduser() if folder is not None else ann.parent / "images"
        by_name = {im["file_name"]: im for im in coco.get("images", [])}
        files = [p for p in image_files(folder, 10**9, "val") if p.name in by_name][: opts.val_images]
        if not files:
            raise InvalidOptionError(
                f"No image of val={str(folder)!r} is listed in annotations={str(ann)!r} (matched by file_name)."
            )
        keep = {by_name[p.name]["id"] for p in files}
        coco = {
            "images": [by_name[p.name] for p in files],
            "annotations": [
                dict(a, id=i + 1) for i, a in enumerate(coco.get("annotations", [])) if a["image_id"] in keep
            ],
            "categories": coco.get("categories", []),
        }
        st = ann.stat()
        return files, coco, f"{folder_fingerprint(files)}-{st.st_size}-{st.st_mtime_ns}"

    def _ground_truth(self) -> dict[str, Any] | None:
        if self.task is not Task.DETECT:
            return None
        if self.coco is not None:
            return self.coco
        # fp32's confident detections, exported by the core's COCO bridge
        confident = [det[det.confidence >= PSEUDO_GT_CONF] for det in self.reference]
        cids = {int(c) for det in confident for c in det.class_id}
        records = to_coco_results(
            confident, list(range(1, len(confident) + 1)), class_to_category={c: c + 1 for c in cids}
        )
        anns = [
            {**r, "id": i, "area": r["bbox"][2] * r["bbox"][3], "iscrowd": 0}
            for i, r in enumerate(records, start=1)
        ]
        if not anns:
            raise BackendError(
                f"The accuracy gate found no fp32 detection with confidence >= {PSEUDO_GT_CONF} on its "
                f"{len(self.images)} images, so there is nothing to compare against; pass val= with images "
                "of your domain, or annotations= with a COCO JSON."
            )
        n_cls = max(a["category_id"] for a in anns) + 1000  # every class id the model may emit
        return {
            "images": [
                {"id": i, "width": int(im.shape[1]), "height": int(im.shape[0])}
                for i, im in enumerate(self.images, start=1)
            ],
            "annotations": anns,
            "categories": [{"id": c, "name": str(c)} for c in range(1, n_cls)],
        }

    @property
    def against(self) -> str:
        """What the reference of the metric is."""
        if self.task is Task.DETECT:
            return (
                "annotations"
                if self.coco is not None
                else f"fp32 detections with confidence >= {PSEUDO_GT_CONF}"
            )
        return "fp32 top-1" if self.task is Task.CLASSIFY else "fp32 label maps"

    # -- scoring ------------------------------------------------------------------------------------
    def predict(self, forward: Callable[..., Any], indices: Sequence[int] | None = None) -> list[Any]:
        """The backend's results on the gate images with ``forward`` as its network."""
        overrides: dict[str, Any] = {}
        fields = getattr(type(self.backend.options), "model_fields", {})
        if self.task is Task.DETECT and "conf" in fields:
            overrides["conf"] = 0.001  # the mAP protocol scores the whole precision-recall curve
        idx = range(len(self.images)) if indices is None else indices
        with self.backend.stage_replaced("forward", forward):
            return [self.backend.predict(self.images[i], self.task, **overrides) for i in idx]

    def score(self, results: list[Any], indices: Sequence[int] | None = None) -> float:
        """The metric (points) of ``results``, the predictions on the images ``indices`` (default all)."""
        idx = list(range(len(self.images))) if indices is None else list(indices)
        if self.task is Task.DETECT:
            assert self._gt is not None
            if self.coco is not None:
                ids = [int(self.coco["images"][i]["id"]) for i in idx]
                records = to_coco_results(results, ids, categories=self._gt["categories"]) if results else []
            else:
                ids = [i + 1 for i in idx]
                cids = {int(c) for r in results for c in r.class_id}
                records = to_coco_results(results, ids, class_to_category={c: c + 1 for c in cids})
            return 100 * _coco_map(self._gt, records, ids)
        ref = [self.reference[i] for i in idx]
        if self.task is Task.CLASSIFY:
            agree = [int(r.class_id[0]) == int(c.class_id[0]) for r, c in zip(ref, results, strict=True)]
            return 100 * float(np.mean(agree))
        return 100 * mean_iou(ref, results)

    def latency_ms(self, forward: Callable[..., Any], repeats: int = 5) -> float:
        """Median milliseconds of ``forward`` on the first gate image's input (after one warm-up)."""
        x = self.backend.preprocess(self.images[:1], self.backend.options).inputs
        forward(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            forward(x)
            times.append(time.perf_counter() - t0)
        return round(1000 * float(np.median(times)), 2)

    def evaluate(self, candidate: Callable[..., Any], reference: Callable[..., Any]) -> dict[str, Any]:
        """Reference and candidate scores, the drop, and both forwards' latency."""
        ref = self.score(self.reference)
        cand = self.score(self.predict(candidate))
        out = {
            "metric": {Task.DETECT: "mAP50-95", Task.CLASSIFY: "top-1"}.get(self.task, "mIoU"),
            "against": self.against,
            "reference": ref,
            "candidate": cand,
            "drop": ref - cand,
            "images": len(self.images),
            "task": self.task.value,
            "source": self.source,
            "reference_ms": self.latency_ms(reference),
            "candidate_ms": self.latency_ms(candidate),
        }
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}

    def validation_fn(
        self, make_forward: Callable[[Any], Callable[..., Any]]
    ) -> Callable[[Any, Any], tuple[float, None]]:
        """NNCF's ``validation_fn(compiled_model, items) -> (metric, None)``; items are image indices."""

        def validate(compiled: Any, items: Any) -> tuple[float, None]:
            idx = [int(i) for i in items]
            return self.score(self.predict(make_forward(compiled), idx), idx), None

        return validate
