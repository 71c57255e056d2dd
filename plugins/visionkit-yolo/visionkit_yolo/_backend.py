"""YOLO backends on top of ultralytics' networks, with visionkit's own three stages.

preprocess   letterbox exactly like ultralytics' predictor (``LetterBox``: same resize, rounding and 114
             padding), written straight into one NHWC uint8 batch buffer so the model gets a
             channels-last tensor without the permute/contiguous/flip copies ``predict`` makes.
forward      the fused network only (``_Net``); swappable for another runtime through ``export_spec``.
postprocess  ultralytics' own ops (``nms.non_max_suppression``, ``ops.scale_boxes``,
             ``ops.process_mask_native`` ...) mapped back to the original image pixels.

Batches: on CPU, images whose rect letterbox shapes differ run as one forward pass per shape, so a
batch gives the same results as one image at a time. On cuda/mps (or with ``pad_batch=True``) every
image of a batch is letterboxed to one shape (the elementwise largest rect shape: ultralytics' square
for a batch that mixes orientations), goes up as uint8, is normalised on the device, and runs in one
forward; NMS and the mapping back to image pixels then run for the whole batch at once on the device,
with one copy to the host.

Loading is safe by default: a ``.pt`` goes through ``torch.load(weights_only=True)`` against ultralytics'
allow-list of model classes and a model yaml is built without ``eval`` (ultralytics' restricted mode);
anything else raises :class:`visionkit.UnsafeWeightsError` unless ``trust_pickle=True``.

Threads and precision: the detect/segment heads are decoded here (``_DecodeNet``) rather than by the
head itself, which caches anchors for the last input shape on the module (two threads with two shapes
mix them up) and, under bf16 autocast, decodes pixel boxes in bf16. Here the decode is stateless and
fp32 while the network body runs in the requested precision.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import logging
import os
import pickle
import re
import threading
import zipfile
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
    BackendUnavailableError,
    Batch,
    Classifications,
    Classifies,
    Detections,
    Detects,
    InstanceMasks,
    InvalidOptionError,
    LimitExceededError,
    SegmentsInstances,
    Task,
    UnsafeWeightsError,
    check_limit,
    load_image,
    resolve_weights,
)
from visionkit.autocast import autocast
from visionkit.devices import resolve_torch_device
from visionkit.export import ExportNotSupportedError, ExportSpec, tensors_fingerprint
from visionkit_yolo._options import MAX_DET_CEILING, ClassifyOptions, DetectOptions, SegmentOptions

__all__ = ["RTDETRDetector", "YoloClassifier", "YoloDetector", "YoloSegmenter"]

#: Seed of the random initialisation used for ``weights=None`` and model yamls (reproducible models).
RANDOM_SEED = 0
_PAD = 114  # ultralytics' letterbox padding value
_WEIGHT_SUFFIXES = (".pt", ".yaml", ".yml", ".onnx")
# An ultralytics release name: family, size letter, task tail (yolov8n-seg, yolo11s-cls ...).
_RELEASE_NAME = re.compile(r"^(yolov\d+|yolo\d+)([nsmlx]?)(-seg|-cls|-pose|-obb)?$")


def _name_hint(name: str) -> str:
    """For a release name missing its size letter or suffix: the names that exist ('' otherwise)."""
    path = Path(name)
    match = _RELEASE_NAME.match(path.stem.lower() if path.suffix.lower() == ".pt" else path.name.lower())
    if match is None or path.parent != Path("."):
        return ""
    family, size, tail = match.group(1), match.group(2), match.group(3) or ""
    if not size:
        names = ", ".join(f"{family}{s}{tail}.pt" for s in "nsmlx")
        return f"{name!r} names no model size; the ultralytics checkpoints are {names} (n is the smallest)."
    return "" if path.suffix else f"Did you mean {name + '.pt'!r}?"


_HINT = (
    "Official Ultralytics checkpoints are published at https://github.com/ultralytics/assets/releases; "
    "any ultralytics .pt, model .yaml (random init) or .onnx export works."
)
_TRUST = (
    "Load only files you trust; if you trust this one, pass trust_pickle=True "
    "(visionkit.load(..., trust_pickle=True); CLI: --trust-pickle)."
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


def _load_checkpoint(path: Path, trust: bool) -> torch.nn.Module:
    """An ultralytics ``.pt`` as a float eval model: ``weights_only`` against the allow-list unless trusted.

    Mirrors ``ultralytics.nn.tasks.load_checkpoint`` (which takes the safe mode only from the process-wide
    ``ULTRALYTICS_SAFE_LOAD``) with the mode chosen per load.
    """
    if not trust and not _safe_mode_available():
        raise _unsafe(
            f"Checkpoint {str(path)!r}", "can only be loaded as a full pickle by this torch (< 2.6)"
        )
    try:
        ckpt, _ = ul_tasks.torch_safe_load(str(path), safe_only=not trust)
    except Exception as exc:
        chain: list[BaseException] = []
        e: BaseException | None = exc
        while e is not None and len(chain) < 8:
            chain.append(e)
            e = e.__cause__ or e.__context__
        refused = any(isinstance(c, pickle.UnpicklingError) for c in chain)
        if not trust and refused and zipfile.is_zipfile(path):
            # A readable torch archive whose pickle names a global outside the allow-list.
            try:
                names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            except Exception:  # the listing is only for the message
                names = []
            foreign = sorted(n for n in names if not n.startswith(("ultralytics.", "torch.", "collections.")))
            listing = f" ({', '.join(foreign[:5])})" if foreign else ""
            raise _unsafe(
                f"Checkpoint {str(path)!r}",
                f"references code outside ultralytics' allow-list of model classes{listing}",
            ) from exc
        raise BackendError(
            f"ultralytics could not load checkpoint {str(path)!r}: {type(exc).__name__}: {exc}"
            + ("" if trust else f" (loaded with weights_only=True; {_TRUST})")
        ) from exc
    candidate = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(candidate, torch.nn.Module):
        raise BackendError(f"Checkpoint {str(path)!r} holds no ultralytics model under 'model' or 'ema'.")
    model: Any = candidate.float()
    if ckpt.get("modelopt") and hasattr(ul_tasks, "restore_qat"):  # QAT checkpoint: its fake-quant modules
        ul_tasks.restore_qat(model, ckpt["modelopt"])
    model.args = {**ul_tasks.DEFAULT_CFG_DICT, **(ckpt.get("train_args") or {})}
    model.pt_path = str(path)
    model.task = getattr(model, "task", None) or ul_tasks.guess_model_task(model)
    if not hasattr(model, "stride"):
        model.stride = torch.tensor([32.0])
    model = model.eval()
    for m in model.modules():  # as ultralytics' load_checkpoint
        if hasattr(m, "inplace"):
            m.inplace = True
        elif isinstance(m, torch.nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
    return model


# -- safe loading ---------------------------------------------------------------------------------------
def _safe_mode_available() -> bool:
    """Ultralytics' restricted loading (weights_only + its class allow-list, eval-free yamls) works here."""
    safe = getattr(ul_tasks, "_SafeLoad", None)
    return bool(getattr(safe, "SUPPORTED", False)) and hasattr(safe, "_local")


