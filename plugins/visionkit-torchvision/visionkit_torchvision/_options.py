"""Typed options of the torchvision backends (pydantic only, so ``load`` can check them before torch loads).

Options marked *load time* shape the network and may only be given to ``visionkit.load``; every
other option may also be overridden per call, e.g. ``det.detect(img, score_threshold=0.3)``.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from visionkit import BackendOptions
from visionkit.backend import limit_option

__all__ = [
    "LOAD_TIME_OPTIONS",
    "ClassifierOptions",
    "DetectionOptions",
    "GenericClassifierOptions",
    "GenericDetectionOptions",
    "GenericSemanticOptions",
    "InstanceOptions",
    "SemanticOptions",
]

#: Options that change the network itself; per-call overrides of these are refused.
LOAD_TIME_OPTIONS = frozenset({"arch", "categories", "trust_pickle"})

#: Default of ``max_imgsz``: no side of the network input above this many pixels.
MAX_IMGSZ = 2048


class _TorchvisionOptions(BackendOptions):
    categories: tuple[str, ...] | None = Field(
        None,
        description=(
            "Load time. Class names, index = model output index. With random init or a custom .pth checkpoint "
            "the network gets len(categories) outputs (detection: include '__background__' at index 0); "
            "with torchvision weights the names replace meta['categories'] one for one."
        ),
    )

    trust_pickle: bool = Field(
        False,
        description=(
            "Load time. Read a .pth that needs full unpickling (a whole pickled model, a checkpoint holding "
            "Python objects) with torch.load(weights_only=False): only for files you trust, since unpickling "
            "can run code. The default reads state dicts with weights_only=True and refuses anything else "
            "with UnsafeWeightsError (CLI: --trust-pickle)."
        ),
    )
    max_imgsz: int | None = limit_option(
        MAX_IMGSZ,
        "Largest side of the network input, in pixels: size options above it are refused; an image whose "
        "aspect ratio would resize past it is scaled down to fit. None: unlimited.",
        minimum=16,
    )

    @field_validator("categories")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and len(v) < 2:
            raise ValueError(f"categories must list at least 2 class names, but got {len(v)}")
        return v


class DetectionOptions(_TorchvisionOptions):
    """Options of the detectors (``fasterrcnn``, ``retinanet``, ``ssdlite``, ...)."""

    score_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Keep detections scoring above this (torchvision's box_score_thresh; its 0.05 default suits mAP).",
    )
    nms_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="IoU above which per-class NMS drops a box."
    )
    detections_per_image: int = Field(100, ge=1, description="Keep at most this many detections per image.")
    max_detections: int | None = limit_option(
        300, "Largest detections_per_image accepted (masks are H x W each). None: unlimited."
    )
    proposals: int | None = Field(
        None,
        ge=1,
        description=(
            "Two-stage models: region proposals kept per image after the RPN's NMS (torchvision's "
            "rpn_post_nms_top_n_test; None: 1000). Fewer is faster and may miss objects."
        ),
    )
    min_size: int | None = Field(
        None,
        ge=16,
        description="Resize so the shorter side is this many pixels (None: the model's own, 800).",
    )
    max_size: int | None = Field(
        None, ge=16, description="Cap the longer side at this many pixels (None: the model's own, 1333)."
    )


class InstanceOptions(DetectionOptions):
    """Options of the instance segmenters (``maskrcnn``)."""

    mask_threshold: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="A pixel is in the mask when torchvision's soft mask probability exceeds this.",
    )


class SemanticOptions(_TorchvisionOptions):
    """Options of the semantic segmenters (``deeplabv3``, ``lraspp``)."""

    resize_size: int | None = Field(
        None,
        ge=16,
        description="Resize the shorter side to this before the network (None: the weights' 520).",
    )
    return_scores: bool = Field(
        False, description="Also return per-class probabilities (C, H, W) as `scores`."
    )


class ClassifierOptions(_TorchvisionOptions):
    """Options of the classifiers (``resnet50``, ``mobilenet_v3_large``)."""

    top_k: int = Field(5, ge=1, description="Number of classes returned per image, most probable first.")
    resize_size: int | None = Field(
        None, ge=16, description="Resize the shorter side to this before cropping (None: the weights' own)."
    )
    crop_size: int | None = Field(
        None, ge=16, description="Centre crop of this size fed to the network (None: the weights' own, 224)."
    )


_ARCH = Field(None, description="Load time. torchvision model name for torchvision.models.get_model.")


class GenericDetectionOptions(DetectionOptions):
    """Options of ``tv-detector``: a detection model chosen by ``arch``."""

    arch: str | None = _ARCH


class GenericSemanticOptions(SemanticOptions):
    """Options of ``tv-segmenter``: a segmentation model chosen by ``arch``."""

    arch: str | None = _ARCH


class GenericClassifierOptions(ClassifierOptions):
    """Options of ``tv-classifier``: a classification model chosen by ``arch``."""

    arch: str | None = _ARCH
