"""The accuracy gate: score the candidate runtime against the float torch network on real images.

Metrics, in points (x100) so ``max_drop=1.5`` means 1.5 mAP points:

* detectors: COCO mAP50-95 (pycocotools). With ``annotations=`` (COCO instances JSON) both runtimes
  are scored against the real boxes and the drop is ``mAP(fp32) - mAP(int8)``. Without, fp32's
  confident detections (conf >= 0.25) are the ground truth: fp32 scores ~100 by construction and the
  drop says how far INT8 strays from it (stricter than a real-label drop).
* classifiers: top-1 agreement with fp32 (fp32 = 100).
* semantic segmenters: mIoU of the INT8 label maps against fp32's (fp32 = 100).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from visionkit import BackendError, InvalidOptionError, Task, load_image
from visionkit_onnx._calib import BUNDLED, bundled_files, folder_fingerprint, image_files
from visionkit_onnx._options import RuntimeOptions

__all__ = ["PSEUDO_GT_CONF", "evaluate", "gate_fingerprint", "gate_task"]

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
    saved = backend.__dict__.get("forward")
    backend.forward = forward
    try:
        return [backend.predict(im, task, **overrides) for im in images]
    finally:
        if saved is None:
            del backend.forward
        else:
            backend.forward = saved


def _coco_map(gt: dict[str, Any], dets: list[dict[str, Any]]) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not dets or not gt["annotations"]:
        return 0.0
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        res = coco.loadRes(dets)
        ev = COCOeval(coco, res, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return max(0.0, float(ev.stats[0]))


def _as_coco(
    results: list[Any], image_ids: list[int], cat_of: Callable[[int, str], int | None]
) -> list[dict]:
    out = []
    for det, img_id in zip(results, image_ids, strict=True):
        for box, score, cid, cname in zip(
            det.xyxy, det.confidence, det.class_id, det.class_name, strict=True
        ):
            cat = cat_of(int(cid), cname)
            if cat is None:
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            out.append(
                {
                    "image_id": img_id,
                    "category_id": cat,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return out


def _detection(
    ref: list[Any], cand: list[Any], images: list[np.ndarray], coco: dict | None
) -> dict[str, Any]:
    if coco is not None:
        name_to_id = {c["name"]: c["id"] for c in coco["categories"]}
        ids = [im["id"] for im in coco["images"]]
        gt = {**coco, "annotations": [dict(a, id=i + 1) for i, a in enumerate(coco["annotations"])]}
        r = _coco_map(gt, _as_coco(ref, ids, lambda _c, n: name_to_id.get(n)))
        c = _coco_map(gt, _as_coco(cand, ids, lambda _c, n: name_to_id.get(n)))
        return {"metric": "mAP50-95", "against": "annotations", "reference": 100 * r, "candidate": 100 * c}
    ids = list(range(1, len(images) + 1))
    anns: list[dict[str, Any]] = []
    for det, img_id in zip(ref, ids, strict=True):
        for box, score, cid in zip(det.xyxy, det.confidence, det.class_id, strict=True):
            if score >= PSEUDO_GT_CONF:
                x1, y1, x2, y2 = (float(v) for v in box)
                w, h = x2 - x1, y2 - y1
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": img_id,
                        "category_id": int(cid) + 1,
                        "bbox": [x1, y1, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
    if not anns:
        raise BackendError(
            f"The accuracy gate found no fp32 detection with confidence >= {PSEUDO_GT_CONF} on its "
            f"{len(images)} images, so there is nothing to compare against; pass val= with images of "
            "your domain, or annotations= with a COCO JSON."
        )
    cats = sorted({a["category_id"] for a in anns} | {int(c) + 1 for d in cand for c in d.class_id})
    gt = {
        "images": [
            {"id": i, "width": int(im.shape[1]), "height": int(im.shape[0])}
            for i, im in zip(ids, images, strict=True)
        ],
        "annotations": anns,
        "categories": [{"id": c, "name": str(c)} for c in cats],
    }
    r = _coco_map(gt, _as_coco(ref, ids, lambda c, _n: c + 1))
    c = _coco_map(gt, _as_coco(cand, ids, lambda c, _n: c + 1))
    return {
        "metric": "mAP50-95",
        "against": f"fp32 detections with confidence >= {PSEUDO_GT_CONF}",
        "reference": 100 * r,
        "candidate": 100 * c,
    }


def _classification(ref: list[Any], cand: list[Any]) -> dict[str, Any]:
    agree = np.mean([int(r.class_id[0]) == int(c.class_id[0]) for r, c in zip(ref, cand, strict=True)])
    return {"metric": "top-1", "against": "fp32 top-1", "reference": 100.0, "candidate": 100 * float(agree)}


def _semantic(ref: list[Any], cand: list[Any]) -> dict[str, Any]:
    ious = []
    for r, c in zip(ref, cand, strict=True):
        a, b = np.asarray(r.label_map), np.asarray(c.label_map)
        for k in np.union1d(np.unique(a), np.unique(b)):
            inter = np.logical_and(a == k, b == k).sum()
            union = np.logical_or(a == k, b == k).sum()
            ious.append(inter / union)
    return {
        "metric": "mIoU",
        "against": "fp32 label maps",
        "reference": 100.0,
        "candidate": 100 * float(np.mean(ious)),
    }


def evaluate(
    backend: Any, reference: Callable[..., Any], candidate: Callable[..., Any], opts: RuntimeOptions
) -> dict[str, Any]:
    """Score ``candidate`` (a forward) against ``reference`` (the float torch forward) on the gate images."""
    task = gate_task(backend)
    files, coco, _ = _gate_images(opts)
    images = [load_image(p) for p in files]
    ref = _predict_all(backend, reference, images, task)
    cand = _predict_all(backend, candidate, images, task)
    if task is Task.DETECT:
        out = _detection(ref, cand, images, coco)
    elif task is Task.CLASSIFY:
        out = _classification(ref, cand)
    else:
        out = _semantic(ref, cand)
    out["drop"] = out["reference"] - out["candidate"]
    out["images"] = len(images)
    out["task"] = task.value
    bundled = files[0].parent == bundled_files()[0].parent
    out["source"] = BUNDLED if bundled else str(files[0].parent)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
