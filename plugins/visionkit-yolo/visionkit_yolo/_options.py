"""Typed options of the YOLO backends (importable without torch or ultralytics)."""

from __future__ import annotations

from pydantic import Field, field_validator

from visionkit import BackendOptions

__all__ = ["ClassifyOptions", "DetectOptions", "SegmentOptions"]


class DetectOptions(BackendOptions):
    """Options of the ``yolo`` detector (also accepted per call: ``det.detect(img, conf=0.5)``)."""

    conf: float = Field(0.25, ge=0.0, le=1.0, description="Drop detections scoring below this confidence.")
    iou: float = Field(0.7, ge=0.0, le=1.0, description="IoU threshold of non-maximum suppression.")
    max_det: int = Field(300, ge=1, description="Keep at most this many detections per image.")
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


class ClassifyOptions(BackendOptions):
    """Options of the ``yolo-cls`` classifier."""

    top_k: int = Field(5, ge=1, description="Number of classes returned, most probable first.")
    imgsz: int | None = Field(
        None,
        ge=32,
        description="Square crop size; None uses the checkpoint's training size (224 for a yaml).",
    )
