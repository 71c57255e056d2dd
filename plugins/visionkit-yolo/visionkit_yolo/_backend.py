"""YOLO backends on top of ultralytics' networks, with visionkit's own three stages.

preprocess   letterbox exactly like ultralytics' predictor (``LetterBox``: same resize, rounding and 114
             padding), written straight into one NHWC uint8 batch buffer so the model gets a
             channels-last tensor without the permute/contiguous/flip copies ``predict`` makes.
forward      the fused network only (``_Net``); swappable for another runtime through ``export_spec``.
postprocess  ultralytics' own ops (``nms.non_max_suppression``, ``ops.scale_boxes``,
             ``ops.process_mask_native`` ...) mapped back to the original image pixels.

Images whose rect letterbox shapes differ are run as one forward pass per shape, so a batch gives
the same results as one image at a time (ultralytics instead pads a mixed batch to a square).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

# Ultralytics reads these once, at import: keep it offline (no DNS probe, no update checks, no
# telemetry), quiet, and never pip-installing. A value the user already set wins.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")

import cv2
import numpy as np
import torch
from ultralytics.data.augment import LetterBox, classify_transforms
from ultralytics.nn import tasks as ul_tasks
from ultralytics.utils import nms, ops

from visionkit import (
    Backend,
    BackendError,
    Batch,
    Classifications,
    Classifies,
    Detections,
    Detects,
    InstanceMasks,
    InvalidOptionError,
    SegmentsInstances,
    Task,
    load_image,
    resolve_weights,
)
from visionkit.export import ExportNotSupportedError, ExportSpec, tensors_fingerprint
from visionkit_yolo._options import ClassifyOptions, DetectOptions, SegmentOptions

__all__ = ["RTDETRDetector", "YoloClassifier", "YoloDetector", "YoloSegmenter"]

#: Seed of the random initialisation used for ``weights=None`` and model yamls (reproducible models).
RANDOM_SEED = 0
_PAD = 114  # ultralytics' letterbox padding value
_WEIGHT_SUFFIXES = (".pt", ".yaml", ".yml", ".onnx")
_HINT = (
    "Official Ultralytics checkpoints are published at https://github.com/ultralytics/assets/releases; "
    "any ultralytics .pt, model .yaml (random init) or .onnx export works."
)


# -- loading ------------------------------------------------------------------------------------------
def _download(name: str) -> str:
    """Fetch an official ultralytics release asset into ultralytics' weights directory."""
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    if Path(name).name != name or name not in GITHUB_ASSETS_NAMES:
        raise LookupError(f"{name!r} is not an ultralytics release asset name")
    target = Path(SETTINGS["weights_dir"]) / name
    if target.exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return str(attempt_download_asset(str(target)))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence ultralytics' model summaries while building/loading (even if it was imported first)."""
    logger = logging.getLogger("ultralytics")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError(f"Device {device!r} was requested, but torch sees no CUDA device.")
    return dev


