"""torchvision backends: detection, instance and semantic segmentation, classification.

Each backend keeps visionkit's three stages apart:

* ``preprocess``: RGB uint8 arrays -> the weights' own ``transforms()`` (detection: scale to [0, 1];
  segmentation: resize + normalise; classification: resize + centre crop + normalise).
* ``forward``: the torchvision network, nothing else (detection models take a list of differently
  sized images and resize/normalise inside; the others take one ``(B, 3, h, w)`` tensor).
* ``postprocess``: torchvision's outputs -> visionkit results in the input image's pixels.

Detectors and segmenters batch images of different sizes as ``(images, sizes)``: zero-padded to a
common size, cropped back before the network (see ``_export``), so a runtime plugin can run the
exported one-image graph image by image.

Bounded work: ``max_imgsz`` caps every side of the network input (size options above it are refused
with :class:`visionkit.LimitExceededError`; an image so elongated that its resize would pass it is
scaled to fit), ``max_detections`` caps ``detections_per_image``. Images too thin for a detector's
resize (a 3000x2 image would resize to 0 pixels wide) are padded with their edge pixels to the
thinnest workable size; results stay in the original pixels.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn

from visionkit import (
    Backend,
    BackendOptions,
    Batch,
    Classifications,
    Classifies,
    Detections,
    Detects,
    InstanceMasks,
    InvalidOptionError,
    SegmentsInstances,
    SegmentsSemantic,
    SemanticMask,
    Task,
)
from visionkit.autocast import autocast
from visionkit.backend import check_limit
from visionkit.export import ExportSpec, tensors_fingerprint
from visionkit_torchvision._catalog import BY_NAME, COCO_CATEGORIES, VOC_CATEGORIES
from visionkit_torchvision._export import (
    DetectionGraph,
    SegmentationGraph,
    crops,
    pad_stack,
    pad_to,
    split_detections,
)
from visionkit_torchvision._options import (
    LOAD_TIME_OPTIONS,
    ClassifierOptions,
    DetectionOptions,
    GenericClassifierOptions,
    GenericDetectionOptions,
    GenericSemanticOptions,
    InstanceOptions,
    SemanticOptions,
)
from visionkit_torchvision._precision import PRECISIONS, bf16_tail
from visionkit_torchvision._weights import build_model, check_arch, resolve_device

__all__ = [
    "TorchvisionClassifier",
    "TorchvisionDetector",
    "TorchvisionInstanceSegmenter",
    "TorchvisionSemanticSegmenter",
]


def _label_space(categories: tuple[str, ...]) -> str:
    if categories == COCO_CATEGORIES:
        return "coco91"  # class_id is the official COCO category id (torchvision's 91-slot layout)
    if categories == VOC_CATEGORIES:
        return "voc"
    return "imagenet-1k" if len(categories) == 1000 else "custom"


def _chw(image: np.ndarray) -> torch.Tensor:
    """``(3, H, W)`` uint8 tensor sharing memory with ``image`` when it is writable."""
    return torch.from_numpy(image if image.flags.writeable else image.copy()).permute(2, 0, 1)


def _pad_edges(image: np.ndarray, pad: tuple[int, int]) -> np.ndarray:
    """``image`` with ``pad`` = (rows, columns) of its edge pixels added at the bottom and right."""
    if not any(pad):
        return image
    return np.pad(image, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")


def _fit_resize(transform: Any, image: np.ndarray, max_imgsz: int | None) -> Any:
    """``transform`` (a torchvision preset that resizes the short side), or a copy that resizes ``image``
    to an explicit size when the preset would make its long side exceed ``max_imgsz``.

    The copy scales the long side to ``max_imgsz`` and the short side in proportion (at least 1 pixel),
    as torchvision's ``resize(max_size=...)`` does. Every image the preset keeps within the limit gets
    exactly the preset's own resize.
    """
    sizes = getattr(transform, "resize_size", None)
    if max_imgsz is None or not isinstance(sizes, list) or len(sizes) != 1:
        return transform
    h, w = image.shape[:2]
    short, long = min(h, w), max(h, w)
    new_long = int(sizes[0] * long / short)  # torchvision's own arithmetic
    if new_long <= max_imgsz:
        return transform
    new_short = max(1, int(max_imgsz * sizes[0] / new_long))
    fitted = copy.copy(transform)
    fitted.resize_size = [new_short, max_imgsz] if h <= w else [max_imgsz, new_short]
    return fitted


def _resized_uint8(transform: Any, image: np.ndarray) -> torch.Tensor:
    """The uint8 part of a torchvision preset (resize, centre crop) on ``image``: ``(3, h, w)`` uint8."""
    x = _chw(image)
    sizes = getattr(transform, "resize_size", None)
    if isinstance(sizes, list):
        x = TF.resize(x, sizes, interpolation=transform.interpolation, antialias=transform.antialias)
    crop = getattr(transform, "crop_size", None)
    return TF.center_crop(x, crop) if crop is not None else x


def _to_float(images: torch.Tensor, transform: Any) -> torch.Tensor:
    """The float part of a torchvision preset on a uint8 batch: scale to [0, 1], then normalise when the
    preset does (``convert_image_dtype`` divides by 255, as here)."""
    x = images.to(torch.float32) / 255
    mean = getattr(transform, "mean", None)
    return TF.normalize(x, mean=mean, std=transform.std) if mean is not None else x


def _example_image(h: int, w: int, device: torch.device) -> torch.Tensor:
    """A seeded noise image in [0, 1] to trace with (zeros may trace a model that detects nothing)."""
    gen = torch.Generator().manual_seed(0)
    return torch.rand((1, 3, h, w), generator=gen).to(device)


class _TorchvisionBackend(Backend[Any]):
    """Shared loading, options and device handling of every torchvision backend."""

    family: ClassVar[str] = ""
    native_runtime: ClassVar[str] = "torch"

    def __init__(
        self,
        *,
        backend: str,
        weights: Any = None,
        device: str = "cpu",
        precision: str = "fp32",
        **options: Any,
    ) -> None:
        entry = BY_NAME[backend]
        # One class serves several registered names; results and messages carry the one loaded.
        self.name = backend  # type: ignore[misc]
        super().__init__(weights=weights, device=device, precision=precision, **options)
        if precision not in PRECISIONS:
            raise InvalidOptionError(
                f"Backend {backend!r} runs natively in 'fp32' or 'bf16' (autocast, float32 tail), but got "
                f"precision {precision!r}; other precisions come from a runtime plugin through "
                "visionkit.load(..., precision=...)."
            )
        self.arch: str = entry.arch or check_arch(getattr(self.options, "arch", None), self.family, backend)
        self.torch_device = resolve_device(self.device)
        self._check_limits(self.options)
        built = build_model(
            self.arch,
            self.family,
            weights,
            self.options.categories,
            backend,
            trust_pickle=self.options.trust_pickle,
        )
        self.model: nn.Module = built.model.to(self.torch_device)
        self.categories: tuple[str, ...] = built.categories
        #: Submodules kept float32 under bf16 (see ``_precision``); empty at fp32.
        self.float32_tail: list[str] = []
        if precision == "bf16":
            self._place_bf16(backend)
        self.weights_member = built.member
        self.weights_source = built.source
        self.label_space = _label_space(self.categories)
        self._fingerprint: str | None = None
        #: Upload uint8 pixels and convert/normalise them on the device (cuda/mps: 4x fewer bytes to copy,
        #: the float work on the accelerator); on CPU the weights' transforms run per image as before.
        #: Same numbers either way (tested by forcing it on CPU).
        self.upload_uint8 = self.torch_device.type != "cpu"

    def _place_bf16(self, backend: str) -> None:
        """Channels-last layout and the float32 tail for bf16 autocast (``forward`` turns autocast on)."""
        self.float32_tail = bf16_tail(self.model, self.family, self.torch_device, len(self.categories))
        if not self.float32_tail:
            raise InvalidOptionError(
                f"Backend {backend!r} ({self.arch}) has no known float32 tail for bf16 (its box decode or "
                "logits would be computed in bf16); use precision='fp32'."
            )
        # oneDNN / cuDNN bf16 convolutions are NHWC kernels: 6x faster than NCHW here for resnet50
        self.model = self.model.to(memory_format=torch.channels_last)

    def _autocast(self) -> Any:
        """bf16 autocast on the backend's device when it runs in bf16 (the tail switches it off)."""
        return autocast(self.precision, self.torch_device)

    def with_options(self, overrides: dict[str, Any]) -> Any:
        """Load-time options updated with per-call ``overrides``; network-shaping options are refused."""
        fixed = sorted(
            k for k in overrides if k in LOAD_TIME_OPTIONS and k in type(self.options).model_fields
        )
        if fixed:
            raise InvalidOptionError(
                f"Option {fixed[0]!r} of backend {self.name!r} shapes the network and can only be given at load "
                f"time: visionkit.load({self.name!r}, {fixed[0]}=...)."
            )
        return super().with_options(overrides)

    def _check_limits(self, options: Any) -> None:
        """Refuse size options above ``max_imgsz`` (and, for detectors, ``detections_per_image`` above
        ``max_detections``) with :class:`visionkit.LimitExceededError`."""
        for key in ("min_size", "max_size", "resize_size", "crop_size"):
            value = getattr(options, key, None)
            if value is not None:
                check_limit("max_imgsz", value, options.max_imgsz, what=key)
        if hasattr(options, "detections_per_image"):
            check_limit(
                "max_detections",
                options.detections_per_image,
                options.max_detections,
                what="detections_per_image",
            )

    def _name(self, index: int) -> str:
        return self.categories[index] if 0 <= index < len(self.categories) else str(index)

    def fingerprint(self) -> str:
        """A hash of the network's parameters and buffers (export cache key)."""
        if self._fingerprint is None:
            self._fingerprint = tensors_fingerprint(self.model)  # the key already names the arch
        return self._fingerprint


