"""visionkit plugin for Hugging Face ``transformers`` vision models.

Registers ``detr``, ``rtdetr``, ``detr-panoptic``, ``segformer``, ``sam2``, ``vit`` and the text-prompted
detectors ``owlv2``, ``owlvit``, ``grounding-dino``, ``mm-grounding-dino`` and ``omdet-turbo``. Only import strings are
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
    # bf16: autocast with a float32 tail, validated for these backends only (docs/transformers.md)
    bf16: dict[str, Any] = {**common, "precisions": ("fp32", "fp16", "bf16")}
    register(
        "detr",
        f"{_PKG}._backend:DetrBackend",
        tasks=("detect",),
        description="DETR object detector (transformers DetrForObjectDetection), COCO.",
        default_weights="facebook/detr-resnet-50",
        categories="coco91",
        options=f"{_PKG}._options:DetectionOptions",
        aliases=("detr-resnet-50",),
        **bf16,
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
        **bf16,
    )
    text: dict[str, Any] = {**common, "tasks": ("detect",), "prompt_types": ("text",)}
    register(
        "owlv2",
        f"{_PKG}._openvocab:Owlv2Backend",
        description="OWLv2 open-vocabulary detector (Owlv2ForObjectDetection): finds what classes=[...] names.",
        default_weights="google/owlv2-base-patch16-ensemble",
        options=f"{_PKG}._options:OwlOptions",
        **text,
    )
    register(
        "owlvit",
        f"{_PKG}._openvocab:OwlViTBackend",
        description="OWL-ViT open-vocabulary detector (OwlViTForObjectDetection): finds what classes=[...] names.",
        default_weights="google/owlvit-base-patch32",
        options=f"{_PKG}._options:OwlOptions",
        aliases=("owl-vit",),
        **text,
    )
    register(
        "grounding-dino",
        f"{_PKG}._openvocab:GroundingDinoBackend",
        description="Grounding DINO open-vocabulary detector (GroundingDinoForObjectDetection): classes=[...].",
        default_weights="IDEA-Research/grounding-dino-tiny",
        options=f"{_PKG}._options:GroundingDinoOptions",
        aliases=("groundingdino",),
        **text,
    )
    register(
        "mm-grounding-dino",
        f"{_PKG}._openvocab:MMGroundingDinoBackend",
        description="MM-Grounding-DINO open-vocabulary detector (MMGroundingDinoForObjectDetection): classes=[...].",
        default_weights="openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det",
        options=f"{_PKG}._options:GroundingDinoOptions",
        **text,
    )
    register(
        "omdet-turbo",
        f"{_PKG}._openvocab:OmDetTurboBackend",
        description="OmDet-Turbo real-time open-vocabulary detector (OmDetTurboForObjectDetection): classes=[...].",
        default_weights="omlab/omdet-turbo-swin-tiny-hf",
        options=f"{_PKG}._options:OmDetTurboOptions",
        **text,
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
        **bf16,
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
        **bf16,
    )