@contextlib.contextmanager
def _restricted_build() -> Iterator[None]:
    """Build models on this thread with ultralytics' restricted ``parse_model`` (no ``eval``).

    Ultralytics turns it on per thread while it unpickles a checkpoint (``_SafeLoad.loading``); a yaml
    build needs the same flag without a file, so it is set here, for this thread only.
    """
    local = ul_tasks._SafeLoad._local
    before = getattr(local, "active", False)
    local.active = True
    try:
        yield
    finally:
        local.active = before


def _unsafe(what: str, reason: str) -> UnsafeWeightsError:
    return UnsafeWeightsError(f"{what} {reason}, so loading it could run code. {_TRUST}")


def _read_yaml(cfg: str, example: str = "yolov8n.yaml") -> dict[str, Any]:
    """An ultralytics model yaml (name or path) as a dict; a missing one is an :class:`InvalidOptionError`."""
    try:
        return dict(ul_tasks.yaml_model_load(cfg))
    except FileNotFoundError as exc:
        raise InvalidOptionError(
            f"Model yaml {cfg!r} not found: give a path or an ultralytics config name such as {example!r}."
        ) from exc


def _seeded_build(cls: type[torch.nn.Module], d: dict[str, Any], cfg: str, trust: bool) -> torch.nn.Module:
    """``cls(d)`` randomly initialised with a fixed seed, without ``eval`` unless ``trust``.

    Untrusted yamls are built with ultralytics' restricted parser: ``activation:`` must be a plain
    ``nn.<Class>(literals)`` and every layer a known module, instead of going through ``eval``.
    Every YOLO model class (closed-set and open-vocabulary) is built here.
    """
    if not trust and not _safe_mode_available():
        raise _unsafe(
            f"Model yaml {cfg!r}",
            "can only be built with eval() by this ultralytics/torch (no restricted mode: needs torch >= 2.6)",
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        try:
            with contextlib.nullcontext() if trust else _restricted_build():
                model: Any = cls(d, verbose=False)
        except TypeError as exc:
            if trust or "restricted" not in str(exc):
                raise
            raise _unsafe(
                f"Model yaml {cfg!r}",
                "names an activation or layer outside ultralytics' restricted set (plain torch.nn classes "
                f"and ultralytics layers; activation: {d.get('activation')!r})",
            ) from exc
    model.task = ul_tasks.guess_model_task(d)
    model.args = {"imgsz": None}
    return model.eval()


def _build_from_yaml(cfg: str, trust: bool = False) -> torch.nn.Module:
    """A randomly initialised closed-set ultralytics model (detect, segment, classify, RT-DETR) from a yaml."""
    d = _read_yaml(cfg)
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
    return _seeded_build(cls, d, cfg, trust)


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


def _plain_head(model: Any) -> bool:
    """The head is ultralytics' own Detect/Segment with NMS outputs, which ``_DecodeNet`` decodes itself."""
    from ultralytics.nn.modules.head import Detect, Segment

    head: Any = model.model[-1] if hasattr(model, "model") else None
    return (
        type(head) in (Detect, Segment)
        and not head.end2end
        and isinstance(head.f, list)
        and all(hasattr(m, "f") and hasattr(m, "i") for m in model.model)
    )


class _DecodeNet(torch.nn.Module):
    """A Detect/Segment network whose head outputs are decoded here: fp32, and without mutable state.

    Same outputs as ``_Net`` (``preds`` or ``(preds, protos)``). The body and the head's convolutions run
    in whatever precision is in force (bf16 autocast, fp16 weights); the numerically sensitive tail (DFL
    softmax, anchor decode to pixels, score sigmoid, concat) runs in fp32 with autocast off: bf16 keeps
    about 3 significant digits, too few for 0-640 pixel coordinates. Anchors are cached per feature
    shape in a dict rather than on the head, so concurrent calls with different shapes cannot mix them.
    """

    def __init__(self, model: Any, segment: bool) -> None:
        super().__init__()
        self.model = model
        self.segment = segment
        head = model.model[-1]
        self.dfl = copy.deepcopy(head.dfl).float()  # fp32 even when the model runs in fp16
        self._grids: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def _anchors(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(2, A) anchor centres in grid units and (1, A) strides, fp32, for these feature shapes."""
        dev = feats[0].device
        key = (str(dev), *(tuple(f.shape[2:]) for f in feats))
        grid = self._grids.get(key)
        if grid is None:
            points, strides = [], []
            for f, stride in zip(feats, self.model.model[-1].stride.tolist(), strict=True):
                h, w = f.shape[2:]
                sy, sx = torch.meshgrid(
                    torch.arange(h, device=dev, dtype=torch.float32) + 0.5,
                    torch.arange(w, device=dev, dtype=torch.float32) + 0.5,
                    indexing="ij",
                )
                points.append(torch.stack((sx, sy), -1).view(-1, 2))
                strides.append(torch.full((h * w, 1), float(stride), device=dev))
            grid = (torch.cat(points).T.contiguous(), torch.cat(strides).T.contiguous())
            if len(self._grids) > 64:  # bounded: shapes are bounded by max_imgsz anyway
                self._grids.clear()
            self._grids[key] = grid
        return grid

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        layers = model.model
        x: Any = images
        y: list[Any] = []
        for m in layers[:-1]:  # ultralytics' BaseModel._predict_once, minus the head
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in model.save else None)
        head = layers[-1]
        feats = [x if j == -1 else y[j] for j in head.f]
        raw = head.forward_head(feats, **head.one2many)  # the head's convolutions, any precision
        protos = head.proto(feats[0]) if self.segment else None
        with torch.autocast(feats[0].device.type, enabled=False):
            anchors, strides = self._anchors(feats)
            boxes = head.decode_bboxes(self.dfl(raw["boxes"].float()), anchors.unsqueeze(0)) * strides
            parts = [boxes, raw["scores"].float().sigmoid()]
            if self.segment:
                parts.append(raw["mask_coefficient"].float())
            preds = torch.cat(parts, 1)
        if protos is not None:
            return preds, protos.float()
        return preds


class _OnnxNet:
    """An ultralytics ``.onnx`` export run by onnxruntime; returns numpy arrays shaped like ``_Net``'s."""

    def __init__(self, path: Path, device: torch.device, backend: str = "yolo") -> None:
        try:
            import onnxruntime as ort
        except ModuleNotFoundError as exc:
            # a missing library, not a bad option: the same error load() gives for any missing dependency
            raise BackendUnavailableError(
                f"{backend} (to run {path.name!r})", ["onnxruntime"], "pip install 'visionkit-yolo[onnx]'"
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


def _top_per_image(image: torch.Tensor, score: torch.Tensor, k: int, n_images: int) -> torch.Tensor:
    """Indices of the ``k`` best scores of every image, image by image, best first (no Python loop)."""
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.sort(image[order], stable=True).indices]
    img = image[order]
    counts = torch.bincount(img, minlength=n_images)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(len(order), device=order.device) - starts[img]
    return order[rank < k]


def _batched_nms(
    preds: torch.Tensor,
    conf: float,
    iou: float,
    classes: Sequence[int] | None,
    agnostic: bool,
    max_det: int,
    nc: int,
    max_nms: int = 30000,
    max_wh: int = 7680,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ultralytics' ``non_max_suppression`` (best class per box) for a whole batch in one NMS call.

    Returns the image index of each kept row and the rows ``(x1, y1, x2, y2, score, class, extra...)`` in
    input pixels, image by image, best first. Boxes are offset by class exactly as ultralytics does (in
    fp32), then by image in float64, where the offsets are exact, so images never suppress each other.
    """
    import torchvision

    n_images = preds.shape[0]
    p = preds.transpose(1, 2)  # (B, anchors, 4 + nc + extra)
    score, cls = p[..., 4 : 4 + nc].max(-1)
    keep = score > conf
    if classes is not None:
        keep &= torch.isin(cls, torch.tensor(list(classes), device=cls.device))
    image, anchor = keep.nonzero(as_tuple=True)
    rows, score, cls = p[image, anchor], score[image, anchor], cls[image, anchor].float()
    if len(image) > max_nms:  # as ultralytics: at most max_nms candidates per image, best first
        top = _top_per_image(image, score, max_nms, n_images)
        image, rows, score, cls = image[top], rows[top], score[top], cls[top]
    box = ops.xywh2xyxy(rows[:, :4])
    shifted = (box + cls[:, None] * (0 if agnostic else max_wh)).double()
    shifted += (image.double() * float((nc + 1) * max_wh + max_wh))[:, None]
    kept = torchvision.ops.nms(shifted, score.double(), iou)
    kept = kept[_top_per_image(image[kept], score[kept], max_det, n_images)]
    det = torch.cat([box[kept], score[kept, None], cls[kept, None], rows[kept, 4 + nc :]], 1)
    return image[kept], det


def _scale_boxes_batched(
    boxes: torch.Tensor, image: torch.Tensor, input_hw: tuple[int, int], sizes: Sequence[tuple[int, ...]]
) -> torch.Tensor:
    """``ops.scale_boxes`` + clipping for rows of many images at once (same fp32 arithmetic)."""
    h, w = input_hw
    table = []
    for oh, ow in (s[:2] for s in sizes):  # ultralytics' scale_boxes, per image, on the host
        gain = min(h / oh, w / ow)
        new_h, new_w = max(round(oh * gain), 1), max(round(ow * gain), 1)
        pad_x, pad_y = round((w - new_w) / 2 - 0.1), round((h - new_h) / 2 - 0.1)
        table.append((pad_x, pad_y, new_w / ow, new_h / oh, ow, oh))
    t = torch.tensor(table, dtype=torch.float32, device=boxes.device)[image]
    out = boxes.clone()
    out[:, [0, 2]] = ((out[:, [0, 2]] - t[:, 0:1]) / t[:, 2:3]).clamp(min=0).minimum(t[:, 4:5])
    out[:, [1, 3]] = ((out[:, [1, 3]] - t[:, 1:2]) / t[:, 3:4]).clamp(min=0).minimum(t[:, 5:6])
    return out


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

    native_runtime: ClassVar[str] = "torch"

    def __init__(
        self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any
    ) -> None:
        super().__init__(weights=weights, device=device, precision=precision, **options)
        # plan: every check that needs no weights, so a refused request costs nothing
        self.torch_device = resolve_torch_device(self.device)
        self._check_precision(precision)
        self._check_limits(self.options)
        self._forward_lock = threading.Lock()
        self._plain_head = False
        self._channels_last = False
        self._onnx: _OnnxNet | None = None
        self._weights_file: Path | None = None
        self._weights_id = ""
        #: The network takes square inputs only (a fixed-shape ONNX file): letterbox square.
        self._square_only = False
        self.is_rtdetr = False
        # build: load the weights, read what they are, and set up the network that forward runs
        with _quiet():
            model: Any = self._load_model(weights)
        if self._onnx is not None:
            self._adopt_onnx(self._onnx)
        else:
            assert model is not None
            self._read_model(model)
            self._place_model(model)
        self._check_imgsz(self.options)

    def _check_precision(self, precision: str) -> None:
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

    def _adopt_onnx(self, onnx: _OnnxNet) -> None:
        """An ultralytics ``.onnx`` export: its metadata says what it is; onnxruntime runs it."""
        self.model_task = onnx.task
        self.names = onnx.names
        self.stride = onnx.stride
        self.end2end = onnx.end2end
        self.default_imgsz = onnx.imgsz
        self._square_only = not onnx.dynamic_hw
        self._net: Callable[[torch.Tensor], Any] = onnx
        self._check_task(self.model_task)

    def _read_model(self, model: Any) -> None:
        """What an ultralytics torch model is: task (checked), class names, stride, head, training size."""
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

    def _place_model(self, model: Any) -> None:
        """Fuse, move to the device in the requested precision and layout, and wrap what forward runs."""
        if hasattr(model, "fuse"):
            with _quiet():
                model = model.fuse(verbose=False)
        model = model.to(self.torch_device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if self.precision == "fp16":
            model = model.half()
        elif self.torch_device.type == "cpu":
            # oneDNN's NHWC convolutions are the fast path on x86 CPUs (ultralytics does the same).
            model = model.to(memory_format=torch.channels_last)
        #: Feed the network NHWC (CPU) or NCHW (cuda/mps: the model's own layout, as ultralytics does).
        self._channels_last = self.torch_device.type == "cpu"
        self.model = model
        segment = self.model_task == "segment"
        #: True when ``_DecodeNet`` decodes the head (stateless, fp32 tail; vectorised batch NMS possible).
        self._plain_head = self.model_task != "classify" and _plain_head(model)
        if self._plain_head:
            self._net = _DecodeNet(model, segment=segment)
        else:
            # RT-DETR, end-to-end (YOLOv10/26) and classify heads run as ultralytics built them; those that
            # cache per-shape state on the module are serialised by this lock.
            self._net = _Net(model, segment=segment)

    # -- loading helpers ----------------------------------------------------------------------------
    def _load_model(self, weights: Any) -> torch.nn.Module | None:
        if weights is None:
            self._weights_id = f"random-{Path(self.default_yaml).stem}-seed{RANDOM_SEED}"
            return _build_from_yaml(self.default_yaml, trust=self.options.trust_pickle)
        name = os.fspath(weights)
        suffix = Path(name).suffix.lower()
        if suffix not in _WEIGHT_SUFFIXES:
            raise InvalidOptionError(
                f"Weights {name!r} must be an ultralytics checkpoint (.pt), a model yaml (.yaml) or an ONNX "
                f"export (.onnx), but got suffix {suffix or '(none)'!r}. {_name_hint(name)}".rstrip()
            )
        if suffix in (".yaml", ".yml"):
            self._weights_id = f"random-{Path(name).stem}-seed{RANDOM_SEED}"
            return _build_from_yaml(name, trust=self.options.trust_pickle)
        path = resolve_weights(
            name,
            download=_download if suffix == ".pt" else None,
            download_from="ultralytics release assets (github.com/ultralytics/assets)",
            hint=" ".join(filter(None, (_name_hint(name), _HINT))),
        )
        self._weights_file = path
        if suffix == ".onnx":
            self._onnx = _OnnxNet(path, self.torch_device, self.name)
            return None
        # A .pt checkpoint is a pickle: only trusted ones are unpickled in full (see _load_checkpoint).
        return _load_checkpoint(path, trust=self.options.trust_pickle)

    def _check_task(self, task: str) -> None:
        if task not in self.accepts:
            raise InvalidOptionError(
                f"Weights {os.fspath(self.weights)!r} hold an ultralytics {task!r} model, but backend "
                f"{self.name!r} needs one of: {', '.join(self.accepts)}. "
                f"Use {_BACKEND_FOR_TASK.get(task, 'another backend')} for it."
            )

    def _imgsz(self, options: Any) -> int:
        return int(options.imgsz or self.default_imgsz)

    @staticmethod
    def _check_limits(options: Any) -> None:
        """The documented limits: ``imgsz <= max_imgsz`` and ``max_det <= MAX_DET_CEILING``."""
        if options.imgsz is not None:
            check_limit("max_imgsz", options.imgsz, options.max_imgsz, what="imgsz")
        max_det = getattr(options, "max_det", None)
        if max_det is not None and max_det > MAX_DET_CEILING:
            raise LimitExceededError(
                "max_det",
                max_det,
                MAX_DET_CEILING,
                f"A YOLO backend returns at most {MAX_DET_CEILING} detections per image; ask for fewer.",
            )

    def _check_imgsz(self, options: Any) -> None:
        size = self._imgsz(options)
        self._check_limits(options)
        check_limit("max_imgsz", size, options.max_imgsz, what="imgsz (the checkpoint's training size)")
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
        if "trust_pickle" in overrides:
            raise InvalidOptionError(
                "Option 'trust_pickle' applies when weights are loaded; pass it to visionkit.load(...), "
                "not per call."
            )
        opts = super().with_options(overrides)
        if overrides:
            self._check_imgsz(opts)
        return opts

    # -- forward (the swappable runtime) -------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        # an ONNX file runs in onnxruntime: nothing to autocast
        return autocast(self.precision if self._onnx is None else "fp32", self.torch_device)

    @torch.inference_mode()
    def forward(self, inputs: Any) -> Any:
        """Run the network; a list of inputs (one per letterbox shape) gives a list of outputs."""
        lock = contextlib.nullcontext() if self._plain_head or self._onnx else self._forward_lock
        with lock, self._autocast():
            out = [self._net(x) for x in inputs] if isinstance(inputs, list) else self._net(inputs)
        if self.torch_device.type == "cuda":
            # kernels run asynchronously: wait here, so the stage timings tell the truth
            torch.cuda.synchronize(self.torch_device)
        return out

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
        """The fused network with a dynamic batch, height and width, for another runtime.

        Anchors are computed in the graph from the input's shape, so the exported runtime takes the
        same rect letterbox as the torch path (no square padding of 4:3 photos). Static INT8 calibrated
        on these inputs works at any height and width (measured: rect AP 0.4185 vs 0.419 square).
        """
        if self._onnx is not None:
            raise ExportNotSupportedError(
                f"Backend {self.name!r} already runs the ONNX file {str(self._weights_file)!r}; "
                "load the .pt checkpoint to export it."
            )
        imgsz = self._imgsz(self.options)
        model = copy.deepcopy(self.model).float().to("cpu").to(memory_format=torch.contiguous_format)
        head = model.model[-1]
        # dynamic: anchors from the traced input shape, never a cached constant of an earlier forward
        head.export, head.format, head.dynamic = True, "onnx", True
        segment = self.model_task == "segment"
        net = _Net(model, segment=segment).eval()
        outputs = ["output0", "output1"] if segment else ["output0"]

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
            dynamic_axes=(
                {name: {0: "batch"} for name in ["images", *outputs]}
                if self.model_task == "classify"  # a square centre crop: nothing to gain
                else {
                    "images": {0: "batch", 2: "height", 3: "width"},
                    "output0": {0: "batch", 2: "anchors"},
                    **({"output1": {0: "batch", 2: "proto_h", 3: "proto_w"}} if segment else {}),
                }
            ),
            # The head's tail stays float: a detector's DFL decode and concat of pixel boxes with 0-1
            # scores; a classifier's softmax (uint8 probabilities would tie the top classes).
            sensitive_outputs=["output0"],
            calibration_inputs=calibration_inputs,
        )


class _Letterboxed(_YoloBase):
    """Detect / segment: letterbox preprocessing and NMS postprocessing."""

    def _pads(self, options: Any) -> bool:
        """One padded forward per batch (accelerators), or one forward per letterbox shape (CPU)."""
        if options.pad_batch is not None:
            return bool(options.pad_batch)
        return self.torch_device.type != "cpu"

    def preprocess(self, images: list[np.ndarray], options: Any) -> Batch[Any]:
        """Letterbox like ultralytics' predictor into NHWC uint8 buffers: one per shape, or one padded."""
        imgsz = self._imgsz(options)
        rect = options.rect and not self._square_only and not self.is_rtdetr

        def place(
            im: np.ndarray, new_shape: int | tuple[int, int], auto: bool
        ) -> tuple[tuple[int, int], Any]:
            lb = LetterBox(new_shape, auto=auto, scale_fill=self.is_rtdetr, stride=self.stride)
            p = lb.get_params({"img": im})
            new_w, new_h = p["new_unpad"]
            return (new_h + p["top"] + p["bottom"], new_w + p["left"] + p["right"]), p

        placed = [place(im, imgsz, rect) for im in images]
        padded = self._pads(options) and len({shape for shape, _ in placed}) > 1
        if padded:
            # One shape for the batch: the largest rect height and width. Every image keeps its scale (its
            # long side is imgsz either way); a batch mixing orientations gets ultralytics' square.
            common = (max(sh[0] for sh, _ in placed), max(sh[1] for sh, _ in placed))
            placed = [place(im, common, False) for im in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (shape, _) in enumerate(placed):
            groups.setdefault(shape, []).append(i)
        tensors: list[torch.Tensor] = []
        metas: list[dict[str, Any]] = [{} for _ in images]
        for (h, w), idx in groups.items():
            buf = np.full((len(idx), h, w, 3), _PAD, np.uint8)
            for j, i in enumerate(idx):
                im, p = images[i], placed[i][1]
                new_w, new_h = p["new_unpad"]
                top, left = p["top"], p["left"]
                resized = (
                    im
                    if im.shape[1::-1] == (new_w, new_h)
                    else cv2.resize(im, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
                )
                buf[j, top : top + new_h, left : left + new_w] = resized
                metas[i] = {"input_shape": (h, w), "group": len(tensors), "row": j}
            tensors.append(self._upload(buf))
        inputs: Any = tensors[0] if len(tensors) == 1 else tensors
        extra = {"groups": list(groups.values()), "padded": self._pads(options)}
        return Batch(images, inputs, metas, options, extra=extra)

    def _upload(self, buf: np.ndarray) -> torch.Tensor:
        """NHWC uint8 bytes to the device (4x fewer bytes than float), normalised there.

        Viewed as NCHW, the NHWC bytes are a channels-last tensor with no permute/contiguous copy.
        """
        x = torch.from_numpy(buf).to(self.torch_device, non_blocking=True).permute(0, 3, 1, 2)
        x = x.half() if self.precision == "fp16" else x.float()
        x = x.div_(255.0)
        return x if self._channels_last else x.contiguous()

    def _per_group(self, outputs: Any, batch: Batch[Any]) -> list[Any]:
        n_groups = len(batch.extra["groups"])
        return list(outputs) if n_groups > 1 else [outputs]

    @torch.inference_mode()
    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """NMS with ultralytics' ops, boxes (and masks) mapped back to each original image."""
        opts = batch.options
        want_masks = task is Task.SEGMENT_INSTANCES
        groups = batch.extra["groups"]
        if (
            batch.extra.get("padded")
            and len(groups) == 1
            and not self.is_rtdetr
            and not self.end2end
            and self.torch_device.type != "mps"  # the batched NMS runs in float64, which MPS lacks
        ):
            return self._postprocess_batched(outputs, batch, want_masks)
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

    def _postprocess_batched(self, outputs: Any, batch: Batch[Any], want_masks: bool) -> list[Any]:
        """The whole padded batch at once on its device: one NMS, one box mapping, one copy to the host."""
        opts = batch.options
        preds, protos = (outputs[0], outputs[1]) if isinstance(outputs, (tuple, list)) else (outputs, None)
        preds = _as_tensor(preds)
        input_hw = batch.metas[0]["input_shape"]
        nc = len(self.names) if self.model_task == "segment" else preds.shape[1] - 4
        image, det = _batched_nms(
            preds, opts.conf, opts.iou, opts.classes, opts.agnostic_nms, opts.max_det, nc
        )
        boxes = _scale_boxes_batched(det[:, :4], image, input_hw, [im.shape[:2] for im in batch.images])
        host = torch.cat([boxes, det[:, 4:6]], 1).cpu().numpy()
        counts = np.bincount(image.cpu().numpy(), minlength=len(batch.images))
        results: list[Any] = []
        start = 0
        for i, (im, n) in enumerate(zip(batch.images, counts.tolist(), strict=True)):
            rows, sel = host[start : start + n], slice(start, start + n)
            start += n
            masks = None
            if want_masks:
                oh, ow = im.shape[:2]
                if n == 0 or protos is None:
                    masks = np.zeros((n, oh, ow), dtype=bool)
                else:
                    proto = _as_tensor(protos[i])
                    m = self._masks(proto, det[sel], boxes[sel], input_hw, (oh, ow), opts)
                    keep = m.amax((-2, -1)) > 0  # ultralytics drops detections whose mask is empty
                    masks = m.cpu().numpy().astype(bool)
                    keep_np = keep.cpu().numpy()
                    if not keep_np.all():
                        rows, masks = rows[keep_np], masks[keep_np]
            results.append(self._make_result(rows[:, :4], rows[:, 4], rows[:, 5], masks, im, input_hw))
        return results

    def _masks(
        self,
        proto: torch.Tensor,
        det: torch.Tensor,
        boxes: torch.Tensor,
        input_hw: tuple[int, int],
        image_hw: tuple[int, int],
        opts: Any,
    ) -> torch.Tensor:
        """(n, H, W) uint8 masks at the image resolution, as ultralytics builds them."""
        if opts.retina_masks:
            return ops.process_mask_native(proto, det[:, 6:], boxes, image_hw)
        m = ops.process_mask(proto, det[:, 6:], det[:, :4], input_hw, upsample=True)
        return (ops.scale_masks(m[None].float(), image_hw)[0] > 0.5).to(torch.uint8)

    def _make_result(
        self,
        xyxy: np.ndarray,
        confidence: np.ndarray,
        class_id: np.ndarray,
        masks: np.ndarray | None,
        image: np.ndarray,
        input_hw: tuple[int, int],
    ) -> Detections:
        ids = class_id.astype(np.int64)
        fields: dict[str, Any] = {
            "xyxy": xyxy.astype(np.float32, copy=False),
            "confidence": confidence.astype(np.float32, copy=False),
            "class_id": ids,
            "class_name": tuple(self.names.get(int(c), str(int(c))) for c in ids),
            "metadata": self.meta(image, input_shape=input_hw),
        }
        if masks is not None:
            fields["mask"] = masks
            return InstanceMasks(**fields)
        return Detections(**fields)

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
            else:
                masks = self._masks(proto, det, boxes, input_hw, (oh, ow), opts)
            keep = masks.amax((-2, -1)) > 0 if len(det) else torch.zeros(0, dtype=torch.bool)
            if not bool(keep.all()):  # ultralytics drops detections whose mask is empty
                det, boxes, masks = det[keep], boxes[keep], masks[keep]
        return self._make_result(
            boxes.float().cpu().numpy(),
            det[:, 4].float().cpu().numpy(),
            det[:, 5].long().cpu().numpy(),
            None if masks is None else masks.cpu().numpy().astype(bool),
            image,
            input_hw,
        )


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
