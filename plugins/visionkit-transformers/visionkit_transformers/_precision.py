"""bf16 for the transformers backends: autocast over the network, a float32 tail where numbers are sensitive.

bf16 keeps 8 significant bits (about 3 decimal digits): enough for attention and convolution
features, too few for what the heads produce. DETR-family boxes are ``sigmoid`` outputs in [0, 1]
that become pixels: in bf16 a coordinate near 1.0 moves in steps of 1/256 of the image (5 px on a
1333-pixel side), and RT-DETR / D-FINE refine reference points layer by layer in logit space, adding
each layer's deltas to the last layer's points. So under ``precision="bf16"`` autocast runs the network
body in bf16 and the heads below run in float32 with autocast off (the same rule as the YOLO
backend's fp32 decode); post-processing then sees float32 logits and boxes.

Only architectures listed in :data:`TAILS` offer bf16; anything else is refused at load rather than
run with its box decode in bf16.
"""

from __future__ import annotations

import torch
from torch import nn

from visionkit.autocast import Float32

__all__ = ["TAILS", "bf16_tail"]

#: Per ``config.model_type``: the submodules (dotted paths) that run in float32 under bf16.
TAILS: dict[str, tuple[str, ...]] = {
    # class logits and the box MLP (sigmoid -> normalised cxcywh)
    "detr": ("class_labels_classifier", "bbox_predictor"),
    # two-stage query selection heads, and the per-layer heads whose deltas refine the reference points
    "rt_detr": (
        "model.enc_score_head",
        "model.enc_bbox_head",
        "model.decoder.class_embed",
        "model.decoder.bbox_embed",
    ),
    "rt_detr_v2": (
        "model.enc_score_head",
        "model.enc_bbox_head",
        "model.decoder.class_embed",
        "model.decoder.bbox_embed",
    ),
    # D-FINE also decodes box distributions (softmax over bins, integral) and rescores with them (LQE)
    "d_fine": (
        "model.enc_score_head",
        "model.enc_bbox_head",
        "model.decoder.class_embed",
        "model.decoder.bbox_embed",
        "model.decoder.pre_bbox_head",
        "model.decoder.integral",
        "model.decoder.lqe_layers",
    ),
    # per-pixel class logits (bilinear resize and argmax follow in post-processing)
    "segformer": ("decode_head.classifier",),
    # image classifiers: the logits layer
    "vit": ("classifier",),
}


def bf16_tail(model: nn.Module, device: torch.device) -> list[str] | None:
    """Wrap ``model``'s :data:`TAILS` in :class:`Float32`; the wrapped paths, or ``None`` when the
    architecture has no known tail (bf16 is then not offered). Module lists are wrapped item by item,
    so the decoder's ``bbox_embed[i]`` indexing keeps working. Image classifiers and semantic
    segmenters of other architectures fall back to their ``classifier`` / ``decode_head.classifier``."""
    paths = TAILS.get(str(getattr(model.config, "model_type", "")))
    kind = type(model).__name__
    if paths is None and kind.endswith("ForImageClassification") and hasattr(model, "classifier"):
        paths = ("classifier",)  # ConvNeXt, BEiT, Swin, ResNet ...: the logits layer is `classifier`
    if paths is None and kind.endswith("ForSemanticSegmentation") and hasattr(model, "decode_head"):
        paths = ("decode_head.classifier",)  # UperNet, BEiT ...
    if paths is None:
        return None
    wrapped = []
    for path in paths:
        parent, _, name = path.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        module = getattr(holder, name, None)
        if module is None:
            continue  # e.g. a decoder built without per-layer heads
        if isinstance(module, nn.ModuleList):
            for i, item in enumerate(module):
                module[i] = Float32(item, device.type)
        else:
            setattr(holder, name, Float32(module, device.type))
        wrapped.append(path)
    return wrapped or None