def _build_from_yaml(cfg: str) -> torch.nn.Module:
    """A randomly initialised ultralytics model from a yaml name or path, reproducibly seeded."""
    try:
        d = ul_tasks.yaml_model_load(cfg)
    except FileNotFoundError as exc:
        raise InvalidOptionError(
            f"Model yaml {cfg!r} not found: give a path or an ultralytics config name such as 'yolov8n.yaml'."
        ) from exc
    head = str(d.get("head", [[None, None, ""]])[-1][2])
    task = ul_tasks.guess_model_task(d)
    classes: dict[str, type[torch.nn.Module]] = {
        "detect": ul_tasks.DetectionModel,
        "segment": ul_tasks.SegmentationModel,
        "classify": ul_tasks.ClassificationModel,
    }
    if "RTDETR" in head:
        cls: type[torch.nn.Module] = ul_tasks.RTDETRDetectionModel
    elif task in classes:
        cls = classes[task]
    else:
        raise InvalidOptionError(
            f"Model yaml {cfg!r} builds a {task!r} model; visionkit-yolo supports {sorted(classes)}."
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model: Any = cls(d, verbose=False)
    model.task = task
    model.args = {"imgsz": None}
    return model.eval()


class _Net(torch.nn.Module):
    """The ultralytics network reduced to what ``forward`` returns: ``preds`` or ``(preds, protos)``."""

    def __init__(self, model: torch.nn.Module, segment: bool) -> None:
        super().__init__()
        self.model = model
        self.segment = segment

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.model(images)
        if self.segment:
            # eval: ((preds, protos), raw); export mode: (preds, protos)
            if isinstance(out[0], (tuple, list)):
                out = out[0]
            return out[0], out[1]
        return out[0] if isinstance(out, (tuple, list)) else out


class _OnnxNet:
    """An ultralytics ``.onnx`` export run by onnxruntime; returns numpy arrays shaped like ``_Net``'s."""

    def __init__(self, path: Path, device: torch.device) -> None:
        try:
            import onnxruntime as ort
        except ModuleNotFoundError as exc:
            raise InvalidOptionError(
                f"Loading {path.name!r} needs onnxruntime, which is not installed: pip install onnxruntime"
            ) from exc
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BackendError(f"onnxruntime could not open {str(path)!r}: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if "names" not in meta or "task" not in meta:
            raise InvalidOptionError(
                f"{path.name!r} is not an ultralytics ONNX export (its metadata has no 'names'/'task'); "
                "export it with `yolo export format=onnx`."
            )
        self.task = meta["task"]
        self.names = {int(k): str(v) for k, v in ast.literal_eval(meta["names"]).items()}
        self.stride = int(float(meta.get("stride", 32)))
        imgsz = ast.literal_eval(meta.get("imgsz", "[640, 640]"))
        self.imgsz = int(max(imgsz)) if isinstance(imgsz, (list, tuple)) else int(imgsz)
        self.end2end = str(meta.get("end2end", "False")) == "True"
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.static_batch = isinstance(inp.shape[0], int)
        self.dynamic_hw = not (isinstance(inp.shape[2], int) and isinstance(inp.shape[3], int))
        self.fp16 = "float16" in inp.type

    def __call__(self, images: torch.Tensor) -> Any:
        x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float16 if self.fp16 else np.float32)
        chunks = [x[i : i + 1] for i in range(len(x))] if self.static_batch and len(x) > 1 else [x]
        outs = [self.session.run(None, {self.input_name: c}) for c in chunks]
        merged = [np.concatenate([o[k] for o in outs]).astype(np.float32) for k in range(len(outs[0]))]
        return (merged[0], merged[1]) if len(merged) > 1 and self.task == "segment" else merged[0]


def _as_tensor(x: Any) -> torch.Tensor:
    """Runtime outputs may be numpy (onnxruntime) or torch; postprocess works on float32 torch tensors."""
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    return t.float()


# -- the backends ---------------------------------------------------------------------------------------
class _YoloBase(Backend[Any]):
    """Shared loading, device/precision handling and forward of the YOLO backends."""

    #: Task the network must have been trained for (ultralytics' names), checked at load.
    accepts: ClassVar[tuple[str, ...]] = ("detect",)
    #: Model yaml used for ``weights=None`` (random init, offline).
    default_yaml: ClassVar[str] = "yolov8n.yaml"

    model: Any
    model_task: str
    names: dict[int, str]
    stride: int
    end2end: bool
    default_imgsz: int
    is_rtdetr: bool

    def __init__(
        self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any
    ) -> None:
        super().__init__(weights=weights, device=device, precision=precision, **options)
        self.torch_device = _resolve_device(self.device)
        if precision not in ("fp32", "fp16", "bf16"):
            raise InvalidOptionError(
                f"Backend {self.name!r} runs in precision 'fp32', 'fp16' (CUDA/MPS) or 'bf16' (CPU), "
                f"but got {precision!r}."
            )
        if precision == "fp16" and self.torch_device.type == "cpu":
            raise InvalidOptionError(
                "Precision 'fp16' needs a CUDA or MPS device; on CPU use precision='bf16' (fast on CPUs with "
                "AMX/AVX512-BF16) or 'fp32'."
            )
        self._onnx: _OnnxNet | None = None
        self._weights_file: Path | None = None
        self._weights_id = ""
        #: Set by :meth:`export_spec`: the graph has a fixed square input, so letterbox square.
        self._square_only = False
        self.is_rtdetr = False
        with _quiet():
            model: Any = self._load_model(weights)
        if self._onnx is not None:
            self.model_task = self._onnx.task
            self.names = self._onnx.names
            self.stride = self._onnx.stride
            self.end2end = self._onnx.end2end
            self.default_imgsz = self._onnx.imgsz
            self._square_only = not self._onnx.dynamic_hw
            self._net: Callable[[torch.Tensor], Any] = self._onnx
            self._check_task(self.model_task)
            self._check_imgsz(self.options)
            return
        assert model is not None
        self.model_task = str(getattr(model, "task", None) or ul_tasks.guess_model_task(model))
        self._check_task(self.model_task)
        self.is_rtdetr = isinstance(model, ul_tasks.RTDETRDetectionModel)
        names = getattr(model, "names", None) or {}
        if isinstance(names, (list, tuple)):
            names = dict(enumerate(names))
        self.names = {int(k): str(v) for k, v in names.items()}
        self.stride = int(max(model.stride.max().item(), 32)) if hasattr(model, "stride") else 32
        if self.model_task == "classify":
            self.stride = 1
        head = model.model[-1] if hasattr(model, "model") else None
        self.end2end = bool(getattr(head, "end2end", False))
        args = getattr(model, "args", {}) or {}
        trained = args.get("imgsz") if isinstance(args, dict) else getattr(args, "imgsz", None)
        fallback = 224 if self.model_task == "classify" else 640
        self.default_imgsz = int(
            max(trained) if isinstance(trained, (list, tuple)) else (trained or fallback)
        )
        if hasattr(model, "fuse"):
            with _quiet():
                model = model.fuse(verbose=False)
        model = model.to(self.torch_device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if precision == "fp16":
            model = model.half()
        elif self.torch_device.type == "cpu":
            # oneDNN's NHWC convolutions are the fast path on x86 CPUs (ultralytics does the same).
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._net = _Net(model, segment=self.model_task == "segment")
        self._check_imgsz(self.options)

    # -- loading helpers ----------------------------------------------------------------------------
    def _load_model(self, weights: Any) -> torch.nn.Module | None:
        if weights is None:
            self._weights_id = f"random-{Path(self.default_yaml).stem}-seed{RANDOM_SEED}"
            return _build_from_yaml(self.default_yaml)
        name = os.fspath(weights)
        suffix = Path(name).suffix.lower()
        if suffix not in _WEIGHT_SUFFIXES:
            raise InvalidOptionError(
                f"Weights {name!r} must be an ultralytics checkpoint (.pt), a model yaml (.yaml) or an ONNX "
                f"export (.onnx), but got suffix {suffix or '(none)'!r}."
            )
        if suffix in (".yaml", ".yml"):
            self._weights_id = f"random-{Path(name).stem}-seed{RANDOM_SEED}"
            return _build_from_yaml(name)
        path = resolve_weights(
            name,
            download=_download if suffix == ".pt" else None,
            download_from="ultralytics release assets (github.com/ultralytics/assets)",
            hint=_HINT,
        )
        self._weights_file = path
        if suffix == ".onnx":
            self._onnx = _OnnxNet(path, self.torch_device)
            return None
        try:
            # A .pt checkpoint is a pickle: loading it can run code. Only load files you trust.
            model, _ = ul_tasks.load_checkpoint(str(path), device="cpu", fuse=False)
        except Exception as exc:
            raise BackendError(
                f"ultralytics could not load checkpoint {str(path)!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return model

    def _check_task(self, task: str) -> None:
        if task not in self.accepts:
            raise InvalidOptionError(
                f"Weights {os.fspath(self.weights)!r} hold an ultralytics {task!r} model, but backend "
                f"{self.name!r} needs one of: {', '.join(self.accepts)}. "
                f"Use {_BACKEND_FOR_TASK.get(task, 'another backend')} for it."
            )

    def _imgsz(self, options: Any) -> int:
        return int(options.imgsz or self.default_imgsz)

    def _check_imgsz(self, options: Any) -> None:
        size = self._imgsz(options)
        if self._onnx is not None and not self._onnx.dynamic_hw and size != self._onnx.imgsz:
            raise InvalidOptionError(
                f"imgsz must be {self._onnx.imgsz} for {Path(str(self._weights_file)).name!r} (a fixed-shape "
                "ONNX export), "
                f"but got {size}."
            )
        if self.stride > 1 and size % self.stride:
            raise InvalidOptionError(
                f"imgsz must be a multiple of the model stride {self.stride}, but got {size} "
                f"(try {size + self.stride - size % self.stride})."
            )

    def with_options(self, overrides: dict[str, Any]) -> Any:
        opts = super().with_options(overrides)
        if "imgsz" in overrides:
            self._check_imgsz(opts)
        return opts

    # -- forward (the swappable runtime) -------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16" and self._onnx is None:
            return torch.autocast(self.torch_device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def forward(self, inputs: Any) -> Any:
        """Run the network; a list of inputs (one per letterbox shape) gives a list of outputs."""
        with self._autocast():
            if isinstance(inputs, list):
                return [self._net(x) for x in inputs]
            return self._net(inputs)

    def _weights_key(self) -> str:
        if self._weights_file is None:
            # a random init (or weights edited in place): hash the tensors, so two networks never share
            # a cached export under the same seed-derived name
            return f"{self._weights_id}-{tensors_fingerprint(self.model)}"
        h = hashlib.sha256()
        with open(self._weights_file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    # -- export ----------------------------------------------------------------------------------------
    def export_spec(self) -> ExportSpec:
        """The fused network at a fixed square ``imgsz`` input, for another runtime.

        The exported graph has a static ``imgsz x imgsz`` input (dynamic batch), so calling this pins
        a detector's letterbox to square (as ``rect=False``): pre- and post-processing then fit
        whatever runtime replaces :meth:`forward`. A classifier's centre crop is square already.
        """
        if self._onnx is not None:
            raise ExportNotSupportedError(
                f"Backend {self.name!r} already runs the ONNX file {str(self._weights_file)!r}; "
                "load the .pt checkpoint to export it."
            )
        imgsz = self._imgsz(self.options)
        model = copy.deepcopy(self.model).float().to("cpu").to(memory_format=torch.contiguous_format)
        head = model.model[-1]
        head.export, head.format, head.dynamic = True, "onnx", False
        segment = self.model_task == "segment"
        net = _Net(model, segment=segment).eval()
        outputs = ["output0", "output1"] if segment else ["output0"]
        self._square_only = True

        def calibration_inputs(images: Sequence[Any]) -> tuple[torch.Tensor]:
            square = "rect" in type(self.options).model_fields
            opts = self.options.model_copy(update={"rect": False}) if square else self.options
            batch = self.preprocess([load_image(im) for im in images], opts)
            x = batch.inputs if isinstance(batch.inputs, torch.Tensor) else torch.cat(batch.inputs)
            return (x.float().cpu().contiguous(),)

        return ExportSpec(
            module=net,
            example_inputs=(torch.zeros(1, 3, imgsz, imgsz),),
            input_names=["images"],
            output_names=outputs,
            key=f"yolo-{self.model_task}-{self._weights_key()}-imgsz{imgsz}",
            dynamic_axes={name: {0: "batch"} for name in ["images", *outputs]},
            # The head's tail stays float: a detector's DFL decode and concat of pixel boxes with 0-1
            # scores; a classifier's softmax (uint8 probabilities would tie the top classes).
            sensitive_outputs=["output0"],
            calibration_inputs=calibration_inputs,
        )


class _Letterboxed(_YoloBase):
    """Detect / segment: letterbox preprocessing and NMS postprocessing."""

    def preprocess(self, images: list[np.ndarray], options: Any) -> Batch[Any]:
        """Letterbox like ultralytics' predictor; one NHWC buffer (and forward) per distinct shape."""
        imgsz = self._imgsz(options)
        rect = options.rect and not self._square_only and not self.is_rtdetr
        placed: list[tuple[tuple[int, int], np.ndarray, dict[str, Any]]] = []
        for im in images:
            lb = LetterBox(imgsz, auto=rect, scale_fill=self.is_rtdetr, stride=self.stride)
            p = lb.get_params({"img": im})
            new_w, new_h = p["new_unpad"]
            shape = (new_h + p["top"] + p["bottom"], new_w + p["left"] + p["right"])
            placed.append((shape, im, p))
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (shape, _, _) in enumerate(placed):
            groups.setdefault(shape, []).append(i)
        tensors: list[torch.Tensor] = []
        metas: list[dict[str, Any]] = [{} for _ in images]
        for (h, w), idx in groups.items():
            buf = np.full((len(idx), h, w, 3), _PAD, np.uint8)
            for j, i in enumerate(idx):
                _, im, p = placed[i]
                new_w, new_h = p["new_unpad"]
                top, left = p["top"], p["left"]
                resized = (
                    im
                    if im.shape[1::-1] == (new_w, new_h)
                    else cv2.resize(im, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
                )
                buf[j, top : top + new_h, left : left + new_w] = resized
                metas[i] = {"input_shape": (h, w), "group": len(tensors), "row": j}
            # NHWC bytes viewed as NCHW: a channels-last tensor, with no permute/contiguous copy.
            x = torch.from_numpy(buf).to(self.torch_device, non_blocking=True).permute(0, 3, 1, 2)
            x = x.half() if self.precision == "fp16" else x.float()
            tensors.append(x.div_(255.0))
        inputs: Any = tensors[0] if len(tensors) == 1 else tensors
        return Batch(images, inputs, metas, options, extra={"groups": list(groups.values())})

    def _per_group(self, outputs: Any, batch: Batch[Any]) -> list[Any]:
        n_groups = len(batch.extra["groups"])
        return list(outputs) if n_groups > 1 else [outputs]

    @torch.inference_mode()
    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """NMS with ultralytics' ops, boxes (and masks) mapped back to each original image."""
        opts = batch.options
        want_masks = task is Task.SEGMENT_INSTANCES
        results: list[Any] = [None] * len(batch.images)
        for out, idx in zip(self._per_group(outputs, batch), batch.extra["groups"], strict=True):
            preds, protos = (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, None)
            preds = _as_tensor(preds)
            h, w = batch.metas[idx[0]]["input_shape"]
            dets = self._decode(preds, opts, (h, w))
            for j, i in enumerate(idx):
                image = batch.images[i]
                proto = _as_tensor(protos[j]) if want_masks and protos is not None else None
                results[i] = self._result(dets[j], proto, image, (h, w), opts, want_masks)
        return results

    def _decode(self, preds: torch.Tensor, opts: Any, input_hw: tuple[int, int]) -> list[torch.Tensor]:
        """Per image ``(n, 6 + extra)``: x1, y1, x2, y2 (input pixels), score, class, mask coefficients."""
        if self.is_rtdetr:
            return self._decode_rtdetr(preds, opts, input_hw)
        return nms.non_max_suppression(
            preds,
            opts.conf,
            opts.iou,
            list(opts.classes) if opts.classes is not None else None,
            opts.agnostic_nms,
            max_det=opts.max_det,
            nc=len(self.names) if self.model_task == "segment" else 0,
            end2end=self.end2end,
        )

    def _decode_rtdetr(self, preds: torch.Tensor, opts: Any, input_hw: tuple[int, int]) -> list[torch.Tensor]:
        # As ultralytics' RTDETRPredictor: queries are already top-k; normalised cxcywh, score, label.
        out = []
        h, w = input_hw
        for p in preds:
            bbox, score, label = p.split((4, 1, 1), dim=-1)
            keep = score.squeeze(-1) > opts.conf
            if opts.classes is not None:
                keep &= (label == torch.tensor(opts.classes, device=label.device)).any(1)
            d = torch.cat([ops.xywh2xyxy(bbox), score, label], dim=-1)[keep][: opts.max_det]
            d[:, [0, 2]] *= w  # to input pixels, so scale_boxes maps them like any other detector's
            d[:, [1, 3]] *= h
            out.append(d)
        return out

    def _result(
        self,
        det: torch.Tensor,
        proto: torch.Tensor | None,
        image: np.ndarray,
        input_hw: tuple[int, int],
        opts: Any,
        want_masks: bool,
    ) -> Detections:
        oh, ow = image.shape[:2]
        boxes = det[:, :4].clone()
        if self.is_rtdetr:  # stretched, not letterboxed
            boxes[:, [0, 2]] *= ow / input_hw[1]
            boxes[:, [1, 3]] *= oh / input_hw[0]
            ops.clip_boxes(boxes, (oh, ow))
        else:
            boxes = torch.as_tensor(ops.scale_boxes(input_hw, boxes, (oh, ow)))
        masks = None
        if want_masks:
            if len(det) == 0 or proto is None:
                masks = torch.zeros((len(det), oh, ow), dtype=torch.uint8)
            elif opts.retina_masks:
                masks = ops.process_mask_native(proto, det[:, 6:], boxes, (oh, ow))
            else:
                m = ops.process_mask(proto, det[:, 6:], det[:, :4], input_hw, upsample=True)
                masks = (ops.scale_masks(m[None].float(), (oh, ow))[0] > 0.5).to(torch.uint8)
            keep = masks.amax((-2, -1)) > 0 if len(det) else torch.zeros(0, dtype=torch.bool)
            if not bool(keep.all()):  # ultralytics drops detections whose mask is empty
                det, boxes, masks = det[keep], boxes[keep], masks[keep]
        ids = det[:, 5].long().cpu().numpy().astype(np.int64)
        fields: dict[str, Any] = {
            "xyxy": boxes.float().cpu().numpy().astype(np.float32, copy=False),
            "confidence": det[:, 4].float().cpu().numpy().astype(np.float32, copy=False),
            "class_id": ids,
            "class_name": tuple(self.names.get(int(c), str(int(c))) for c in ids),
            "metadata": self.meta(image, input_shape=input_hw),
        }
        if want_masks:
            assert masks is not None
            fields["mask"] = masks.cpu().numpy().astype(bool)
            return InstanceMasks(**fields)
        return Detections(**fields)


class YoloDetector(_Letterboxed, Detects):
    """Ultralytics YOLO detector: boxes, scores and class names in original-image pixels.

    Args:
        weights: an ultralytics ``.pt`` checkpoint (path, or a name looked up in ``VISIONKIT_WEIGHTS``
            then downloaded from the ultralytics release assets), a model ``.yaml`` (random init,
            offline), an ultralytics ``.onnx`` export, or ``None`` (random ``yolov8n.yaml``).
            ``.pt`` files are pickles: load only files you trust.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``.
        precision: ``"fp32"``, ``"fp16"`` (CUDA/MPS) or ``"bf16"`` (CPU autocast).
        **options: see :class:`visionkit_yolo._options.DetectOptions`.
    """

    name = "yolo"
    tasks = (Task.DETECT,)
    Options = DetectOptions
    accepts: ClassVar[tuple[str, ...]] = ("detect", "segment")  # a seg checkpoint detects too
    default_yaml = "yolov8n.yaml"


class RTDETRDetector(YoloDetector):
    """RT-DETR through ultralytics (NMS-free); same API and options as :class:`YoloDetector`."""

    name = "yolo-rtdetr"
    accepts: ClassVar[tuple[str, ...]] = ("detect",)
    default_yaml = "rtdetr-l.yaml"


class YoloSegmenter(_Letterboxed, Detects, SegmentsInstances):
    """Ultralytics YOLO instance segmentation: detections plus masks at the original resolution."""

    name = "yolo-seg"
    tasks = (Task.DETECT, Task.SEGMENT_INSTANCES)
    Options = SegmentOptions
    accepts = ("segment",)
    default_yaml = "yolov8n-seg.yaml"


class YoloClassifier(_YoloBase, Classifies):
    """Ultralytics YOLO classifier: the top-k classes of each image."""

    name = "yolo-cls"
    tasks = (Task.CLASSIFY,)
    Options = ClassifyOptions
    accepts = ("classify",)
    default_yaml = "yolov8n-cls.yaml"

    def _transforms(self, imgsz: int) -> Any:
        """Ultralytics' choice: the checkpoint's own transforms when their size matches, else the default."""
        own = getattr(getattr(self, "model", None), "transforms", None)
        size = getattr(own.transforms[0], "size", None) if own is not None else None
        size = (size, size) if isinstance(size, int) else size
        if own is not None and size is not None and tuple(size) == (imgsz, imgsz):
            return own
        return classify_transforms(imgsz)

    def preprocess(self, images: list[np.ndarray], options: Any) -> Batch[Any]:
        """Resize (shortest side) + centre crop + normalise, with ultralytics' torchvision transforms."""
        from PIL import Image

        tf = self._transforms(self._imgsz(options))
        x = torch.stack([tf(Image.fromarray(im)) for im in images]).to(self.torch_device)
        x = x.half() if self.precision == "fp16" else x.float()
        return Batch(images, x, [{} for _ in images], options, extra={"groups": [list(range(len(images)))]})

    @torch.inference_mode()
    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """Top-k of the softmax probabilities the network already outputs."""
        probs = _as_tensor(outputs[0] if isinstance(outputs, (tuple, list)) else outputs)
        k = min(batch.options.top_k, probs.shape[1])
        conf, ids = probs.topk(k, dim=1)
        out = []
        for c, i, im in zip(conf.cpu().numpy(), ids.cpu().numpy(), batch.images, strict=True):
            out.append(
                Classifications(
                    class_id=i.astype(np.int64),
                    confidence=c.astype(np.float32),
                    class_name=tuple(self.names.get(int(j), str(int(j))) for j in i),
                    metadata=self.meta(im),
                )
            )
        return out


_BACKEND_FOR_TASK = {
    "detect": "visionkit.load('yolo', weights=...)",
    "segment": "visionkit.load('yolo-seg', weights=...)",
    "classify": "visionkit.load('yolo-cls', weights=...)",
}
