"""torchvision backends: detection, instance and semantic segmentation, classification.

Each backend keeps visionkit's three stages apart:

* ``preprocess``: RGB uint8 arrays -> the weights' own ``transforms()`` (detection: scale to [0, 1];
  segmentation: resize + normalise; classification: resize + centre crop + normalise).
* ``forward``: the torchvision network, nothing else (detection models take a list of differently
  sized images and resize/normalise inside; the others take one ``(B, 3, h, w)`` tensor).
* ``postprocess``: torchvision's outputs -> visionkit results in the input image's pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
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
from visionkit.export import ExportNotSupportedError, ExportSpec
from visionkit_torchvision._catalog import BY_NAME, COCO_CATEGORIES, VOC_CATEGORIES
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


class _TorchvisionBackend(Backend[Any]):
    """Shared loading, options and device handling of every torchvision backend."""

    family: ClassVar[str] = ""

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
        if precision != "fp32":
            raise InvalidOptionError(
                f"Backend {backend!r} runs natively in 'fp32' only, but got precision {precision!r}; "
                "other precisions come from a runtime plugin through visionkit.load(..., precision=...)."
            )
        self.arch: str = entry.arch or check_arch(getattr(self.options, "arch", None), self.family, backend)
        self.torch_device = resolve_device(self.device)
        built = build_model(self.arch, self.family, weights, self.options.categories, backend)
        self.model: nn.Module = built.model.to(self.torch_device)
        self.categories: tuple[str, ...] = built.categories
        self.weights_member = built.member
        self.weights_source = built.source
        self.label_space = _label_space(self.categories)
        self._fingerprint: str | None = None

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

    def _name(self, index: int) -> str:
        return self.categories[index] if 0 <= index < len(self.categories) else str(index)

    def fingerprint(self) -> str:
        """A hash of the network's parameters and buffers (export cache key)."""
        if self._fingerprint is None:
            digest = hashlib.sha1(self.arch.encode())
            for key, value in self.model.state_dict().items():
                digest.update(key.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
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
        """Point torchvision's post-processing knobs at ``options``."""
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
        """Scale each image to float [0, 1] with the weights' transforms; the model resizes internally."""
        self._configure(options)
        transform = self.weights_member.transforms()
        inputs = [transform(_chw(im)).to(self.torch_device) for im in images]
        return Batch(images, inputs, [{} for _ in images], options)

    def forward(self, inputs: Any) -> Any:
        """One pass over the list of images (torchvision detection models batch lists natively)."""
        with torch.inference_mode():
            return self.model(inputs)

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """torchvision's ``{"boxes", "scores", "labels"[, "masks"]}`` dicts -> Detections / InstanceMasks."""
        results: list[Detections] = []
        for out, image in zip(outputs, batch.images, strict=True):
            labels = out["labels"].cpu().numpy().astype(np.int64)
            fields: dict[str, Any] = {
                "xyxy": out["boxes"].cpu().numpy().astype(np.float32).reshape(-1, 4),
                "confidence": out["scores"].cpu().numpy().astype(np.float32),
                "class_id": labels,
                "class_name": tuple(self._name(int(i)) for i in labels),
                "metadata": self.meta(image, label_space=self.label_space),
            }
            if task is Task.SEGMENT_INSTANCES:
                # torchvision pastes soft masks (n, 1, H, W) in [0, 1] at the input's resolution.
                soft = out["masks"]
                fields["mask"] = (soft[:, 0] > batch.options.mask_threshold).cpu().numpy()
                results.append(InstanceMasks(**fields))
            else:
                results.append(Detections(**fields))
        return results

    def export_spec(self) -> ExportSpec:
        """Not supported: see the message."""
        raise ExportNotSupportedError(
            f"Backend {self.name!r} ({self.arch}) cannot be exported to another runtime: torchvision detection "
            "models resize inside the network and return a variable number of detections per image through "
            "data-dependent NMS, which visionkit's ONNX path does not trace. Run it with precision='fp32'."
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
        """Resize + normalise; one ``(B, 3, h, w)`` tensor, or a list of them when aspect ratios differ."""
        transform = self.transform(options)
        tensors = [transform(_chw(im)) for im in images]
        if len({tuple(t.shape) for t in tensors}) == 1:
            inputs: Any = torch.stack(tensors).to(self.torch_device)
        else:  # different network input sizes cannot share a batch without padding, which changes outputs
            inputs = [t[None].to(self.torch_device) for t in tensors]
        return Batch(images, inputs, [{} for _ in images], options)

    def forward(self, inputs: Any) -> Any:
        """``out`` logits ``(B, C, h, w)`` (a list of them for a list input)."""
        with torch.inference_mode():
            if isinstance(inputs, (list, tuple)):
                return [self.net(x) for x in inputs]
            return self.net(inputs)

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """Logits -> label map (and optional probabilities) at each image's resolution."""
        per_image = [o for group in outputs for o in group] if isinstance(outputs, list) else list(outputs)
        results = []
        for logits, image in zip(per_image, batch.images, strict=True):
            h, w = image.shape[:2]
            up = F.interpolate(
                torch.as_tensor(logits)[None].float(), size=(h, w), mode="bilinear", align_corners=False
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
        """The segmentation network returning ``out`` logits; height and width are dynamic."""
        size = self.options.resize_size or int(self.weights_member.transforms().resize_size[0])
        return ExportSpec(
            module=self.net.eval(),
            example_inputs=(torch.zeros(1, 3, size, size, device=self.torch_device),),
            input_names=["images"],
            output_names=["logits"],
            key=f"torchvision-{self.arch}-{self.fingerprint()}",
            dynamic_axes={
                "images": {0: "batch", 2: "height", 3: "width"},
                "logits": {0: "batch", 2: "height", 3: "width"},
            },
            calibration_inputs=lambda images: (self._calibration(images),),
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
        transform = self.transform(options)
        inputs = torch.stack([transform(_chw(im)) for im in images]).to(self.torch_device)
        return Batch(images, inputs, [{} for _ in images], options)

    def forward(self, inputs: Any) -> Any:
        """Logits ``(B, num_classes)``."""
        with torch.inference_mode():
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