# -- detection ------------------------------------------------------------------------------------
class TorchvisionDetector(_TorchvisionBackend, Detects):
    """torchvision detectors (Faster R-CNN, RetinaNet, SSDlite, FCOS ...) as a visionkit Detector.

    torchvision filters, suppresses and caps detections inside the network; the options set those
    knobs (``score_threshold`` -> ``box_score_thresh`` ...) before each forward pass, so results are
    exactly what the torchvision model returns with the same settings.
    """

    name = "fasterrcnn"
    tasks: ClassVar[tuple[Task, ...]] = (Task.DETECT,)
    family = "detection"
    Options: ClassVar[type[BackendOptions]] = DetectionOptions

    def __init__(self, *, backend: str, **kwargs: Any) -> None:
        super().__init__(backend=backend, **kwargs)
        holder = getattr(self.model, "roi_heads", self.model)  # two-stage: the box head holds the knobs
        if not all(hasattr(holder, a) for a in ("score_thresh", "nms_thresh", "detections_per_img")):
            raise InvalidOptionError(
                f"arch {self.arch!r} is not a torchvision detector with score/NMS settings."
            )
        self._knobs = holder
        transform: Any = self.model.transform
        self._fixed_size = getattr(transform, "fixed_size", None)
        self._default_sizes = (tuple(transform.min_size), int(transform.max_size))
        rpn = getattr(self.model, "rpn", None)
        self._default_proposals = int(rpn._post_nms_top_n["testing"]) if rpn is not None else 0
        self._configure(self.options)

    def _configure(self, options: DetectionOptions) -> None:
        """Point torchvision's post-processing knobs at ``options`` (checked against the limits first)."""
        self._check_limits(options)
        if self._fixed_size is not None and (options.min_size is not None or options.max_size is not None):
            h, w = self._fixed_size
            raise InvalidOptionError(
                f"Backend {self.name!r} ({self.arch}) always resizes to a fixed {w}x{h}; "
                "min_size and max_size do not apply to it."
            )
        rpn = getattr(self.model, "rpn", None)
        if rpn is None and options.proposals is not None:
            raise InvalidOptionError(
                f"Backend {self.name!r} ({self.arch}) is a one-stage detector without region proposals; "
                "the proposals option applies to two-stage models (Faster/Mask R-CNN)."
            )
        if rpn is not None:
            # torchvision keeps the inference count in a private dict; rpn_post_nms_top_n_test writes it too.
            rpn._post_nms_top_n["testing"] = options.proposals or self._default_proposals
        self._knobs.score_thresh = options.score_threshold
        self._knobs.nms_thresh = options.nms_threshold
        self._knobs.detections_per_img = options.detections_per_image
        transform: Any = self.model.transform
        transform.min_size = (options.min_size,) if options.min_size is not None else self._default_sizes[0]
        transform.max_size = options.max_size if options.max_size is not None else self._default_sizes[1]

    def preprocess(self, images: list[np.ndarray], options: Any) -> Batch[Any]:
        """Scale each image to float [0, 1] with the weights' transforms; the model resizes internally.

        Inputs are ``(images, sizes)``: the images zero-padded to a common size and their own sizes.
        """
        self._configure(options)
        transform = self.weights_member.transforms()
        thin = [self._thin_padding(im) for im in images]
        metas = [{"thin_padding": pad} for pad in thin]
        if self.upload_uint8:  # the preset only scales to [0, 1]: do that on the device
            padded, sizes = pad_stack(
                [_chw(_pad_edges(im, pad)) for im, pad in zip(images, thin, strict=True)]
            )
            padded = _to_float(padded.to(self.torch_device, non_blocking=True), transform)
            return Batch(images, (padded, sizes), metas, options)
        padded, sizes = pad_stack(
            [transform(_chw(_pad_edges(im, pad))) for im, pad in zip(images, thin, strict=True)]
        )
        return Batch(images, (padded.to(self.torch_device), sizes), metas, options)

    def _thin_padding(self, image: np.ndarray) -> tuple[int, int]:
        """Rows and columns to add so torchvision's resize gives no side of 0 pixels.

        The resize scales by ``min(min_size / short, max_size / long)`` and floors: a 3000x2 image with
        ``max_size`` 1333 would become 1333x0. The short side is padded to ``ceil(long / max_size) + 1``.
        """
        if self._fixed_size is not None:
            return (0, 0)  # resized to a fixed size: any shape works
        h, w = image.shape[:2]
        transform: Any = self.model.transform
        need = math.ceil(max(h, w) / float(transform.max_size)) + 1
        return (max(0, need - h), max(0, need - w)) if min(h, w) < need else (0, 0)

    def forward(self, inputs: Any) -> Any:
        """One pass over the cropped images (torchvision detection models batch lists natively)."""
        images, sizes = inputs
        with torch.inference_mode(), self._autocast():
            return self.model(crops(images, sizes))

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """torchvision's ``{"boxes", "scores", "labels"[, "masks"]}`` dicts -> Detections / InstanceMasks.

        Also accepts what a runtime returns for :meth:`export_spec`'s graph (a flat tuple, split by
        its ``count`` output), where score threshold and detection cap are applied once more so a
        per-call stricter setting takes effect (a no-op on torchvision's own outputs).
        """
        masks = isinstance(self, TorchvisionInstanceSegmenter)
        if not isinstance(outputs, list):
            self._check_graph_options(batch.options)
        results: list[Detections] = []
        metas = batch.metas or [{} for _ in batch.images]
        for out, image, meta in zip(split_detections(outputs, masks), batch.images, metas, strict=True):
            # torchvision keeps scores > score_thresh, sorted by score, then the first detections_per_img
            keep = torch.nonzero(out["scores"] > batch.options.score_threshold)[:, 0]
            if any(meta.get("thin_padding", (0, 0))):  # drop what lies only in the padding, clip the rest
                h, w = image.shape[:2]
                boxes = out["boxes"]
                edge = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
                out = {**out, "boxes": torch.minimum(boxes.clamp(min=0), edge)}
                box = out["boxes"][keep]
                keep = keep[(box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])]
            out = {k: v[keep[: batch.options.detections_per_image]] for k, v in out.items()}
            labels = out["labels"].cpu().numpy().astype(np.int64)
            fields: dict[str, Any] = {
                "xyxy": out["boxes"].cpu().numpy().astype(np.float32).reshape(-1, 4),
                "confidence": out["scores"].cpu().numpy().astype(np.float32),
                "class_id": labels,
                "class_name": tuple(self._name(int(i)) for i in labels),
                "metadata": self.meta(image, label_space=self.label_space),
            }
            if task is Task.SEGMENT_INSTANCES:
                # torchvision pastes soft masks (n, 1, H, W) in [0, 1] at the input's resolution
                # (an exported graph pads them to the batch's padded size: crop that away).
                h, w = image.shape[:2]
                soft = out["masks"][..., :h, :w]
                fields["mask"] = (soft[:, 0] > batch.options.mask_threshold).cpu().numpy()
                results.append(InstanceMasks(**fields))
            else:
                results.append(Detections(**fields))
        return results

    def _baked_options(self) -> dict[str, Any]:
        """The load-time options an exported graph bakes in (they are part of its cache key)."""
        return {k: getattr(self.options, k) for k in _GRAPH_OPTIONS}

    def _check_graph_options(self, options: Any) -> None:
        """Refuse per-call options an exported graph cannot honour (they are baked in at export)."""
        for key, value in self._baked_options().items():
            now = getattr(options, key)
            stricter = (key == "score_threshold" and now >= value) or (
                key == "detections_per_image" and now <= value
            )
            if stricter:
                continue  # applied again in postprocess
            if now != value:
                raise InvalidOptionError(
                    f"Backend {self.name!r} runs an exported graph built with {key}={value!r}, so {key}={now!r} "
                    "cannot apply per call (a stricter score_threshold or a smaller detections_per_image can); "
                    f"load it with {key}={now!r} instead."
                )

    def export_spec(self) -> ExportSpec:
        """The whole torchvision model for one image, returning ``boxes, labels, scores[, masks], count``.

        The graph takes a padded ``(1, 3, H, W)`` image and its ``(1, 2)`` size (height and width are
        dynamic); the runtime runs a batch image by image. Score threshold, NMS threshold, detection
        cap, proposals and resize sizes are baked in from the load-time options (they are part of
        the cache key). ``count`` splits a batch's concatenated detections back into images.
        """
        masks = isinstance(self, TorchvisionInstanceSegmenter)
        options = self.options
        self._configure(options)  # trace with the load-time settings, whatever the last call used
        knobs = "-".join(f"{v}" for v in self._baked_options().values())
        h, w = self._fixed_size or (240, 320)
        outputs = ["boxes", "labels", "scores", *(["masks"] if masks else []), "count"]
        dynamic: dict[str, dict[int, str]] = {"images": {2: "height", 3: "width"}}
        dynamic.update({name: {0: "detections"} for name in outputs[:3]})
        if masks:
            dynamic["masks"] = {0: "detections", 2: "height", 3: "width"}
        return ExportSpec(
            module=DetectionGraph(self.model, masks).eval(),
            example_inputs=(_example_image(h, w, self.torch_device), torch.tensor([[h, w]])),
            input_names=["images", "sizes"],
            output_names=outputs,
            key=f"torchvision-{self.arch}-{self.fingerprint()}-{knobs}",
            dynamic_axes=dynamic,
            int8_unsupported=(
                f"{self.arch} offers fp32 ONNX only: static INT8 of the whole torchvision detector "
                "(proposals, RoIAlign, box decoding and NMS in one graph) took minutes to calibrate and moved "
                "scores and boxes far from fp32 when tried. Use precision='fp32' with runtime='onnxruntime'."
            ),
        )


