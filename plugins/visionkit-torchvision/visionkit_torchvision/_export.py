"""What the torchvision backends hand to a runtime plugin (ONNX Runtime): traceable one-image graphs.

Batches reach ``forward`` as ``(images, sizes)``: the images zero-padded to a common size (a plain
stack when they share one) and each image's own ``(h, w)``. The eager torch path crops every image
back before the network, so results never depend on the padding. The exported graphs take one image
at a time (static batch 1, dynamic height and width) and crop it the same way; ONNX Runtime then runs
a batch image by image and concatenates the outputs along the first axis, so every graph output has
the same size for every image of a batch:

* segmenters return the logits padded back to the padded input size;
* detectors return ``boxes, labels, scores[, masks], count``: the detections of the image, its masks
  pasted at the image's size and padded to the padded input size, and how many detections it has
  (``count`` is what splits a batch's concatenated detections back into images).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DetectionGraph", "SegmentationGraph", "crops", "pad_stack", "pad_to", "split_detections"]


def pad_stack(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C, H, W)`` zero-padded batch of ``(C, h, w)`` tensors, and their ``(B, 2)`` int64 sizes."""
    sizes = torch.tensor([tuple(t.shape[-2:]) for t in tensors], dtype=torch.int64)
    if len({tuple(t.shape) for t in tensors}) == 1:
        return torch.stack(list(tensors)), sizes
    h, w = (int(v) for v in sizes.max(0).values)
    images = tensors[0].new_zeros((len(tensors), tensors[0].shape[0], h, w))
    for image, t in zip(images, tensors, strict=True):
        image[:, : t.shape[-2], : t.shape[-1]] = t
    return images, sizes


def crops(images: torch.Tensor, sizes: torch.Tensor) -> list[torch.Tensor]:
    """The ``(C, h, w)`` views of a padded batch, one per image."""
    return [image[:, :h, :w] for image, (h, w) in zip(images, sizes.tolist(), strict=True)]


def pad_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` zero-padded at the bottom and right to the height and width of ``like`` (traceable)."""
    return F.pad(x, (0, like.shape[-1] - x.shape[-1], 0, like.shape[-2] - x.shape[-2]))


class SegmentationGraph(nn.Module):
    """One padded image and its size -> the segmentation logits, padded back to the input size."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        # 0-dim tensor slice bounds are traced as dynamic Slice ends, not baked in as constants
        image = images[:, :, : sizes[0, 0], : sizes[0, 1]]
        return pad_to(self.net(image), images)


def _exact_resize(self: Any, image: torch.Tensor, target: Any = None) -> tuple[torch.Tensor, Any]:
    """``GeneralizedRCNNTransform.resize`` with torchvision's eager output size, for tracing.

    Traced, torchvision computes the scale in float32 (``160 / 200 = 0.79999995``) and ONNX Runtime
    then makes a 200-pixel side 159 pixels instead of eager's 160, which moves every box. Eager
    computes ``floor(side * min(min_size / short, max_size / long))`` in Python floats (float64); this
    does the same in float64 graph ops and passes the output size, not the scale.
    """
    from torch.onnx import operators

    shape = operators.shape_as_tensor(image)[-2:].to(torch.float64)
    # a 1-D constant: the exporter would demote a 0-dim float64 constant (and the division) to float32
    bounds = torch.tensor([float(self.min_size[-1]), float(self.max_size)], dtype=torch.float64)
    scale = (bounds / torch.stack([shape.min(), shape.max()])).min()
    size = torch.floor(shape * scale).to(torch.int64)
    # traced tensor sizes keep the graph dynamic (typed as ints, which they become eagerly)
    out_size: Any = (size[0], size[1])
    resized = F.interpolate(image[None], size=out_size, mode="bilinear", align_corners=False)
    return resized[0], target


@contextlib.contextmanager
def _tracing_resize(transform: Any) -> Iterator[None]:
    """Use :func:`_exact_resize` on ``transform`` for the duration (fixed-size models keep theirs)."""
    if getattr(transform, "fixed_size", None) is not None:
        yield
        return
    transform.resize = types.MethodType(_exact_resize, transform)
    try:
        yield
    finally:
        del transform.resize


class DetectionGraph(nn.Module):
    """One padded image and its size -> ``boxes, labels, scores[, masks], count`` of a torchvision detector.

    The whole torchvision model is traced (resize, normalise, backbone, proposals, heads, NMS, box
    rescaling and mask pasting), as torchvision documents for ONNX export. Only use it for tracing:
    eager, the backend calls the model on the list of cropped images directly.
    """

    def __init__(self, model: nn.Module, masks: bool) -> None:
        super().__init__()
        self.model = model
        self.masks = masks

    def forward(self, images: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image = images[0, :, : sizes[0, 0], : sizes[0, 1]]
        with _tracing_resize(self.model.transform):
            out = self.model([image])[0]
        fields = [out["boxes"], out["labels"], out["scores"]]
        if self.masks:
            fields.append(pad_to(out["masks"], images))
        count = torch.ones_like(out["labels"]).sum().reshape(1)  # a traced count, not a constant
        return (*fields, count)


def split_detections(outputs: Any, masks: bool) -> list[dict[str, torch.Tensor]]:
    """Per-image ``{"boxes", "labels", "scores"[, "masks"]}``: torchvision's own list, or a runtime's tuple."""
    if isinstance(outputs, list) and all(isinstance(o, dict) for o in outputs):
        return outputs
    *fields, counts = outputs
    names = ("boxes", "labels", "scores", "masks")[: 4 if masks else 3]
    if len(fields) != len(names):
        raise ValueError(f"expected {len(names) + 1} detection outputs, but got {len(fields) + 1}")
    parts = [torch.split(torch.as_tensor(f), [int(c) for c in counts]) for f in fields]
    return [dict(zip(names, p, strict=True)) for p in zip(*parts, strict=True)]
