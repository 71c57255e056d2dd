"""COCO label spaces: the 91-id layout DETR checkpoints use and the contiguous 80-id one.

COCO annotations number their 80 categories 1..90 with gaps. DETR checkpoints keep that numbering
(``id2label`` has 91 entries, ``"N/A"`` in the gaps), so their ``class_id`` *is* the COCO category id.
Most other detectors (RT-DETR, YOLO) number the same 80 classes 0..79. Each result's
``metadata.label_space`` says which: ``"coco91"``, ``"coco80"`` or ``"custom"``; the class *names*
equal COCO category names in both COCO spaces, so mapping by name is always correct.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["COCO91", "COCO_NAMES", "coco80_id2label", "coco91_id2label", "label_space"]

#: COCO category id -> name, as in the official ``instances_*.json`` categories.
COCO91: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}  # fmt: skip

#: The 80 COCO names in category-id order (= contiguous ids 0..79).
COCO_NAMES: tuple[str, ...] = tuple(COCO91[k] for k in sorted(COCO91))

_GAP = "N/A"


def coco91_id2label() -> dict[int, str]:
    """DETR's COCO layout: 91 ids, ``"N/A"`` at 0 and in the gaps."""
    return {i: COCO91.get(i, _GAP) for i in range(91)}


def coco80_id2label() -> dict[int, str]:
    """The contiguous layout: ids 0..79."""
    return dict(enumerate(COCO_NAMES))


def _norm(name: str) -> str:
    return name.strip().lower()


def label_space(id2label: Mapping[int, str]) -> str:
    """``"coco91"``, ``"coco80"`` or ``"custom"`` for a model's ``id2label``.

    ``coco91`` means every COCO category id maps to its COCO name and every other id (at most 91 in
    all, 0..91 allowed) is a gap; ``coco80`` means ids 0..79 are the COCO names in order.
    """
    ids = {int(k): _norm(v) for k, v in id2label.items()}
    if set(ids) == set(range(80)) and all(ids[i] == COCO_NAMES[i] for i in range(80)):
        return "coco80"
    if set(COCO91) <= set(ids) and all(ids[k] == v for k, v in COCO91.items()):
        others = [v for k, v in ids.items() if k not in COCO91]
        if max(ids) <= 91 and all(v in (_GAP.lower(), "") for v in others):
            return "coco91"
    return "custom"