#: Detector options an exported graph bakes in at export time.
_GRAPH_OPTIONS = (
    "score_threshold",
    "nms_threshold",
    "detections_per_image",
    "proposals",
    "min_size",
    "max_size",
)


class TorchvisionInstanceSegmenter(TorchvisionDetector, SegmentsInstances):
    """torchvision Mask R-CNN as a visionkit Detector and InstanceSegmenter.

    Masks: torchvision returns soft masks ``(n, 1, H, W)`` at the input resolution; a pixel belongs to an
    instance when its probability exceeds ``mask_threshold`` (0.5 by default, as torchvision's COCO
    evaluation does).
    """

    name = "maskrcnn"
    tasks: ClassVar[tuple[Task, ...]] = (Task.DETECT, Task.SEGMENT_INSTANCES)
    family = "instance"
    Options: ClassVar[type[BackendOptions]] = InstanceOptions


class _GenericDetector(TorchvisionDetector):
    Options: ClassVar[type[BackendOptions]] = GenericDetectionOptions


# -- semantic segmentation ------------------------------------------------------------------------
class _Logits(nn.Module):
    """The ``out`` logits of a torchvision segmentation model, as one tensor (what gets exported)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


class TorchvisionSemanticSegmenter(_TorchvisionBackend, SegmentsSemantic):
    """torchvision DeepLabV3 / LR-ASPP / FCN as a visionkit SemanticSegmenter.

    The network's ``out`` logits (already at the network input's size) are resized bilinearly to the
    image size and arg-maxed; ``return_scores=True`` adds their softmax.
    """

    name = "deeplabv3"
    tasks: ClassVar[tuple[Task, ...]] = (Task.SEGMENT_SEMANTIC,)
    family = "semantic"
    Options: ClassVar[type[BackendOptions]] = SemanticOptions

    def __init__(self, *, backend: str, **kwargs: Any) -> None:
        super().__init__(backend=backend, **kwargs)
        self.net = _Logits(self.model).eval()

    def transform(self, options: Any) -> Any:
        """The weights' transforms, with ``resize_size`` when given."""
        if options.resize_size is None:
            return self.weights_member.transforms()
        return self.weights_member.transforms(resize_size=options.resize_size)

    def preprocess(self, images: list[np.ndarray], options: Any) -> Batch[Any]:
        """Resize + normalise; ``(images, sizes)``: one ``(B, 3, h, w)`` tensor and each image's size.

        When aspect ratios differ the images are zero-padded to a common size; ``forward`` crops them
        back, since a padded network input would change the outputs.
        """
        self._check_limits(options)
        transform = self.transform(options)
        fitted = [_fit_resize(transform, im, options.max_imgsz) for im in images]
        if self.upload_uint8:  # resize on uint8 here, convert and normalise on the device
            padded, sizes = pad_stack([_resized_uint8(t, im) for t, im in zip(fitted, images, strict=True)])
            padded = _to_float(padded.to(self.torch_device, non_blocking=True), transform)
        else:
            padded, sizes = pad_stack([t(_chw(im)) for t, im in zip(fitted, images, strict=True)])
            padded = padded.to(self.torch_device)
        return Batch(images, (padded, sizes), [{} for _ in images], options)

    def forward(self, inputs: Any) -> Any:
        """``out`` logits ``(B, C, h, w)``: one pass per distinct image size, logits padded back.

        Padding is never fed to the network: zeros change every output of a model with global pooling
        (DeepLabV3's ASPP image-pooling branch averages over the whole input), so images of one size
        share a pass and each size gets its own, on every device.
        """
        images, sizes = inputs
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (h, w) in enumerate(sizes.tolist()):
            groups.setdefault((h, w), []).append(i)
        with torch.inference_mode(), self._autocast():
            if len(groups) == 1 and next(iter(groups)) == tuple(images.shape[-2:]):
                return self.net(images)
            parts: list[torch.Tensor | None] = [None] * len(images)
            for (h, w), idx in groups.items():
                index = torch.tensor(idx, device=images.device)
                logits = pad_to(self.net(images.index_select(0, index)[:, :, :h, :w]), images)
                for j, i in enumerate(idx):
                    parts[i] = logits[j : j + 1]
            return torch.cat(parts)  # type: ignore[arg-type]

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """Logits -> label map (and optional probabilities) at each image's resolution."""
        sizes = batch.inputs[1].tolist()
        results = []
        for logits, (lh, lw), image in zip(outputs, sizes, batch.images, strict=True):
            h, w = image.shape[:2]
            up = F.interpolate(
                torch.as_tensor(logits)[None, :, :lh, :lw].float(),
                size=(h, w),
                mode="bilinear",
                align_corners=False,
            )
            fields: dict[str, Any] = {
                "label_map": up[0].argmax(0).to(torch.int32).cpu().numpy(),
                "class_names": self.categories,
                "metadata": self.meta(image, label_space=self.label_space),
            }
            if batch.options.return_scores:
                fields["scores"] = up[0].softmax(0).cpu().numpy().astype(np.float32)
            results.append(SemanticMask(**fields))
        return results

    def export_spec(self) -> ExportSpec:
        """The segmentation network for one padded image and its size, returning padded ``out`` logits.

        Height and width are dynamic, the batch is 1: the runtime runs a batch image by image, so
        images of different sizes (padded in one batch) each see exactly their own pixels.
        """
        size = self.options.resize_size or int(self.weights_member.transforms().resize_size[0])
        return ExportSpec(
            module=SegmentationGraph(self.net).eval(),
            example_inputs=(_example_image(size, size, self.torch_device), torch.tensor([[size, size]])),
            input_names=["images", "sizes"],
            output_names=["logits"],
            key=f"torchvision-{self.arch}-{self.fingerprint()}-padded",
            dynamic_axes={"images": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}},
            calibration_inputs=self._calibration,
        )

    def _calibration(self, images: Sequence[Any]) -> Any:
        from visionkit import load_image

        return self.preprocess([load_image(x) for x in images], self.options).inputs


