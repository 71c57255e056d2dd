"""Bridge to `supervision <https://supervision.roboflow.com>`_: visionkit results ↔ ``sv.Detections``.

::

    sv_dets = dets.to_supervision()                    # Detections / InstanceMasks -> sv.Detections
    dets = visionkit.Detections.from_supervision(sv_dets)
    sv.BoxAnnotator().annotate(frame.copy(), dets.to_supervision())

supervision is an optional dependency (``pip install 'visionkit-core[supervision]'``); nothing here imports
it until a conversion runs, and a missing install raises :class:`~visionkit.BackendUnavailableError`
naming that command. The field mapping is the one supervision's own ``from_ultralytics`` uses, so
supervision's annotators, trackers and zones read visionkit results unchanged:

=========================  ===============================================================
visionkit                  ``supervision.Detections``
=========================  ===============================================================
``xyxy``                   ``xyxy``
``confidence``             ``confidence`` (``None`` there becomes 1.0 here: annotations)
``class_id``               ``class_id``
``class_name``             ``data["class_name"]`` (what ``LabelAnnotator`` prints)
``mask`` (InstanceMasks)   ``mask`` (a ``CompactMask`` is decoded)
``tracker_id``             ``tracker_id``
other ``data`` keys        ``data``
``metadata``               ``metadata`` (``image_shape``, ``backend`` and the backend's keys)
=========================  ===============================================================

visionkit → supervision → visionkit is lossless. ``sv.Classifications`` holds only ``class_id`` and
``confidence``, so :func:`classifications_from_supervision` takes the class names and image size.
Arrays handed to supervision are copies: supervision code may write to them, visionkit results are
read-only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from visionkit.errors import BackendUnavailableError, InvalidOptionError
from visionkit.results import Classifications, Detections, InstanceMasks, ResultMeta

__all__ = [
    "CLASS_NAME",
    "TRACKER_ID",
    "classifications_from_supervision",
    "detections_from_supervision",
    "from_supervision",
    "require_supervision",
    "to_supervision",
]

#: ``sv.Detections.data`` key holding class names (supervision's ``CLASS_NAME_DATA_FIELD``).
CLASS_NAME = "class_name"
#: The field (or, in results without that field, the ``data`` key) mapped to supervision's ``tracker_id``.
TRACKER_ID = "tracker_id"
INSTALL = "pip install 'visionkit-core[supervision]'"


def require_supervision(feature: str = "supervision interop") -> ModuleType:
    """Import and return ``supervision``.

    Raises:
        BackendUnavailableError: supervision is not installed (the message names the install command).
    """
    try:
        import supervision
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(feature, ["supervision"], INSTALL) from exc
    return supervision


def to_supervision(result: Detections | Classifications) -> Any:
    """A visionkit result as a supervision object.

    Args:
        result: :class:`~visionkit.Detections` or :class:`~visionkit.InstanceMasks` (→ ``sv.Detections``),
            or :class:`~visionkit.Classifications` (→ ``sv.Classifications``: class ids and confidences).

    Raises:
        BackendUnavailableError: supervision is not installed.
        InvalidOptionError: ``result`` is another type (semantic and prompt masks have no supervision twin).
    """
    sv = require_supervision()
    if isinstance(result, Classifications):
        return sv.Classifications(
            class_id=np.array(result.class_id, dtype=np.int64), confidence=np.array(result.confidence)
        )
    if not isinstance(result, Detections):
        raise InvalidOptionError(
            f"to_supervision takes Detections, InstanceMasks or Classifications, but got {type(result).__name__}."
        )
    data: dict[str, Any] = {k: np.array(v) for k, v in result.data.items()}
    data[CLASS_NAME] = np.array(result.class_name, dtype=str)
    tracker = getattr(result, TRACKER_ID, None)
    return sv.Detections(
        xyxy=np.array(result.xyxy),
        mask=np.array(result.mask) if isinstance(result, InstanceMasks) else None,
        confidence=np.array(result.confidence),
        class_id=np.array(result.class_id),
        tracker_id=None if tracker is None else np.array(tracker),
        data=data,
        metadata=result.metadata.model_dump(),
    )


def _names_for(
    class_id: np.ndarray, class_names: Sequence[str] | Mapping[int, str], what: str
) -> tuple[str, ...]:
    lookup = dict(class_names) if isinstance(class_names, Mapping) else dict(enumerate(class_names))
    missing = sorted({int(i) for i in class_id} - set(lookup))
    if missing:
        raise InvalidOptionError(
            f"class_names has no name for class ids {missing[:5]} of the {what}; give a name for every id "
            f"(a list indexed by id or a dict id -> name), but got {len(lookup)} names."
        )
    return tuple(str(lookup[int(i)]) for i in class_id)


def _metadata(
    sv_meta: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    image_shape: tuple[int, int] | None,
    mask_shape: tuple[int, ...] | None,
    what: str,
) -> ResultMeta:
    meta = {**dict(sv_meta or {}), **dict(metadata or {})}
    if image_shape is not None:
        meta["image_shape"] = tuple(image_shape)
    elif "image_shape" not in meta and mask_shape is not None:
        meta["image_shape"] = tuple(mask_shape[1:])
    if "image_shape" not in meta:
        raise InvalidOptionError(
            f"The supervision {what} carry no image size (no metadata['image_shape'], no masks); pass "
            "image_shape=(height, width)."
        )
    return ResultMeta.model_validate(meta)


def detections_from_supervision(
    detections: Any,
    *,
    image_shape: tuple[int, int] | None = None,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    masks: bool | None = None,
) -> Detections:
    """A ``supervision.Detections`` as visionkit :class:`~visionkit.Detections` / :class:`~visionkit.InstanceMasks`.

    Args:
        detections: the ``sv.Detections``.
        image_shape: ``(height, width)``; default ``metadata["image_shape"]`` (set by :func:`to_supervision`),
            else the masks' size.
        class_names: names by class id (a list or a dict), used when ``data["class_name"]`` is absent.
        metadata: extra per-image metadata (wins over ``detections.metadata``).
        masks: ``None``: :class:`~visionkit.InstanceMasks` when ``detections.mask`` is set, else
            :class:`~visionkit.Detections`; ``True``: masks required; ``False``: masks dropped.

    Raises:
        BackendUnavailableError: supervision is not installed.
        InvalidOptionError: no ``class_id``, no class names, no image size, or masks required but absent.
    """
    sv = require_supervision()
    if not isinstance(detections, sv.Detections):
        raise InvalidOptionError(f"Expected a supervision.Detections, but got {type(detections).__name__}.")
    n = len(detections)
    raw_mask = detections.mask
    if raw_mask is not None and not isinstance(raw_mask, np.ndarray):
        raw_mask = raw_mask.to_dense()  # supervision's CompactMask (RLE crops)
    if masks and raw_mask is None:
        raise InvalidOptionError(
            "InstanceMasks.from_supervision needs detections with masks, but detections.mask is None; "
            "use Detections.from_supervision."
        )
    keep_mask = raw_mask is not None and masks is not False
    meta = _metadata(
        detections.metadata, metadata, image_shape, None if raw_mask is None else raw_mask.shape, "detections"
    )
    if detections.class_id is None:
        if n:
            raise InvalidOptionError(
                "The supervision detections have no class_id (class-agnostic, e.g. from SAM); set "
                "detections.class_id (and data['class_name']) before converting."
            )
        class_id = np.zeros(0, np.int64)
    else:
        class_id = np.asarray(detections.class_id).astype(np.int64)
    data = {k: np.asarray(v) for k, v in detections.data.items() if k != CLASS_NAME}
    if CLASS_NAME in detections.data:
        names = tuple(str(x) for x in np.asarray(detections.data[CLASS_NAME]).tolist())
    elif class_names is not None:
        names = _names_for(class_id, class_names, "detections")
    elif n:
        raise InvalidOptionError(
            "The supervision detections have no data['class_name']; pass class_names= (a list indexed by "
            "class id or a dict id -> name)."
        )
    else:
        names = ()
    extra: dict[str, Any] = {}
    if detections.tracker_id is not None:
        ids = np.asarray(detections.tracker_id).astype(np.int64)
        if TRACKER_ID in Detections.model_fields:
            extra[TRACKER_ID] = ids
        else:  # results without a tracker_id field keep ids in data
            data[TRACKER_ID] = ids
    confidence = (
        np.ones(n, np.float32) if detections.confidence is None else np.asarray(detections.confidence)
    )
    fields: dict[str, Any] = {
        "xyxy": np.asarray(detections.xyxy, np.float32),
        "confidence": confidence.astype(np.float32),
        "class_id": class_id,
        "class_name": names,
        "data": data,
        "metadata": meta,
        **extra,
    }
    if keep_mask:
        assert raw_mask is not None
        return InstanceMasks(**fields, mask=np.asarray(raw_mask, bool))
    return Detections(**fields)


def classifications_from_supervision(
    classifications: Any,
    *,
    class_names: Sequence[str] | Mapping[int, str],
    image_shape: tuple[int, int] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Classifications:
    """A ``supervision.Classifications`` as visionkit :class:`~visionkit.Classifications`.

    supervision keeps only class ids and confidences, so the names (a list indexed by class id, e.g. the
    backend's ``spec.categories``, or a dict) and the image size (``image_shape`` or
    ``metadata["image_shape"]``) come from the caller. Classes are ordered most confident first;
    a missing confidence becomes 1.0.

    Raises:
        BackendUnavailableError: supervision is not installed.
        InvalidOptionError: a class id without a name, or no image size.
    """
    sv = require_supervision()
    if not isinstance(classifications, sv.Classifications):
        raise InvalidOptionError(
            f"Expected a supervision.Classifications, but got {type(classifications).__name__}."
        )
    class_id = np.asarray(classifications.class_id).astype(np.int64)
    conf = classifications.confidence
    confidence = np.ones(len(class_id), np.float32) if conf is None else np.asarray(conf, np.float32)
    order = np.argsort(-confidence, kind="stable")
    return Classifications(
        class_id=class_id[order],
        confidence=confidence[order],
        class_name=_names_for(class_id[order], class_names, "classifications"),
        metadata=_metadata(None, metadata, image_shape, None, "classifications"),
    )


def from_supervision(obj: Any, **kwargs: Any) -> Detections | Classifications:
    """``sv.Detections`` → :func:`detections_from_supervision`; ``sv.Classifications`` →
    :func:`classifications_from_supervision` (keyword arguments go to the one called)."""
    sv = require_supervision()
    if isinstance(obj, sv.Classifications):
        return classifications_from_supervision(obj, **kwargs)
    return detections_from_supervision(obj, **kwargs)
