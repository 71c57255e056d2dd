"""Typed options of the YOLO backends (importable without torch or ultralytics)."""

from __future__ import annotations

from pydantic import Field, field_validator

from visionkit import BackendOptions, limit_option
from visionkit.prompts import MAX_CLASSES

__all__ = [
    "MAX_DET_CEILING",
    "ClassifyOptions",
    "DetectOptions",
    "SegmentOptions",
    "WorldOptions",
    "YoloeOptions",
]

#: No call may ask for more detections per image than this (a yolo-seg mask is H x W bytes each).
MAX_DET_CEILING = 1000


class _YoloOptions(BackendOptions):
    """Options every YOLO backend shares: safe loading and the input-size limit."""

    trust_pickle: bool = Field(
        False,
        description="Load a .pt checkpoint as a full pickle and build a model yaml with eval(): only for files "
        "you trust. The default loads .pt files with torch.load(weights_only=True) against ultralytics' "
        "allow-list of model classes and builds yamls without eval, refusing anything else with "
        "UnsafeWeightsError. Load time only (CLI: --trust-pickle).",
    )
    max_imgsz: int | None = limit_option(
        2048,
        "Largest imgsz accepted, at load or per call (a limit: compute and memory grow with imgsz squared). "
        "None: unlimited.",
        minimum=32,
    )


class DetectOptions(_YoloOptions):
    """Options of the ``yolo`` detector (also accepted per call: ``det.detect(img, conf=0.5)``)."""

    conf: float = Field(0.25, ge=0.0, le=1.0, description="Drop detections scoring below this confidence.")
    iou: float = Field(0.7, ge=0.0, le=1.0, description="IoU threshold of non-maximum suppression.")
    max_det: int = Field(
        300,
        ge=1,
        description=f"Keep at most this many detections per image (at most {MAX_DET_CEILING}).",
    )
    classes: tuple[int, ...] | None = Field(
        None, description="Keep only these class ids (an int or a list of ints); None keeps all."
    )
    agnostic_nms: bool = Field(
        False, description="Suppress overlapping boxes across classes, not only within one."
    )
    imgsz: int | None = Field(
        None,
        ge=32,
        description="Inference size in pixels (longest side, a multiple of the model stride); "
        "None uses the size the checkpoint was trained at (640 for a model yaml).",
    )
    rect: bool = Field(
        True,
        description="Pad each image only up to a multiple of the stride (fastest, as ultralytics does for one "
        "image); False letterboxes to a square imgsz x imgsz (what a fixed-shape exported graph needs).",
    )
    pad_batch: bool | None = Field(
        None,
        description="True: letterbox every image of a batch to one shape and run one forward (ultralytics' "
        "batching; the fast path on GPUs). False: one forward per distinct letterbox shape, so every image "
        "gives exactly what it gives alone. None: True on cuda/mps, False on CPU (exact; on a busy CPU "
        "True measured faster, see docs/yolo.md).",
    )

    @field_validator("classes", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        if isinstance(v, int) and not isinstance(v, bool):
            return (v,)
        return v

    @field_validator("classes")
    @classmethod
    def _non_negative(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and any(c < 0 for c in v):
            raise ValueError(f"class ids must be >= 0, but got {list(v)}")
        return v


class SegmentOptions(DetectOptions):
    """Options of the ``yolo-seg`` instance segmenter."""

    retina_masks: bool = Field(
        True,
        description="Upsample the prototype masks straight to the image resolution (sharper edges, "
        "ultralytics' retina_masks=True); False builds masks at the inference size, then resizes them "
        "to the image (faster on large images). Masks are returned at the image resolution either way.",
    )


class ClassifyOptions(_YoloOptions):
    """Options of the ``yolo-cls`` classifier."""

    top_k: int = Field(5, ge=1, description="Number of classes returned, most probable first.")
    imgsz: int | None = Field(
        None,
        ge=32,
        description="Square crop size; None uses the checkpoint's training size (224 for a yaml).",
    )


class WorldOptions(DetectOptions):
    """Options of the text-prompted ``yolo-world`` detector: ``classes`` are names, not ids.

    ``det.detect(img, classes=["red car", "person"])``: each result's ``class_name`` is the asked name and
    its ``class_id`` the name's index in ``classes``.
    """

    classes: list[str] | None = Field(  # type: ignore[assignment]
        None,
        description="Names of the things to find, e.g. ['red car', 'person'] (at load or per call). None: the "
        "vocabulary the checkpoint was saved with, if it has one.",
    )
    max_classes: int | None = limit_option(
        MAX_CLASSES,
        "Most class names accepted in one call (a limit: each name is a text embedding). None: unlimited.",
    )

    # DetectOptions' validators read ``classes`` as ids; names are checked by visionkit.prompts.parse_classes
    # when a call runs, so a bad list raises InvalidPromptError rather than an option error.
    @field_validator("classes", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return v

    @field_validator("classes")
    @classmethod
    def _non_negative(cls, v: list[str] | None) -> list[str] | None:  # type: ignore[override]
        return v


class YoloeOptions(WorldOptions, SegmentOptions):
    """Options of the text-prompted ``yoloe`` detector / instance segmenter (``classes`` are names)."""