class _GenericSemanticSegmenter(TorchvisionSemanticSegmenter):
    Options: ClassVar[type[BackendOptions]] = GenericSemanticOptions


# -- classification -------------------------------------------------------------------------------
class TorchvisionClassifier(_TorchvisionBackend, Classifies):
    """torchvision image classifiers as a visionkit Classifier: softmax, then the ``top_k`` classes."""

    name = "resnet50"
    tasks: ClassVar[tuple[Task, ...]] = (Task.CLASSIFY,)
    family = "classification"
    Options: ClassVar[type[BackendOptions]] = ClassifierOptions

    def transform(self, options: Any) -> Any:
        """The weights' transforms, with ``resize_size`` / ``crop_size`` when given."""
        sizes = {
            k: getattr(options, k) for k in ("resize_size", "crop_size") if getattr(options, k) is not None
        }
        return self.weights_member.transforms(**sizes)

    def preprocess(self, images: list[np.ndarray], options: Any) -> Batch[Any]:
        """Resize, centre-crop, normalise each image; stack into one ``(B, 3, crop, crop)`` tensor."""
        self._check_limits(options)
        transform = self.transform(options)
        fitted = [_fit_resize(transform, im, options.max_imgsz) for im in images]
        if self.upload_uint8:  # resize and crop on uint8 here, convert and normalise on the device
            crops_ = torch.stack([_resized_uint8(t, im) for t, im in zip(fitted, images, strict=True)])
            inputs = _to_float(crops_.to(self.torch_device, non_blocking=True), transform)
        else:
            inputs = torch.stack([t(_chw(im)) for t, im in zip(fitted, images, strict=True)])
            inputs = inputs.to(self.torch_device)
        return Batch(images, inputs, [{} for _ in images], options)

    def forward(self, inputs: Any) -> Any:
        """Logits ``(B, num_classes)`` (float32 also under bf16: the last layer runs in float32)."""
        with torch.inference_mode(), self._autocast():
            return self.model(inputs)

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """Softmax probabilities -> the ``top_k`` classes per image."""
        probs = torch.as_tensor(outputs).float().softmax(dim=1)
        k = min(batch.options.top_k, probs.shape[1])
        top = probs.topk(k, dim=1)
        values, indices = top.values.cpu().numpy(), top.indices.cpu().numpy()
        return [
            Classifications(
                class_id=idx.astype(np.int64),
                confidence=val.astype(np.float32),
                class_name=tuple(self._name(int(i)) for i in idx),
                metadata=self.meta(image, label_space=self.label_space),
            )
            for val, idx, image in zip(values, indices, batch.images, strict=True)
        ]

    def export_spec(self) -> ExportSpec:
        """The classification network returning logits; the batch axis is dynamic."""
        crop = self.transform(self.options).crop_size[0]
        return ExportSpec(
            module=self.model.eval(),
            example_inputs=(torch.zeros(1, 3, crop, crop, device=self.torch_device),),
            input_names=["images"],
            output_names=["logits"],
            key=f"torchvision-{self.arch}-{self.fingerprint()}-{crop}",
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            calibration_inputs=lambda images: (self._calibration(images),),
        )

    def _calibration(self, images: Sequence[Any]) -> Any:
        from visionkit import load_image

        return self.preprocess([load_image(x) for x in images], self.options).inputs


