"""The transformers backends: the checkpoint's own image processor and ``post_process_*`` around its model.

Stages (see :class:`visionkit.Backend`)::

    preprocess   images → processor(images) → (pixel_values[, pixel_mask]) + per-image valid region
    forward      network(pixel_values[, pixel_mask]) → tuple of tensors (logits, pred_boxes, ...)
    postprocess  tuple → processor.post_process_*(target_sizes = original sizes) → visionkit results

A list of images runs as *one* padded batch (DETR pads to the largest resized image and masks the rest);
every image gets its own target size, so each result is in that image's original pixels. ``forward``
returns a plain tuple so the ONNX runtime plugin can swap it for a session (:meth:`export_spec`).

Bounded work and safety: ``max_imgsz`` caps the processor's sizes, ``max_detections`` the detections
(or instance segments) per image. An image so thin that an aspect-keeping processor would resize it
to 0 pixels (1x1000 with DETR) is padded with its edge pixels first; results stay in its own pixels.
Checkpoints load with ``weights_only`` unpickling and without running their code unless
``trust_pickle`` / ``trust_remote_code`` say otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import transformers

from visionkit import (
    Backend,
    BackendError,
    BackendUnavailableError,
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
    UnsafeWeightsError,
    WeightsNotFoundError,
    load_image,
)
from visionkit.autocast import autocast
from visionkit.backend import check_limit
from visionkit.export import ExportSpec
from visionkit_transformers._fold import fold_frozen_batchnorm
from visionkit_transformers._labels import label_space
from visionkit_transformers._options import (
    LOAD_TIME_OPTIONS,
    ClassificationOptions,
    DetectionOptions,
    HFOptions,
    PanopticOptions,
    SemanticOptions,
)
from visionkit_transformers._precision import bf16_tail
from visionkit_transformers._tiny import tiny_model
from visionkit_transformers._weights import find_checkpoint

__all__ = [
    "AutoDetectionBackend",
    "ClassificationBackend",
    "DetrBackend",
    "DetrPanopticBackend",
    "SemanticBackend",
]

#: Native precisions and the dtype of the weights: bf16 keeps float32 weights and runs under autocast.
_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.float32}


class _TupleOutputs(torch.nn.Module):
    """The model with positional tensor inputs and a tuple of tensor outputs (traceable, runtime-swappable)."""

    def __init__(
        self, model: torch.nn.Module, output_keys: tuple[str, ...], input_names: tuple[str, ...]
    ) -> None:
        super().__init__()
        self.model = model
        self.output_keys = output_keys
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.input_names, inputs, strict=True)), return_dict=True)
        return tuple(out[k] for k in self.output_keys)


class _Outputs(dict[str, Any]):
    """What ``post_process_*`` expects from a model output: attribute and key access to the tensors."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def _pad_edges(image: np.ndarray, pad: tuple[int, int]) -> np.ndarray:
    """``image`` with ``pad`` = (rows, columns) of its edge pixels added at the bottom and right."""
    if not any(pad):
        return image
    return np.pad(image, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")


def _keep_best(scores: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the ``limit`` highest ``scores``, in their original order (all when within the limit)."""
    if limit is None or len(scores) <= limit:
        return np.arange(len(scores))
    return np.sort(np.argsort(-scores, kind="stable")[:limit])


def _torch_device(device: str) -> torch.device:
    from visionkit.devices import resolve_torch_device

    return resolve_torch_device(device)


class _HFBackend(Backend[Any]):
    """Shared loading, preprocessing and export; subclasses say which model class and post-processing."""

    #: Whether ``precision="bf16"`` (autocast with a float32 tail) is validated for this backend.
    offers_bf16: ClassVar[bool] = False

    Options: ClassVar[type[HFOptions]] = HFOptions
    native_runtime: ClassVar[str] = "torch"
    #: Key of :func:`tiny_model` for ``weights=None``.
    kind: ClassVar[str] = ""
    #: ``transformers`` class that loads a checkpoint directory.
    model_class: ClassVar[str] = ""
    #: Model output fields handed from ``forward`` to ``postprocess``, in order.
    output_keys: ClassVar[tuple[str, ...]] = ("logits",)
    #: Outputs to keep in float when a runtime quantizes (boxes mix pixel-scale and 0-1 values).
    sensitive_outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any
    ) -> None:
        super().__init__(weights=weights, device=device, precision=precision, **options)
        if precision not in _PRECISIONS:
            raise InvalidOptionError(
                f"Precision {precision!r} is not native to backend {self.name!r}; expected one of "
                f"{', '.join(_PRECISIONS)} (int8 comes from the ONNX runtime plugin)."
            )
        self.torch_device = _torch_device(self.device)
        self.dtype = _PRECISIONS[precision]
        if self.dtype == torch.float16 and self.torch_device.type == "cpu":
            raise InvalidOptionError(
                f"Precision 'fp16' needs a GPU, but backend {self.name!r} runs on 'cpu'."
            )
        if precision == "bf16" and not self.offers_bf16:
            raise InvalidOptionError(
                f"Backend {self.name!r} does not offer precision 'bf16' (its outputs are not validated within "
                "tolerance in bf16); use 'fp32', or a runtime plugin's bf16 (runtime='openvino')."
            )
        opts: HFOptions = self.options
        if weights is None:
            model, processor = tiny_model(self.kind, opts.config)
            #: Where the weights came from: a checkpoint directory, or ``"random"``.
            self.source = "random"
        else:
            if opts.config is not None:
                raise InvalidOptionError(
                    f"Option 'config' only applies to random initialisation (weights=None), but backend "
                    f"{self.name!r} was given weights={os.fspath(weights)!r}."
                )
            path = find_checkpoint(weights)
            model, processor = self._load_checkpoint(path)
            self.source = str(path)
        #: The ``transformers`` model and image processor (public, e.g. for parity checks).
        self.model = model.eval().to(device=self.torch_device, dtype=self.dtype)
        if getattr(self.model.config, "model_type", "") == "detr":
            # DETR's frozen BatchNorms were ~22 % of its CPU forward; folded, they cost nothing (_fold)
            fold_frozen_batchnorm(self.model)
        #: Submodules kept float32 under bf16 (see ``_precision``); empty otherwise.
        self.float32_tail: list[str] = []
        if precision == "bf16":
            self._place_bf16()
        self.processor = processor
        self.id2label = self._labels(opts.id2label)
        self.label_space = label_space(self.id2label)
        self._input_names: tuple[str, ...] | None = None
        self._check_limits(opts)  # a checkpoint's own processor sizes are held to max_imgsz too

    def _place_bf16(self) -> None:
        """The float32 tail and channels-last convolutions for bf16 autocast (``forward`` turns it on)."""
        tail = bf16_tail(self.model, self.torch_device)
        if tail is None:
            raise InvalidOptionError(
                f"Backend {self.name!r} has no known float32 tail for {type(self.model).__name__} (its box "
                "decode or logits would be computed in bf16), so it does not run in 'bf16'; use 'fp32'."
            )
        self.float32_tail = tail
        # oneDNN / cuDNN bf16 convolutions are NHWC kernels (the ResNet backbones of DETR and RT-DETR)
        self.model = self.model.to(memory_format=torch.channels_last)

    def with_options(self, overrides: dict[str, Any]) -> Any:
        """Load-time options with per-call ``overrides``; options that build the network are refused."""
        fixed = sorted(k for k in overrides if k in LOAD_TIME_OPTIONS)
        if fixed:
            raise InvalidOptionError(
                f"Option {fixed[0]!r} of backend {self.name!r} applies when the model is loaded: "
                f"visionkit.load({self.name!r}, {fixed[0]}=...)."
            )
        return super().with_options(overrides)

    def _effective_size(self, opts: HFOptions) -> dict[str, int]:
        """The processor's ``size`` for ``opts`` (the options' sizes over the processor's own)."""
        size = self._size_kwargs(opts).get("size") or dict(self.processor.size)
        return {k: int(v) for k, v in size.items() if isinstance(v, int)}

    def _check_limits(self, opts: HFOptions) -> None:
        """Refuse sizes above ``max_imgsz`` with :class:`visionkit.LimitExceededError`."""
        for key, value in self._effective_size(opts).items():
            check_limit("max_imgsz", value, opts.max_imgsz, what=f"processor size {key}")

    def _thin_padding(self, image: np.ndarray, size: dict[str, int]) -> tuple[int, int]:
        """Rows and columns to add so an aspect-keeping resize gives no side of 0 pixels.

        DETR-style processors scale the long side to ``longest_edge`` and round the short side: a 3000x2
        image would become 160x0. The short side is padded to ``ceil(long / longest_edge) + 1``.
        """
        longest = size.get("longest_edge")
        if "shortest_edge" not in size or not longest:
            return (0, 0)  # fixed-size processors resize any shape
        h, w = image.shape[:2]
        need = math.ceil(max(h, w) / longest) + 1
        return (max(0, need - h), max(0, need - w)) if min(h, w) < need else (0, 0)

    # -- loading --------------------------------------------------------------------------------
    def _load_checkpoint(self, path: Path) -> tuple[Any, Any]:
        cls = getattr(transformers, self.model_class)
        opts: HFOptions = self.options
        try:
            # safetensors first when both exist (transformers' default); .bin only with weights_only unless trusted.
            model = cls.from_pretrained(
                path,
                local_files_only=True,
                trust_remote_code=opts.trust_remote_code,
                weights_only=not opts.trust_pickle,
            )
        except pickle.UnpicklingError as exc:
            if "Unsupported global" not in str(exc):  # corrupt, not a refusal
                raise BackendError(f"Checkpoint {str(path)!r} cannot be read: {_first_line(exc)}") from exc
            if opts.trust_pickle:
                model = self._load_trusted_bin(cls, path, opts)
                return model, self._load_processor(path, opts)
            raise UnsafeWeightsError(
                f"Checkpoint {str(path)!r} holds a pytorch_model.bin that is not plain tensors: "
                f"torch.load(weights_only=True) refused to unpickle it ({_refused_global(exc)}), and unpickling "
                "can run code. If you trust it, load with trust_pickle=True (CLI: --trust-pickle); better, "
                "convert it to model.safetensors (model.save_pretrained(dir))."
            ) from exc
        except ImportError as exc:  # e.g. a checkpoint whose config asks for a timm backbone
            missing = "timm" if "timm" in str(exc).lower() else str(exc)
            raise BackendUnavailableError(self.name, [missing], f"pip install {missing}") from exc
        except ValueError as exc:  # the config's model type has no class for this task
            if "trust_remote_code" in str(exc) and not opts.trust_remote_code:
                raise UnsafeWeightsError(
                    f"Checkpoint {str(path)!r} needs to run Python code it ships (config.json 'auto_map') to "
                    f"load, and backend {self.name!r} does not run checkpoint code by default. If you trust it, "
                    "load with trust_remote_code=True."
                ) from exc
            raise BackendError(
                f"Checkpoint {str(path)!r} cannot be loaded as {self.model_class} by backend {self.name!r}: {exc}"
            ) from exc
        return model, self._load_processor(path, opts)

    def _load_trusted_bin(self, cls: Any, path: Path, opts: HFOptions) -> Any:
        """The model from ``pytorch_model*.bin`` files unpickled in full (``trust_pickle=True`` only).

        transformers reads ``.bin`` files with ``weights_only=True`` whatever ``from_pretrained`` is told,
        so the trusted files are read here and their tensors handed over as a state dict.
        """
        from transformers.models.auto.auto_factory import _get_model_class

        state: dict[str, torch.Tensor] = {}
        for file in sorted(path.glob("pytorch_model*.bin")):
            obj = torch.load(file, map_location="cpu", weights_only=False)
            if isinstance(obj, torch.nn.Module):
                obj = obj.state_dict()
            state.update({k: v for k, v in dict(obj).items() if isinstance(v, torch.Tensor)})
        config = transformers.AutoConfig.from_pretrained(
            path, local_files_only=True, trust_remote_code=opts.trust_remote_code
        )
        return _get_model_class(config, cls._model_mapping).from_pretrained(
            None, config=config, state_dict=state
        )

    def _load_processor(self, path: Path, opts: HFOptions) -> Any:
        if not (path / "preprocessor_config.json").is_file():
            raise WeightsNotFoundError(
                str(path / "preprocessor_config.json"),
                [f"{path} (has the model but no preprocessor_config.json)"],
                "Save the image processor next to the model: `processor.save_pretrained(dir)`.",
            )
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(
                path, local_files_only=True, trust_remote_code=opts.trust_remote_code
            )
        except ValueError as exc:
            if "trust_remote_code" not in str(exc) or opts.trust_remote_code:
                raise
            raise UnsafeWeightsError(
                f"Checkpoint {str(path)!r} needs to run the Python code of its image processor to load; if you "
                "trust it, load with trust_remote_code=True."
            ) from exc
        return processor

    def _labels(self, override: dict[int, str] | None) -> dict[int, str]:
        labels = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        if override:
            unknown = sorted(set(override) - set(labels))
            if unknown:
                raise InvalidOptionError(
                    f"Option id2label has class ids {unknown} that backend {self.name!r} does not predict; "
                    f"valid ids are 0..{max(labels)}."
                )
            labels.update(override)
        return labels

    def class_name(self, class_id: int) -> str:
        """The name of ``class_id`` (its id as text when ``id2label`` lacks it)."""
        return self.id2label.get(int(class_id), str(int(class_id)))

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of class ids ``0 .. max id``."""
        return tuple(self.class_name(i) for i in range(max(self.id2label) + 1))

    # -- stages ---------------------------------------------------------------------------------
    def _size_kwargs(self, opts: HFOptions) -> dict[str, Any]:
        return size_kwargs(self.name, opts, self.processor.size)

    def preprocess(self, images: list[np.ndarray], options: HFOptions) -> Batch[Any]:
        """Run the checkpoint's image processor on the whole list (one padded batch)."""
        self._check_limits(options)
        size = self._effective_size(options)
        pads = [self._thin_padding(im, size) for im in images]
        # visionkit hands over read-only arrays; torch.from_numpy inside the processor warns on those.
        arrays = [_pad_edges(im, pad) for im, pad in zip(images, pads, strict=True)]
        arrays = [im if im.flags.writeable else im.copy() for im in arrays]
        feats = self.processor(
            images=arrays,
            return_tensors="pt",
            input_data_format="channels_last",
            **self._size_kwargs(options),
        )
        names = tuple(n for n in ("pixel_values", "pixel_mask") if n in feats)
        self._input_names = names
        values = feats["pixel_values"]
        mask = feats.get("pixel_mask")
        metas = []
        for i in range(len(images)):
            if mask is None:
                valid = (int(values.shape[-2]), int(values.shape[-1]))
            else:  # the resized image sits top-left in the padded tensor
                valid = (int(mask[i].any(dim=1).sum()), int(mask[i].any(dim=0).sum()))
            metas.append(
                {
                    "valid": valid,
                    "padded": (int(values.shape[-2]), int(values.shape[-1])),
                    # the size results are computed at: the image's own, plus any thin-image padding
                    "target": (int(arrays[i].shape[0]), int(arrays[i].shape[1])),
                }
            )
        inputs = tuple(
            feats[n].to(self.torch_device, dtype=self.dtype if n == "pixel_values" else None) for n in names
        )
        return Batch(images, inputs, metas, options)

    @property
    def network(self) -> _TupleOutputs:
        """The model as ``forward`` runs it: positional inputs, a tuple of :attr:`output_keys`."""
        names = self._input_names or self._probe_input_names()
        return _TupleOutputs(self.model, self.output_keys, names)

    def _probe_input_names(self) -> tuple[str, ...]:
        self.preprocess([np.zeros((32, 32, 3), np.uint8)], self.options)
        assert self._input_names is not None
        return self._input_names

    def forward(self, inputs: Any) -> Any:
        """``network(*inputs)`` without autograd (under bf16 autocast for ``precision="bf16"``)."""
        with torch.inference_mode(), autocast(self.precision, self.torch_device):
            return self.network(*inputs)

    def _outputs(self, raw: Any) -> _Outputs:
        return _Outputs({k: torch.as_tensor(v).float() for k, v in zip(self.output_keys, raw, strict=True)})

    def meta(self, image: np.ndarray, **extra: Any) -> Any:
        """Result metadata with the label space and weights source."""
        return super().meta(image, label_space=self.label_space, weights=self.source, **extra)

    # -- export ---------------------------------------------------------------------------------
    def export_spec(self) -> ExportSpec:
        """The network as traced by a runtime plugin (dynamic batch and, for padded processors, size)."""
        example = self.preprocess([np.full((64, 80, 3), 127, np.uint8)], self.options).inputs
        names = list(self._input_names or ())
        axes = {
            n: (
                {0: "batch", 2: "height", 3: "width"}
                if n == "pixel_values"
                else {0: "batch", 1: "height", 2: "width"}
            )
            for n in names
        }
        axes.update({k: {0: "batch"} for k in self.output_keys})
        return ExportSpec(
            module=self.network.eval(),
            example_inputs=tuple(t.float() for t in example) if self.dtype != torch.float32 else example,
            input_names=names,
            output_names=list(self.output_keys),
            key=self._export_key(),
            dynamic_axes=axes,
            sensitive_outputs=list(self.sensitive_outputs),
            calibration_inputs=lambda imgs: (
                self.preprocess([load_image(x) for x in imgs], self.options).inputs
            ),
            dynamic_quantization=True,  # transformer layers: dynamic INT8 on the Linear weights
        )

    def _export_key(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(self.model.config.to_dict(), sort_keys=True, default=str).encode())
        h.update(json.dumps(self._size_kwargs(self.options), sort_keys=True).encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return f"{self.name}-{h.hexdigest()[:16]}"


def _targets(batch: Batch[Any]) -> list[tuple[int, int]]:
    """Per image, the size its results are computed at (its own, plus any thin-image padding)."""
    sizes = [m.get("target", im.shape[:2]) for m, im in zip(batch.metas, batch.images, strict=True)]
    return [(int(h), int(w)) for h, w in sizes]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _refused_global(exc: BaseException) -> str:
    """The global torch's weights-only unpickler refused, e.g. ``GLOBAL builtins.open``."""
    for line in str(exc).splitlines():
        if "Unsupported global" in line:
            return line.strip().split(" was not")[0].removeprefix("WeightsUnpickler error: ")
    return _first_line(exc)


# -- detection -------------------------------------------------------------------------------------
class AutoDetectionBackend(_HFBackend, Detects):
    """Any ``AutoModelForObjectDetection`` checkpoint (RT-DETR, DETR, Conditional/Deformable DETR, YOLOS ...).

    ``class_id`` is the checkpoint's own id; ``metadata.label_space`` is ``"coco91"`` (DETR's COCO ids with
    gaps), ``"coco80"`` (contiguous COCO) or ``"custom"``. Detections are sorted most confident first,
    like every visionkit detector (ties keep transformers' query order).
    """

    offers_bf16 = True
    name = "rtdetr"
    kind = "rtdetr"
    tasks = (Task.DETECT,)
    Options = DetectionOptions
    model_class = "AutoModelForObjectDetection"
    output_keys = ("logits", "pred_boxes")
    sensitive_outputs = ("pred_boxes",)

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """``processor.post_process_object_detection`` with each image's own size, then visionkit types."""
        opts: DetectionOptions = batch.options
        found = self.processor.post_process_object_detection(
            self._outputs(outputs), threshold=opts.threshold, target_sizes=_targets(batch)
        )
        results = []
        for r, image, meta in zip(found, batch.images, batch.metas, strict=True):
            h, w = int(image.shape[0]), int(image.shape[1])
            scores = r["scores"].detach().float().cpu().numpy()
            boxes = r["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
            ids = r["labels"].detach().cpu().numpy().astype(np.int64)
            if tuple(meta.get("target", (h, w))) != (h, w):  # thin image: drop what lies only in the padding
                boxes = np.clip(boxes, 0, [w, h, w, h])
                inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                scores, boxes, ids = scores[inside], boxes[inside], ids[inside]
            keep = _keep_best(scores, opts.max_detections)
            keep = keep[np.argsort(-scores[keep], kind="stable")]  # most confident first, ties in query order
            scores, boxes, ids = scores[keep], boxes[keep], ids[keep]
            if opts.clip_boxes:
                boxes = np.clip(boxes, 0, [w, h, w, h])
            results.append(
                Detections(
                    xyxy=boxes.astype(np.float32),
                    confidence=scores.astype(np.float32),
                    class_id=ids,
                    class_name=tuple(self.class_name(i) for i in ids),
                    metadata=self.meta(image),
                )
            )
        return results


class DetrBackend(AutoDetectionBackend):
    """DETR (``DetrForObjectDetection``); ``facebook/detr-resnet-50`` predicts COCO-91 ids."""

    name = "detr"
    kind = "detr"


# -- segmentation ----------------------------------------------------------------------------------
class SemanticBackend(_HFBackend, SegmentsSemantic):
    """Any ``AutoModelForSemanticSegmentation`` checkpoint (SegFormer, BEiT, DPT ...)."""

    offers_bf16 = True
    name = "segformer"
    kind = "segformer"
    tasks = (Task.SEGMENT_SEMANTIC,)
    Options = SemanticOptions
    model_class = "AutoModelForSemanticSegmentation"

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """``processor.post_process_semantic_segmentation`` at each image's own size."""
        maps = self.processor.post_process_semantic_segmentation(
            self._outputs(outputs), target_sizes=_targets(batch)
        )
        names = self.class_names
        return [
            SemanticMask(
                label_map=m.detach().cpu().numpy().astype(np.int32)[: im.shape[0], : im.shape[1]],
                class_names=names,
                metadata=self.meta(im),
            )
            for m, im in zip(maps, batch.images, strict=True)
        ]


class DetrPanopticBackend(_HFBackend, SegmentsSemantic, SegmentsInstances):
    """DETR's panoptic head (``DetrForSegmentation``): semantic label maps and instance masks.

    Images of a padded batch are post-processed one at a time on their own valid region, so a batch
    gives each image what it would get alone (transformers' batched post-processing stretches the padding).
    """

    name = "detr-panoptic"
    kind = "detr-panoptic"
    tasks = (Task.SEGMENT_SEMANTIC, Task.SEGMENT_INSTANCES)
    Options = PanopticOptions
    model_class = "DetrForSegmentation"
    output_keys = ("logits", "pred_boxes", "pred_masks")
    sensitive_outputs = ("pred_boxes",)

    def _per_image(self, outputs: Any, batch: Batch[Any]) -> list[_Outputs]:
        out = self._outputs(outputs)
        items = []
        for i, meta in enumerate(batch.metas):
            masks = out["pred_masks"][i : i + 1]
            (vh, vw), (ph, pw) = meta["valid"], meta["padded"]
            mh, mw = masks.shape[-2:]  # masks are at 1/4 of the padded input: keep the valid part
            masks = masks[..., : max(1, round(mh * vh / ph)), : max(1, round(mw * vw / pw))]
            items.append(_Outputs({"logits": out["logits"][i : i + 1], "pred_masks": masks}))
        return items

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """Semantic: ``post_process_semantic_segmentation``; instances: ``post_process_instance_segmentation``."""
        opts: PanopticOptions = batch.options
        results: list[Any] = []
        targets = _targets(batch)
        for item, image, target in zip(self._per_image(outputs, batch), batch.images, targets, strict=True):
            size = [target]
            h, w = int(image.shape[0]), int(image.shape[1])
            if task is Task.SEGMENT_SEMANTIC:
                m = self.processor.post_process_semantic_segmentation(item, target_sizes=size)[0]
                label_map = m.detach().cpu().numpy().astype(np.int32)[:h, :w]
                results.append(
                    SemanticMask(label_map=label_map, class_names=self.class_names, metadata=self.meta(image))
                )
                continue
            r = self.processor.post_process_instance_segmentation(
                item,
                threshold=opts.threshold,
                mask_threshold=opts.mask_threshold,
                overlap_mask_area_threshold=opts.overlap_mask_area_threshold,
                target_sizes=size,
            )[0]
            results.append(self._instances(r, image, opts.max_detections))
        return results

    def _instances(
        self, r: dict[str, Any], image: np.ndarray, max_detections: int | None = None
    ) -> InstanceMasks:
        h, w = image.shape[:2]
        seg = r["segmentation"].detach().cpu().numpy()[:h, :w]  # without any thin-image padding
        segments = [s for s in r["segments_info"] if (seg == s["id"]).any()]  # transformers' order (by query)
        segments = [
            segments[i] for i in _keep_best(np.array([float(s["score"]) for s in segments]), max_detections)
        ]
        segments.sort(key=lambda s: -float(s["score"]))  # most confident first (stable: ties by query)
        if not segments:
            extra = self.meta(image).model_dump(exclude={"image_shape"})
            return InstanceMasks.empty(image.shape[:2], **extra)
        masks = np.stack([seg == s["id"] for s in segments])
        boxes = np.zeros((len(segments), 4), np.float32)
        for i, m in enumerate(masks):  # tight pixel boxes around each mask (x2, y2 exclusive)
            ys, xs = np.nonzero(m)
            if len(xs):
                boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        ids = np.array([int(s["label_id"]) for s in segments], np.int64)
        return InstanceMasks(
            xyxy=boxes,
            confidence=np.array([float(s["score"]) for s in segments], np.float32),
            class_id=ids,
            class_name=tuple(self.class_name(i) for i in ids),
            mask=masks.astype(bool),
            metadata=self.meta(image),
        )


# -- classification --------------------------------------------------------------------------------
class ClassificationBackend(_HFBackend, Classifies):
    """Any ``AutoModelForImageClassification`` checkpoint (ViT, ConvNeXt, ResNet ...): softmax top-k."""

    offers_bf16 = True
    name = "vit"
    kind = "vit"
    tasks = (Task.CLASSIFY,)
    Options = ClassificationOptions
    model_class = "AutoModelForImageClassification"

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """Softmax over the logits, then the ``top_k`` most probable classes."""
        logits = self._outputs(outputs)["logits"]
        k = min(batch.options.top_k, int(logits.shape[-1]))
        probs, ids = torch.softmax(logits, dim=-1).topk(k, dim=-1)
        results = []
        for p, i, image in zip(probs.cpu().numpy(), ids.cpu().numpy(), batch.images, strict=True):
            results.append(
                Classifications(
                    class_id=i.astype(np.int64),
                    confidence=p.astype(np.float32),
                    class_name=tuple(self.class_name(c) for c in i),
                    metadata=self.meta(image),
                )
            )
        return results


def size_kwargs(name: str, opts: HFOptions, processor_size: Any) -> dict[str, Any]:
    """The image processor's ``size=`` for the size options (``{}``: the processor's own)."""
    if opts.image_size is not None:
        h, w = (opts.image_size, opts.image_size) if isinstance(opts.image_size, int) else opts.image_size
        return {"size": {"height": h, "width": w}}
    if opts.shortest_edge is None and opts.longest_edge is None:
        return {}
    current = {k: v for k, v in dict(processor_size).items() if v is not None}
    if "shortest_edge" not in current:
        raise InvalidOptionError(
            f"Backend {name!r} resizes to a fixed size {current}; set image_size=(height, width) "
            "instead of shortest_edge/longest_edge."
        )
    size = {"shortest_edge": opts.shortest_edge or current["shortest_edge"]}
    longest = opts.longest_edge or current.get("longest_edge")
    if longest is not None:
        size["longest_edge"] = max(longest, size["shortest_edge"])
    return {"size": size}
