"""visionkit-sam: Segment Anything (SAM, MobileSAM) backends and detector→SAM pipelines for visionkit.

Registers ``sam``, ``mobile-sam`` and ``sam-auto`` lazily (import strings; torch and segment_anything
are imported by ``visionkit.load``). ``pipeline`` is the core's :func:`visionkit.pipeline`, re-exported.
"""

from __future__ import annotations

from typing import Any

from visionkit import Task, hookimpl
from visionkit.pipeline import DetectThenSegment, pipeline

__all__ = ["DetectThenSegment", "pipeline", "register_backends"]

_INSTALL = "pip install visionkit-sam segment-anything"
_OPTIONS = "visionkit_sam._options"


@hookimpl
def register_backends(register: Any) -> None:
    """Declare the SAM backends (nothing heavy is imported here)."""
    register(
        "sam",
        "visionkit_sam._backend:load_sam",
        tasks=[Task.SEGMENT_PROMPT],
        aliases=["segment-anything"],
        requires=["torch", "segment_anything"],
        install=_INSTALL,
        description="Segment Anything (vit_b/l/h): points, boxes, mask refinement; cached image embeddings.",
        default_weights="sam_vit_b_01ec64.pth",
        prompt_types=["point", "box", "mask"],
        precisions=["fp32", "bf16"],
        batch=False,
        options=f"{_OPTIONS}:SamOptions",
    )
    register(
        "mobile-sam",
        "visionkit_sam._backend:load_mobile_sam",
        tasks=[Task.SEGMENT_PROMPT],
        aliases=["mobilesam"],
        requires=["torch", "segment_anything", "ultralytics"],
        install=f"{_INSTALL} ultralytics",
        description="MobileSAM: TinyViT encoder with SAM's prompt encoder and mask decoder; fast on CPU.",
        default_weights="mobile_sam.pt",
        prompt_types=["point", "box", "mask"],
        precisions=["fp32", "bf16"],
        batch=False,
        options=f"{_OPTIONS}:MobileSamOptions",
    )
    register(
        "sam-auto",
        "visionkit_sam._backend:load_sam_auto",
        tasks=[Task.SEGMENT_INSTANCES],
        aliases=["sam-everything"],
        requires=["torch", "segment_anything"],
        install=_INSTALL,
        description="Segment everything: SAM over a grid of point prompts (SamAutomaticMaskGenerator).",
        default_weights="sam_vit_b_01ec64.pth",
        categories="class-agnostic",
        batch=False,
        options=f"{_OPTIONS}:SamAutoOptions",
    )