class _GenericClassifier(TorchvisionClassifier):
    Options: ClassVar[type[BackendOptions]] = GenericClassifierOptions


# -- factories named by the registration in __init__.py -------------------------------------------
def load_maskrcnn(**kwargs: Any) -> TorchvisionInstanceSegmenter:
    """``visionkit.load("maskrcnn")``: Mask R-CNN ResNet-50 FPN v2."""
    return TorchvisionInstanceSegmenter(backend="maskrcnn", **kwargs)


def load_fasterrcnn(**kwargs: Any) -> TorchvisionDetector:
    """``visionkit.load("fasterrcnn")``: Faster R-CNN ResNet-50 FPN v2."""
    return TorchvisionDetector(backend="fasterrcnn", **kwargs)


def load_fasterrcnn_mobilenet(**kwargs: Any) -> TorchvisionDetector:
    """``visionkit.load("fasterrcnn-mobilenet")``: Faster R-CNN MobileNetV3-Large FPN."""
    return TorchvisionDetector(backend="fasterrcnn-mobilenet", **kwargs)


def load_retinanet(**kwargs: Any) -> TorchvisionDetector:
    """``visionkit.load("retinanet")``: RetinaNet ResNet-50 FPN v2."""
    return TorchvisionDetector(backend="retinanet", **kwargs)


