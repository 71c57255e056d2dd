"""Options of the SAM backends: pydantic only, so ``visionkit.load`` can check them before importing torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from visionkit import BackendOptions
from visionkit.backend import limit_option

__all__ = ["MobileSamOptions", "SamAutoOptions", "SamOptions"]

#: Options that build or load the network: given to ``visionkit.load`` only, refused per call.
LOAD_TIME_OPTIONS = frozenset({"model_type", "image_size", "max_image_size", "trust_pickle", "cache_size"})

ModelType = Literal["vit_h", "vit_l", "vit_b", "vit_t", "tiny", "tiny_vit_t"]


class _CommonOptions(BackendOptions):
    image_size: int | None = Field(
        None,
        ge=64,
        description="Encoder input side. Read from ViT checkpoints; 1024 for MobileSAM checkpoints; 256 for "
        "the tiny random models.",
    )
    mask_threshold: float = Field(0.0, description="Logit above which a pixel is in the mask (SAM uses 0).")
    max_image_size: int | None = limit_option(
        1024,
        "Largest encoder input side accepted (image_size, or the size a checkpoint was trained at); the "
        "encoder's work grows with its square. Load time. None: unlimited.",
        minimum=64,
    )
    trust_pickle: bool = Field(
        False,
        description="Load time. Read a checkpoint that needs full unpickling (e.g. a whole pickled model) with "
        "torch.load(weights_only=False): only for files you trust, since unpickling can run code. The default "
        "reads plain state dicts with weights_only=True and refuses anything else with UnsafeWeightsError.",
    )


class SamOptions(_CommonOptions):
    """Options of the ``sam`` backend."""

    model_type: ModelType | None = Field(
        None,
        description="Architecture; read from the checkpoint when unset (given, it must match). With "
        "weights=None: the random model to build (default 'tiny').",
    )
    multimask_output: bool | None = Field(
        None, description="3 ranked masks per prompt; None: only for a single points-only prompt."
    )
    cache_size: int = Field(8, ge=0, description="Image embeddings kept in the LRU cache (0 disables).")
    max_points: int | None = limit_option(
        64,
        "Most points (clicks) in one prompt: every point is a token the decoder attends over the whole "
        "image with (20 000 points took ~12.8 GB). None: unlimited.",
    )
    max_prompts: int | None = limit_option(
        64,
        "Most prompts in one call: boxes, or (b, n, 2) point groups. Each prompt returns 1 or 3 masks at "
        "the image's resolution. None: unlimited.",
    )


class MobileSamOptions(SamOptions):
    """Options of the ``mobile-sam`` backend (same as ``sam``; random default ``tiny_vit_t``)."""


class SamAutoOptions(_CommonOptions):
    """Options of ``sam-auto`` (those of ``segment_anything.SamAutomaticMaskGenerator``)."""

    model_type: ModelType | None = None
    points_per_side: int = Field(32, ge=1, description="Grid of points_per_side**2 point prompts.")
    points_per_batch: int = Field(64, ge=1, description="Point prompts decoded together.")
    pred_iou_thresh: float = Field(0.88, ge=0.0, description="Drop masks whose predicted IoU is lower.")
    stability_score_thresh: float = Field(0.95, ge=0.0, le=1.0, description="Drop less stable masks.")
    stability_score_offset: float = Field(1.0, description="Logit offset used by the stability score.")
    box_nms_thresh: float = Field(0.7, ge=0.0, le=1.0, description="Box IoU for non-maximum suppression.")
    crop_n_layers: int = Field(0, ge=0, description="Extra layers of image crops to segment.")
    min_mask_region_area: int = Field(0, ge=0, description="Remove holes/islands smaller than this (pixels).")
    max_points_per_side: int | None = limit_option(
        64, "Largest points_per_side accepted (the decoder runs points_per_side**2 prompts per crop)."
    )
    max_points_per_batch: int | None = limit_option(
        256, "Largest points_per_batch accepted (decoder memory grows with it)."
    )
    max_crop_n_layers: int | None = limit_option(
        1, "Largest crop_n_layers accepted (layer i adds 4**i crops, each a full encoder run).", minimum=0
    )
    max_detections: int | None = limit_option(
        256, "Most masks returned per image, highest predicted IoU first. None: all."
    )
