"""COCO JSON interop: visionkit results ↔ COCO "results" records (what ``COCO.loadRes`` reads).

Label spaces: a model's ``class_id`` is in its own space (YOLO: contiguous 0-79; DETR: the 91-id COCO
layout). COCO category ids are matched **by class name** against the dataset's ``categories`` (the
official COCO names are what both YOLO and DETR checkpoints carry), unless an explicit
``class_to_category`` mapping is given. Masks are RLE-encoded with pycocotools' ``mask.encode`` (never a
hand-written RLE). Requires ``pip install 'visionkit-core[coco]'``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from visionkit.errors import BackendUnavailableError, DatasetError
from visionkit.results import Detections, InstanceMasks, ResultMeta

__all__ = ["category_map", "from_coco_results", "to_coco_results"]


def _mask_utils() -> Any:
    try:
        from pycocotools import mask as mask_utils
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError("coco", ["pycocotools"], "pip install 'visionkit-core[coco]'") from exc
    return mask_utils


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", " ").replace("-", " ")


def category_map(class_names: Iterable[str], categories: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Map each model class name to a COCO category id by (normalised) name.

    Raises:
        VisionKitError: when none of the names match (wrong label space or dataset).
    """
    by_name = {_norm(c["name"]): int(c["id"]) for c in categories}
    names = set(class_names)
    out = {n: by_name[_norm(n)] for n in names if _norm(n) in by_name}
    if names and not out:
        sample = ", ".join(sorted(names)[:5])
        raise DatasetError(
            f"None of the model's class names ({sample} ...) match the dataset's categories; pass "
            "class_to_category={model_class_name_or_id: category_id} explicitly."
        )
    return out


def to_coco_results(
    results: Detections | Sequence[Detections],
    image_ids: int | Sequence[int],
    *,
    categories: Sequence[Mapping[str, Any]] | None = None,
    class_to_category: Mapping[str | int, int] | None = None,
) -> list[dict[str, Any]]:
    """COCO results records (``image_id, category_id, bbox [x,y,w,h], score`` + RLE ``segmentation``).

    Args:
        results: one result per image (:class:`InstanceMasks` add ``segmentation``).
        image_ids: the COCO image id of each result.
        categories: the dataset's ``categories`` list, to map class names to category ids.
        class_to_category: explicit mapping from class name or class id to category id (wins).

    Items whose class has no category (e.g. a class the dataset lacks) are skipped. Tracked results
    (``tracker_id`` set) add ``track_id`` to each record, as the COCO-video formats (TAO, YouTube-VIS
    results) name it; :func:`from_coco_results` reads it back.
    """
    res_list = [results] if isinstance(results, Detections) else list(results)
    ids = [image_ids] if isinstance(image_ids, int) else list(image_ids)
    if len(ids) != len(res_list):
        raise ValueError(f"need one image id per result: got {len(ids)} ids for {len(res_list)} results")
    by_name: dict[str, int] = {}
    if categories is not None and class_to_category is None:
        names = {n for r in res_list for n in r.class_name}
        by_name = category_map(names, categories) if names else {}
    mask_utils = _mask_utils() if any(isinstance(r, InstanceMasks) for r in res_list) else None
    records: list[dict[str, Any]] = []
    for res, image_id in zip(res_list, ids, strict=True):
        rles = None
        if isinstance(res, InstanceMasks) and len(res):
            assert mask_utils is not None
            rles = mask_utils.encode(np.asfortranarray(res.mask.transpose(1, 2, 0).astype(np.uint8)))
        for i in range(len(res)):
            name, cid = res.class_name[i], int(res.class_id[i])
            if class_to_category is not None:
                cat = class_to_category.get(name, class_to_category.get(cid))
            elif categories is not None:
                cat = by_name.get(name)
            else:
                cat = cid
            if cat is None:
                continue
            x1, y1, x2, y2 = (float(v) for v in res.xyxy[i])
            rec: dict[str, Any] = {
                "image_id": int(image_id),
                "category_id": int(cat),
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(float(res.confidence[i]), 5),
            }
            if res.tracker_id is not None:
                rec["track_id"] = int(res.tracker_id[i])
            if rles is not None:
                rle = dict(rles[i])
                rle["counts"] = rle["counts"].decode("ascii")
                rec["segmentation"] = rle
            records.append(rec)
    return records


def from_coco_results(
    records: Iterable[Mapping[str, Any]],
    images: Mapping[int, tuple[int, int]],
    categories: Sequence[Mapping[str, Any]],
) -> dict[int, Detections]:
    """Rebuild per-image results from COCO results records (or annotations with a ``score``).

    Args:
        records: COCO results dicts.
        images: image id → ``(height, width)``.
        categories: the dataset's categories; ``class_id`` becomes the category id and ``class_name`` its name.

    Returns:
        image id → :class:`Detections`, or :class:`InstanceMasks` when records carry ``segmentation``
        (RLE or polygons, decoded with pycocotools). Images without records get an empty result.
    """
    names = {int(c["id"]): str(c["name"]) for c in categories}
    grouped: dict[int, list[Mapping[str, Any]]] = {int(i): [] for i in images}
    for rec in records:
        grouped.setdefault(int(rec["image_id"]), []).append(rec)
    out: dict[int, Detections] = {}
    for image_id, recs in grouped.items():
        if image_id not in images:
            raise KeyError(f"record for image id {image_id} but no size given for it")
        h, w = images[image_id]
        boxes = np.array([r["bbox"] for r in recs], np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        fields: dict[str, Any] = {
            "xyxy": boxes,
            "confidence": np.array([r.get("score", 1.0) for r in recs], np.float32),
            "class_id": np.array([r["category_id"] for r in recs], np.int64),
            "class_name": tuple(names.get(int(r["category_id"]), str(r["category_id"])) for r in recs),
            "metadata": ResultMeta(image_shape=(h, w), label_space="coco"),
        }
        if recs and all("track_id" in r for r in recs):
            fields["tracker_id"] = np.array([r["track_id"] for r in recs], np.int64)
        if recs and all("segmentation" in r for r in recs):
            mask_utils = _mask_utils()
            masks = []
            for r in recs:
                seg = r["segmentation"]
                if isinstance(seg, list):  # polygons
                    seg = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                elif isinstance(seg["counts"], list):  # uncompressed RLE
                    seg = mask_utils.frPyObjects(seg, h, w)
                masks.append(mask_utils.decode(seg).astype(bool))
            fields["mask"] = np.stack(masks) if masks else np.zeros((0, h, w), bool)
            out[image_id] = InstanceMasks(**fields)
        else:
            out[image_id] = Detections(**fields)
    return out
