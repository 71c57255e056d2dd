"""visionkit plugin for Hugging Face ``transformers`` vision models.

Registers ``detr``, ``rtdetr``, ``detr-panoptic``, ``segformer``, ``sam2`` and ``vit``. Only import strings are
registered here: ``torch`` and ``transformers`` are imported when a user calls ``visionkit.load``.
"""

from __future__ import annotations

from typing import Any

from visionkit import hookimpl

__all__ = ["register_backends"]

_PKG = "visionkit_transformers"
_REQUIRES = ("transformers", "torch")
_INSTALL = "pip install visionkit-transformers"


@hookimpl
def register_backends(register: Any) -> None:
    """Declare the transformers-based backends (cheap: nothing heavy is imported)."""
    common: dict[str, Any] = {"requires": _REQUIRES, "install": _INSTALL, "precisions": ("fp32", "fp16")}
    register(
        "detr",
        f"{_PKG}._backend:DetrBackend",
        tasks=("detect",),
        description="DETR object detector (transformers DetrForObjectDetection), COCO.",
        default_weights="facebook/detr-resnet-50",
        categories="coco91",
        options=f"{_PKG}._options:DetectionOptions",
        aliases=("detr-resnet-50",),
        **common,
    )
    register(
        "rtdetr",
        f"{_PKG}._backend:AutoDetectionBackend",
        tasks=("detect",),
        description="Any AutoModelForObjectDetection checkpoint: RT-DETR, Conditional/Deformable DETR, YOLOS ...",
        default_weights="PekingU/rtdetr_r50vd",
        categories="coco80",
        options=f"{_PKG}._options:DetectionOptions",
        aliases=("hf-detector",),
        **common,
    )
    register(
        "detr-panoptic",
        f"{_PKG}._backend:DetrPanopticBackend",
        tasks=("segment_semantic", "segment_instances"),
        description="DETR panoptic head (DetrForSegmentation): semantic label maps and instance masks.",
        default_weights="facebook/detr-resnet-50-panoptic",
        options=f"{_PKG}._options:PanopticOptions",
        **common,
    )
    register(
        "segformer",
        f"{_PKG}._backend:SemanticBackend",
        tasks=("segment_semantic",),
        description="Semantic segmentation with any AutoModelForSemanticSegmentation checkpoint (SegFormer ...).",
        default_weights="nvidia/segformer-b0-finetuned-ade-512-512",
        options=f"{_PKG}._options:SemanticOptions",
        aliases=("hf-semantic",),
        **common,
    )
    register(
        "sam2",
        f"{_PKG}._sam2:load_sam2",
        tasks=("segment_prompt",),
        description="SAM 2 / 2.1 (transformers Sam2Model + Sam2VideoModel): prompts on images, objects followed through videos.",
        default_weights="facebook/sam2.1-hiera-tiny",
        options=f"{_PKG}._sam2:Sam2Options",
        aliases=("sam2.1",),
        prompt_types=("point", "box", "mask"),
        batch=False,
        requires=_REQUIRES,
        install=_INSTALL,
    )
    register(
        "vit",
        f"{_PKG}._backend:ClassificationBackend",
        tasks=("classify",),
        description="Image classification with any AutoModelForImageClassification checkpoint (ViT ...).",
        default_weights="google/vit-base-patch16-224",
        options=f"{_PKG}._options:ClassificationOptions",
        aliases=("hf-classifier",),
        **common,
    )
