"""Typed options of the transformers backends (pydantic only, so ``load`` can check them before importing torch)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from typing_extensions import Self

from visionkit import BackendOptions
from visionkit.backend import limit_option
from visionkit.prompts import MAX_CLASSES

__all__ = [
    "LOAD_TIME_OPTIONS",
    "ClassificationOptions",
    "DetectionOptions",
    "GroundingDinoOptions",
    "HFOptions",
    "OmDetTurboOptions",
    "OwlOptions",
    "PanopticOptions",
    "SemanticOptions",
    "TextPromptedOptions",
]


#: Options that build or load the network: given to ``visionkit.load`` only, refused per call.
LOAD_TIME_OPTIONS = frozenset({"config", "id2label", "trust_pickle", "trust_remote_code"})


class HFOptions(BackendOptions):
    """Options shared by every transformers backend.

    The size options override the checkpoint's image processor for this backend (or one call). Which one
    applies depends on the processor: DETR/YOLOS-style processors keep the aspect ratio and use
    ``shortest_edge`` / ``longest_edge``; fixed-size processors (RT-DETR, SegFormer, ViT) use ``image_size``.
    """

    shortest_edge: int | None = Field(
        None, ge=1, description="Resize so the short side is this many pixels (aspect kept; DETR: 800)."
    )
    longest_edge: int | None = Field(
        None, ge=1, description="Cap on the long side after the shortest_edge resize (DETR: 1333)."
    )
    image_size: int | tuple[int, int] | None = Field(
        None, description="Resize to exactly (height, width) pixels, or a square of this size (RT-DETR: 640)."
    )
    id2label: dict[int, str] | None = Field(
        None, description="Rename classes: {class_id: name}, merged over the checkpoint's id2label."
    )
    config: dict[str, Any] | None = Field(
        None,
        description="Only with weights=None: overrides for the tiny random-init config (e.g. {'num_labels': 3}).",
    )
    max_imgsz: int | None = limit_option(
        2048,
        "Largest image size option accepted (shortest_edge, longest_edge, each side of image_size) and largest "
        "size a checkpoint's own processor may resize to. None: unlimited.",
        minimum=16,
    )
    trust_pickle: bool = Field(
        False,
        description="Load time. Read a pytorch_model.bin that needs full unpickling with weights_only=False: only "
        "for checkpoints you trust, since unpickling can run code. The default prefers model.safetensors, reads "
        ".bin files with torch.load(weights_only=True) and refuses the rest with UnsafeWeightsError.",
    )
    trust_remote_code: bool = Field(
        False,
        description="Load time. Run the Python code a local checkpoint ships (config.json 'auto_map' for a model "
        "type transformers does not know): only for checkpoints you trust. Refused with UnsafeWeightsError "
        "otherwise.",
    )

    @model_validator(mode="after")
    def _one_size_rule(self) -> Self:
        if self.image_size is not None and (self.shortest_edge is not None or self.longest_edge is not None):
            raise ValueError("give either image_size or shortest_edge/longest_edge, not both")
        if isinstance(self.image_size, int) and self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, but got {self.image_size}")
        if isinstance(self.image_size, tuple) and min(self.image_size) < 1:
            raise ValueError(f"image_size must be (height, width) >= 1, but got {self.image_size}")
        if (
            self.shortest_edge is not None
            and self.longest_edge is not None
            and self.longest_edge < self.shortest_edge
        ):
            raise ValueError(
                f"longest_edge ({self.longest_edge}) must be >= shortest_edge ({self.shortest_edge})"
            )
        return self


class DetectionOptions(HFOptions):
    """Options of ``detr`` and ``rtdetr``."""

    threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Keep detections scoring above this (transformers' default 0.5)."
    )
    clip_boxes: bool = Field(True, description="Clip boxes to the image (transformers does not clip).")
    max_detections: int | None = limit_option(
        300, "Most detections returned per image, highest scores kept (in query order). None: all."
    )


class PanopticOptions(HFOptions):
    """Options of ``detr-panoptic`` (arguments of transformers' ``post_process_instance_segmentation``)."""

    # DETR pads a batch to its largest image and the padding changes the backbone's features near the
    # edges, so a mask can differ with its batch-mates; one image per forward keeps each result its own.
    batch_size: int = Field(
        1, ge=1, description="Images per forward; above 1 masks may change slightly with their batch-mates."
    )

    threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Keep segments whose class score is above this."
    )
    mask_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Binarise mask probabilities at this value."
    )
    overlap_mask_area_threshold: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Drop a segment when less than this share of its mask survives overlap.",
    )
    max_detections: int | None = limit_option(
        300, "Most instance segments returned per image, highest scores kept. None: all."
    )


class SemanticOptions(HFOptions):
    """Options of ``segformer``."""


class ClassificationOptions(HFOptions):
    """Options of ``vit``."""

    top_k: int = Field(5, ge=1, description="Number of classes returned, most confident first.")


class TextPromptedOptions(HFOptions):
    """Options of the text-prompted (open-vocabulary) detectors: ``owlv2``, ``owlvit``, ``grounding-dino`` ...

    ``classes`` is what to find, by name; give it at load time or per call (``detect(img, classes=[...])``).
    """

    classes: list[str] | None = Field(
        None,
        description="What to find, by name, e.g. ['red car', 'person']: class_name is the name, class_id its "
        "index here. Required (at load time or per call).",
    )
    max_classes: int | None = limit_option(
        MAX_CLASSES, "Most class names accepted in one call (each is a text query). None: unlimited."
    )
    threshold: float = Field(0.1, ge=0.0, le=1.0, description="Keep detections scoring above this.")
    clip_boxes: bool = Field(
        True,
        description="Clip boxes to the image and drop those left with no area (transformers does not clip).",
    )
    max_detections: int | None = limit_option(
        300, "Most detections returned per image, highest scores kept. None: all."
    )


class OwlOptions(TextPromptedOptions):
    """Options of ``owlv2`` and ``owlvit`` (transformers' default threshold 0.1)."""


class GroundingDinoOptions(TextPromptedOptions):
    """Options of ``grounding-dino`` and ``mm-grounding-dino`` (transformers' default box threshold 0.25)."""

    # Like DETR, a batch is padded to its largest image and padding changes the features near the edges,
    # so boxes may differ with their batch-mates; one image per forward keeps each result its own.
    batch_size: int = Field(
        1, ge=1, description="Images per forward; above 1 boxes may change slightly with their batch-mates."
    )
    threshold: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Keep boxes whose best prompt-token score is above this (box threshold).",
    )


class OmDetTurboOptions(TextPromptedOptions):
    """Options of ``omdet-turbo`` (transformers' defaults: threshold 0.3, NMS IoU 0.5)."""

    threshold: float = Field(0.3, ge=0.0, le=1.0, description="Keep detections scoring above this.")
    nms_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="IoU above which the weaker of two boxes of one class is suppressed (NMS).",
    )