def load_ssdlite(**kwargs: Any) -> TorchvisionDetector:
    """``visionkit.load("ssdlite")``: SSDlite 320 MobileNetV3-Large."""
    return TorchvisionDetector(backend="ssdlite", **kwargs)


def load_deeplabv3(**kwargs: Any) -> TorchvisionSemanticSegmenter:
    """``visionkit.load("deeplabv3")``: DeepLabV3 ResNet-50."""
    return TorchvisionSemanticSegmenter(backend="deeplabv3", **kwargs)


def load_lraspp(**kwargs: Any) -> TorchvisionSemanticSegmenter:
    """``visionkit.load("lraspp")``: LR-ASPP MobileNetV3-Large."""
    return TorchvisionSemanticSegmenter(backend="lraspp", **kwargs)


def load_resnet50(**kwargs: Any) -> TorchvisionClassifier:
    """``visionkit.load("resnet50")``: ResNet-50."""
    return TorchvisionClassifier(backend="resnet50", **kwargs)


def load_mobilenet_v3_large(**kwargs: Any) -> TorchvisionClassifier:
    """``visionkit.load("mobilenet_v3_large")``: MobileNetV3-Large."""
    return TorchvisionClassifier(backend="mobilenet_v3_large", **kwargs)


def load_tv_classifier(**kwargs: Any) -> TorchvisionClassifier:
    """``visionkit.load("tv-classifier", arch=...)``: any torchvision classification model."""
    return _GenericClassifier(backend="tv-classifier", **kwargs)


def load_tv_detector(**kwargs: Any) -> TorchvisionDetector:
    """``visionkit.load("tv-detector", arch=...)``: any torchvision detection model (boxes only)."""
    return _GenericDetector(backend="tv-detector", **kwargs)


def load_tv_segmenter(**kwargs: Any) -> TorchvisionSemanticSegmenter:
    """``visionkit.load("tv-segmenter", arch=...)``: any torchvision semantic segmentation model."""
    return _GenericSemanticSegmenter(backend="tv-segmenter", **kwargs)
