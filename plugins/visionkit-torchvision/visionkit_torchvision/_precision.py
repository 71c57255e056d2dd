"""bf16 for the torchvision backends: autocast over the network, a float32 tail where numbers are sensitive.

bf16 keeps 8 significant bits (about 3 decimal digits). That is plenty for convolution features, and
far too little for what follows them: a box corner near pixel 800 moves in steps of 4 px, a class
logit in steps of 1/128 of its size. So under ``precision="bf16"`` autocast runs the network body in
bf16 and these parts run in float32 with autocast off (the same rule as the YOLO backend's fp32
decode):

* detectors: the backbone's feature maps are handed on in float32 (torchvision makes its anchors in
  the features' dtype), the RPN / one-stage head's outputs are cast to float32 before the box decode,
  and the R-CNN box, mask and keypoint predictors (small linear layers) run wholly in float32, so
  anchor + delta decoding, score softmax, NMS inputs and mask pasting are float32;
* classifiers: the last layer (the logits) runs in float32, softmax follows in float32;
* semantic segmenters: the final 1x1 convolutions that produce the class logits run in float32, so
  the bilinear resize and argmax see float32 logits.

Convolutional networks also go channels-last under bf16: oneDNN's bf16 convolutions are NHWC kernels
(measured on this repository's 2-core CPU: resnet50 bf16 7.7 s NCHW vs 1.2 s NHWC per 224 image).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from visionkit.autocast import Float32, Float32Outputs

__all__ = ["PRECISIONS", "bf16_tail"]

#: Precisions the torchvision backends run natively.
PRECISIONS = ("fp32", "bf16")


def _replace(model: nn.Module, path: str, wrap: Any) -> None:
    parent, _, name = path.rpartition(".")
    holder = model.get_submodule(parent) if parent else model
    setattr(holder, name, wrap(getattr(holder, name)))


def bf16_tail(model: nn.Module, family: str, device: torch.device, num_classes: int) -> list[str]:
    """Wrap the numerically sensitive tail of ``model`` (a torchvision model of ``family``) in float32.

    Returns the wrapped submodules' paths and how (``"float32"``: runs in float32; ``"outputs"``: its
    outputs are cast to float32), so a test or report can say what stayed float32.
    """
    whole = lambda m: Float32(m, device.type)  # noqa: E731
    plan: list[tuple[str, Any, str]] = []
    names = dict(model.named_modules())
    if family in ("detection", "instance"):
        plan.append(("backbone", Float32Outputs, "outputs"))
        if "rpn" in names:  # two-stage: proposals decode from the RPN head, boxes from the predictors
            plan.append(("rpn.head", Float32Outputs, "outputs"))
            heads = model.get_submodule("roi_heads")
            for predictor in ("box_predictor", "mask_predictor", "keypoint_predictor"):
                if getattr(heads, predictor, None) is not None:
                    plan.append((f"roi_heads.{predictor}", whole, "float32"))
        elif "head" in names:  # RetinaNet, FCOS, SSD/SSDlite: one head, decoded against the anchors
            plan.append(("head", Float32Outputs, "outputs"))
    elif family == "semantic":
        plan += [
            (path, whole, "float32")
            for path, m in names.items()
            if path.split(".")[0] in ("classifier", "aux_classifier")
            and isinstance(m, nn.Conv2d)
            and m.out_channels == num_classes
        ]
    else:  # classification: the layer that makes the logits (the last Linear / Conv2d registered)
        last = [path for path, m in names.items() if isinstance(m, (nn.Linear, nn.Conv2d))]
        plan += [(last[-1], whole, "float32")] if last else []
    for path, wrap, _ in plan:
        _replace(model, path, wrap)
    return [f"{path} ({how})" for path, _, how in plan]
