"""Run a deploy artifact (see :mod:`visionkit_onnx._artifact`) with onnxruntime, numpy and OpenCV only.

``visionkit.load("model.onnx")`` or ``visionkit.load("onnx", weights="model.onnx")``. The engine is a
seam: an ONNX Runtime session, or an :class:`OvEngine` (OpenVINO) for an IR written by
``visionkit export NAME --runtime openvino`` (``load("model.xml")``) or for a deploy ``.onnx`` loaded
with ``engine="openvino"``; the pre- and post-processing below are the same for both. Nothing here
imports torch, torchvision, ultralytics, transformers or segment_anything: a subprocess test proves it.
Each kind reproduces its source backend's pre- and post-processing with numpy, OpenCV and Pillow:

* YOLO (detect, segment): the torch path's letterbox (same rounding, OpenCV's bilinear, pad 114), NMS in
  the graph, masks from the prototypes (:func:`yolo_masks`, ultralytics' ``process_mask_native`` /
  ``process_mask`` + ``scale_masks``); results match ``load("yolo", precision="int8")`` on one network.
* Classifiers and semantic segmenters (YOLO, torchvision): shortest-side resize with the exporting
  library's own antialiased bilinear (torch's kernels reproduced in numpy, :func:`_resize`), centre crop,
  normalise; logits resized with OpenCV (torch's ``align_corners=False``), softmax, argmax.
* torchvision detectors and Mask R-CNN: the graph holds the whole model; pixels scaled to 0-1 here.
* DETR, RT-DETR, D-FINE: the image processor's resize, rescale and normalise, then transformers'
  ``post_process_object_detection`` (softmax without the no-object class, or sigmoid + top-k); no NMS.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from visionkit import (
    Backend,
    BackendError,
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

__all__ = [
    "ENGINES",
    "ClassifyDeployOptions",
    "DeployOptions",
    "DeployedClassifier",
    "DeployedDetector",
    "DeployedDetr",
    "DeployedSegmenter",
    "DeployedSemanticSegmenter",
    "DeployedTorchvisionDetector",
    "DeployedTorchvisionSegmenter",
    "DetrDeployOptions",
    "OvEngine",
    "SegmentDeployOptions",
    "SemanticDeployOptions",
    "TvDetectDeployOptions",
    "load_artifact",
    "open_engine",
    "read_metadata",
]

SCHEMA = 1  # the newest schema this reader understands (mirrors _artifact.SCHEMA, without importing onnx)
_REQUIRED = ("kind", "tasks", "class_names", "input", "normalize", "output", "defaults", "precision")


class _FileSpec:
    """``backend.spec`` narrowed to what this file holds: one ``onnx`` registration serves every kind of
    artifact, so its tasks are the union; a loaded file's spec lists only the file's own tasks."""

    tasks: ClassVar[tuple[Task, ...]]
    #: Set by each deploy class: the engine running the file and the name of its image input.
    session: Any
    input_name: str

    @property
    def spec(self) -> Any:
        return self.__dict__.get("_file_spec")

    @spec.setter
    def spec(self, value: Any) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.replace(value, tasks=tuple(self.tasks))
        self.__dict__["_file_spec"] = value

    def _run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """``session.run`` (ONNX Runtime or the OpenVINO engine); a failure becomes one ``BackendError``
        naming the engine and the input's shape."""
        try:
            return list(self.session.run(names, feed))
        except Exception as exc:
            shape = list(feed[self.input_name].shape)
            raise BackendError(
                f"{_engine_name(self.session)} failed on input {shape}: {type(exc).__name__}: {exc}"
            ) from exc


class DeployOptions(BackendOptions):
    """Options of a deployed detector; ``conf``/``iou``/``max_det`` default to the values in the file."""

    conf: float | None = Field(
        None, ge=0.0, le=1.0, description="Confidence threshold (default: the file's)."
    )
    iou: float | None = Field(None, ge=0.0, le=1.0, description="NMS IoU threshold (default: the file's).")
    max_det: int | None = Field(None, ge=1, description="Most detections per image (default: the file's).")
    classes: tuple[int, ...] | None = Field(None, description="Keep only these class ids.")
    agnostic_nms: bool = Field(False, description="Suppress overlapping boxes across classes too.")
    imgsz: int | None = Field(
        None,
        ge=32,
        description="Inference size (longest side, a multiple of the stride; default: the file's).",
    )
    rect: bool = Field(True, description="Pad only to a multiple of the stride (as the torch path).")
    threads: int | None = Field(
        None,
        ge=1,
        description="Engine threads: ONNX Runtime intra-op, or OpenVINO INFERENCE_NUM_THREADS "
        "(default: one per core).",
    )


def read_metadata(path: Path, session: Any) -> dict[str, Any]:
    """The artifact's description; a clear error when the file is not a visionkit deploy artifact.

    ``session`` is an ONNX Runtime session or an :class:`OvEngine` (both answer ``get_modelmeta()``).
    """
    props = session.get_modelmeta().custom_metadata_map
    if "visionkit" not in props or "visionkit.schema" not in props:
        have = ", ".join(sorted(props)) or "none"
        where = (
            "OpenVINO rt_info lacks 'visionkit/meta' and 'visionkit/schema'"
            if path.suffix.lower() == ".xml"
            else "ONNX metadata_props lack 'visionkit' and 'visionkit.schema'"
        )
        raise InvalidOptionError(
            f"{path.name!r} is not a visionkit deploy artifact: its {where} (it has: {have}). Export it with "
            f"`visionkit export NAME -o {path.name}` (needs torch and the source backend), or load an "
            "ultralytics export with load('yolo', weights=...)."
        )
    try:
        schema = int(props["visionkit.schema"])
        meta = json.loads(props["visionkit"])
    except ValueError as exc:
        raise InvalidOptionError(f"{path.name!r} has unreadable visionkit metadata: {exc}") from exc
    if schema > SCHEMA or schema < 1:
        raise InvalidOptionError(
            f"{path.name!r} uses visionkit artifact schema {schema}, but this visionkit-onnx reads schema "
            f"1 to {SCHEMA}; upgrade visionkit-onnx (or re-export the file with this version)."
        )
    missing = [k for k in _REQUIRED if k not in (meta if isinstance(meta, dict) else {})]
    if missing:
        raise InvalidOptionError(f"{path.name!r} metadata lacks {', '.join(missing)} (schema {schema}).")
    return dict(meta)


#: Engines that run a deploy artifact, by the name ``load(..., engine=...)`` takes.
ENGINES = ("onnxruntime", "openvino")
#: OpenVINO ``INFERENCE_PRECISION_HINT`` per artifact precision: INT8 keeps its float ops (the detection
#: head's tail) at f32, as the SDK's openvino runtime does; bf16 is a compile hint, not a different file.
_OV_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
        raise BackendError(f"ONNX Runtime could not open {str(path)!r}: {type(exc).__name__}: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class _ModelMeta:
    custom_metadata_map: dict[str, str]


class OvEngine:
    """An OpenVINO model behind the slice of ``onnxruntime.InferenceSession`` the deploy classes use:
    ``run(names, feeds)`` and ``get_modelmeta().custom_metadata_map``.

    Reads an OpenVINO IR written by visionkit-openvino's exporter (metadata in ``rt_info`` under
    ``visionkit/schema`` and ``visionkit/meta``) or a deploy ``.onnx`` (OpenVINO keeps its
    ``metadata_props`` under ``rt_info/framework``). :meth:`compile` then compiles it for the CPU with
    the file's precision hint, ``threads`` and one stream; one infer request, behind a lock, serves
    every call (a request is not safe to share between threads).
    """

    def __init__(self, path: Path, threads: int | None) -> None:
        try:
            import openvino as ov
        except ModuleNotFoundError as exc:
            from visionkit import BackendUnavailableError

            raise BackendUnavailableError("openvino", ["openvino"], "pip install visionkit-openvino") from exc
        import threading

        self.path, self.threads = path, threads
        self._core = ov.Core()
        self._version = ov.get_version()
        try:
            self._model: Any = self._core.read_model(str(path))
        except Exception as exc:
            raise BackendError(f"OpenVINO could not read {str(path)!r}: {type(exc).__name__}: {exc}") from exc
        props = {
            "visionkit.schema": self._rt("visionkit", "schema") or self._rt("framework", "visionkit.schema"),
            "visionkit": self._rt("visionkit", "meta") or self._rt("framework", "visionkit"),
        }
        self._props = {k: v for k, v in props.items() if v is not None}
        self._compiled: Any = None
        self._ports: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.settings: dict[str, Any] = {}

    def _rt(self, *keys: str) -> str | None:
        model = self._model
        return model.get_rt_info(list(keys)).astype(str) if model.has_rt_info(list(keys)) else None

    def get_modelmeta(self) -> _ModelMeta:
        """The artifact's metadata under onnxruntime's keys (``visionkit.schema``, ``visionkit``)."""
        return _ModelMeta(dict(self._props))

    def compile(self, meta: dict[str, Any]) -> None:
        """Compile for the CPU with the file's precision hint (``inference_precision``, else by
        ``precision``), ``threads`` (default: the CPUs this process may use) and one stream."""
        hint = str(meta.get("inference_precision") or _OV_HINTS.get(str(meta["precision"]), "f32"))
        config = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": self.threads or _cpus(),
            "NUM_STREAMS": 1,
        }
        try:
            self._compiled = self._core.compile_model(self._model, "CPU", config)
        except Exception as exc:
            raise BackendError(
                f"OpenVINO could not compile {str(self.path)!r}: {type(exc).__name__}: {exc}"
            ) from exc
        self._model = None  # the compiled model holds what runs; the read graph's memory goes back
        got = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        ran = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(got.get_type_name(), got.get_type_name())
        if hint == "bf16" and ran != "bf16":
            import warnings

            warnings.warn(
                f"{self.path.name!r} asks for bf16, which this CPU cannot run in OpenVINO; it runs {ran}. "
                "backend.runtime['inference_precision'] says what ran.",
                RuntimeWarning,
                stacklevel=4,
            )
        self.settings = {
            "inference_precision": ran,
            "requested_inference_precision": {"f32": "fp32"}.get(hint, hint),
            "threads": self._compiled.get_property("INFERENCE_NUM_THREADS"),
            "streams": self._compiled.get_property("NUM_STREAMS"),
            "openvino": self._version,
        }
        self._request = self._compiled.create_infer_request()
        self._ports = {}
        for port in self._compiled.outputs:
            for name in port.get_names():
                self._ports[name] = port

    def run(self, names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """onnxruntime's ``InferenceSession.run``: the named outputs (``None``: all) for these inputs."""
        if self._compiled is None:
            raise BackendError(f"{self.path.name!r} was not compiled (OvEngine.compile).")
        with self._lock:
            # share_inputs: no copy of the feed; outputs are fresh arrays the next call cannot overwrite
            res = self._request.infer(feeds, share_inputs=True, share_outputs=False)
            if names is None:
                return [res[port] for port in self._compiled.outputs]
            return [res[self._ports[n]] for n in names]


def _cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _engine_name(session: Any) -> str:
    return "OpenVINO" if isinstance(session, OvEngine) else "ONNX Runtime"


def open_engine(path: Path, engine: str, threads: int | None) -> Any:
    """An ONNX Runtime session or an (uncompiled) :class:`OvEngine` for ``path``."""
    if engine == "openvino":
        return OvEngine(path, threads)
    return _session(path, threads)


class DeployedDetector(_FileSpec, Backend[DeployOptions], Detects):
    """A YOLO detector artifact: letterbox in numpy/OpenCV, network + NMS in ONNX Runtime."""

    name: ClassVar[str] = "onnx"
    tasks: ClassVar[tuple[Task, ...]] = (Task.DETECT,)
    Options = DeployOptions

    def __init__(self, path: Path, session: Any, meta: dict[str, Any], **options: Any) -> None:
        super().__init__(weights=str(path), device="cpu", precision=str(meta["precision"]), **options)
        self.session, self.artifact = session, meta
        self.class_names = tuple(meta["class_names"])
        self.names = dict(enumerate(self.class_names))
        inp = meta["input"]
        self.input_name, self.stride, self.default_imgsz = inp["name"], int(inp["stride"]), int(inp["imgsz"])
        self.pad_value = int(inp.get("pad_value", 114))
        norm = meta["normalize"]
        self._scale = np.float32(norm.get("scale", 1 / 255))
        self.raw_name, self.selected_name = meta["output"]["raw"], meta["output"]["selected"]
        self.default_options = self.resolved(self.options)
        self.runtime = _describe(path, session, meta, self.options.threads)
        self._check_imgsz(self.options)

    def _imgsz(self, options: DeployOptions) -> int:
        return int(options.imgsz or self.default_imgsz)

    def _check_imgsz(self, options: DeployOptions) -> None:
        size = self._imgsz(options)
        if size % self.stride:
            raise InvalidOptionError(
                f"imgsz must be a multiple of the model stride {self.stride}, but got {size} "
                f"(try {size + self.stride - size % self.stride})."
            )

    def with_options(self, overrides: dict[str, Any]) -> DeployOptions:
        opts = super().with_options(overrides)
        if "threads" in overrides and overrides["threads"] != self.options.threads:
            raise InvalidOptionError("threads is fixed when the file is loaded: load(..., threads=N).")
        if "imgsz" in overrides:
            self._check_imgsz(opts)
        return opts

    def _letterbox(self, im: np.ndarray, imgsz: int, rect: bool) -> tuple[np.ndarray, dict[str, Any]]:
        import cv2

        h0, w0 = im.shape[:2]
        r = min(imgsz / h0, imgsz / w0)
        new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
        dw, dh = imgsz - new_w, imgsz - new_h
        if rect:
            dw, dh = dw % self.stride, dh % self.stride
        top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
        left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
        h, w = new_h + top + bottom, new_w + left + right
        buf = np.full((h, w, 3), self.pad_value, np.uint8)
        resized = (
            im
            if (w0, h0) == (new_w, new_h)
            else cv2.resize(im, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        )
        buf[top : top + new_h, left : left + new_w] = resized
        return buf, {"input_shape": (h, w), "size": (new_h, new_w), "pad": (left, top)}

    def resolved(self, options: DeployOptions) -> DeployOptions:
        """``options`` with the file's default thresholds where they are ``None``."""
        defaults = self.artifact["defaults"]
        fill = {k: defaults[k] for k in ("conf", "iou", "max_det") if getattr(options, k) is None}
        return options.model_copy(update=fill) if fill else options

    def preprocess(self, images: list[np.ndarray], options: DeployOptions) -> Batch[DeployOptions]:
        """Letterbox each image (rect by default) into an NCHW float32 feed, thresholds included."""
        opts = self.resolved(options)
        imgsz = self._imgsz(opts)
        offset = 0.0 if opts.agnostic_nms else float(self.artifact["output"].get("class_offset", 7680.0))
        thresholds = {
            "conf": np.array([opts.conf], np.float32),
            "iou": np.array([opts.iou], np.float32),
            # every candidate of the wanted classes survives to the numpy filter below
            "max_det": np.array([opts.max_det if opts.classes is None else 30000], np.int64),
            "class_offset": np.array([offset], np.float32),
        }
        feeds, metas = [], []
        for im in images:
            buf, meta = self._letterbox(im, imgsz, opts.rect)
            x = np.empty((1, 3, *buf.shape[:2]), np.float32)
            np.multiply(buf.transpose(2, 0, 1), self._scale, out=x[0], casting="unsafe")
            feeds.append({self.input_name: x, **thresholds})
            metas.append(meta)
        return Batch(images, feeds, metas, opts)

    def forward(self, inputs: Any) -> Any:
        """Run the network + NMS once per image (rect shapes differ); ``(raw, selected)`` per image."""
        return [self._run([self.raw_name, self.selected_name], feed) for feed in inputs]

    def _kept(
        self, raw: np.ndarray, sel: np.ndarray, im: np.ndarray, meta: dict[str, Any], opts: DeployOptions
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The kept anchors, best score first: boxes in input and in image pixels, scores, classes.

        Also the anchors' extra rows (a segmenter's mask coefficients), as ``(n, extra)``.
        """
        nc = len(self.class_names)
        idx = sel[:, 2]  # kept anchors (NonMaxSuppression's order)
        pred = raw[0][:, idx]  # (4 + classes + extra, kept)
        cls = pred[4 : 4 + nc].argmax(0)  # the first best class, as torch's max
        score = pred[4 + cls, np.arange(len(idx))]
        order = np.argsort(-score, kind="stable")
        if opts.classes is not None:
            order = order[np.isin(cls[order], opts.classes)]
        order = order[: opts.max_det]
        cx, cy, w, h = pred[:4, order]
        box_in = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        h0, w0 = im.shape[:2]
        new_h, new_w = meta["size"]
        left, top = meta["pad"]
        xyxy = box_in - np.array([left, top, left, top], np.float32)
        xyxy /= np.array([new_w / w0, new_h / h0, new_w / w0, new_h / h0], np.float32)
        np.clip(xyxy, 0, [w0, h0, w0, h0], out=xyxy)
        extra = pred[4 + nc :, order].T
        packed = np.concatenate([xyxy, box_in], 1).astype(np.float32)
        return packed, score[order].astype(np.float32), cls[order].astype(np.int64), extra

    def _detections(
        self, xyxy: np.ndarray, score: np.ndarray, ids: np.ndarray, im: np.ndarray, meta: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "xyxy": xyxy.astype(np.float32),
            "confidence": score,
            "class_id": ids,
            "class_name": tuple(self.class_names[int(i)] for i in ids),
            "metadata": self.meta(im, input_shape=meta["input_shape"]),
        }

    def postprocess(self, outputs: Any, batch: Batch[DeployOptions], task: Task) -> list[Any]:
        """Gather the kept anchors, best score first, then undo the letterbox."""
        results = []
        for (raw, sel, *_), im, meta in zip(outputs, batch.images, batch.metas, strict=True):
            packed, score, ids, _ = self._kept(raw, sel, im, meta, batch.options)
            results.append(Detections(**self._detections(packed[:, :4], score, ids, im, meta)))
        return results


class SegmentDeployOptions(DeployOptions):
    """Options of a deployed YOLO instance segmenter."""

    retina_masks: bool | None = Field(
        None,
        description="Upsample the prototype masks straight to the image resolution (default: the file's, "
        "as the exporting backend); False builds them at the inference size, then resizes to the image.",
    )


def _resize_stack(masks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``(n, h, w)`` float32 resized bilinearly (half-pixel centres, no antialias) to ``(n, *hw)``.

    OpenCV's ``INTER_LINEAR`` on float32 is torch's ``interpolate(mode="bilinear",
    align_corners=False)``; it takes at most 512 channels per call.
    """
    import cv2

    n = len(masks)
    out = np.empty((n, *hw), np.float32)
    for i in range(0, n, 512):
        chunk = np.ascontiguousarray(masks[i : i + 512].transpose(1, 2, 0))
        r = cv2.resize(chunk, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
        out[i : i + 512] = r.reshape(*hw, -1).transpose(2, 0, 1)
    return out


def _unpad(masks: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """ultralytics' ``scale_masks``: crop the letterbox padding, resize to ``image_hw`` (bilinear)."""
    mh, mw = masks.shape[1:]
    h0, w0 = image_hw
    if (mh, mw) == (h0, w0):
        return masks
    gain = min(mh / h0, mw / w0)
    pad_w, pad_h = (mw - max(round(w0 * gain), 1)) / 2, (mh - max(round(h0 * gain), 1)) / 2
    top, left = round(pad_h - 0.1), round(pad_w - 0.1)
    bottom, right = top + max(round(h0 * gain), 1), left + max(round(w0 * gain), 1)
    return _resize_stack(masks[:, top:bottom, left:right], image_hw)


def _crop(masks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """ultralytics' ``crop_mask``: zero every pixel outside its box (``x1 <= col < x2``, same for rows)."""
    _, h, w = masks.shape
    x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
    cols, rows = np.arange(w, dtype=np.float32)[None], np.arange(h, dtype=np.float32)[None]
    masks &= ((cols >= x1) & (cols < x2))[:, None, :]
    masks &= ((rows >= y1) & (rows < y2))[:, :, None]
    return masks


def yolo_masks(
    protos: np.ndarray,
    coeffs: np.ndarray,
    boxes: np.ndarray,
    boxes_in: np.ndarray,
    input_hw: tuple[int, int],
    image_hw: tuple[int, int],
    retina: bool,
) -> np.ndarray:
    """``(n, H, W)`` bool masks at the image resolution from YOLO protos, as the torch path builds them.

    The mask logits are ``coeffs @ protos`` at proto resolution (numpy); then, with ``retina``,
    ultralytics' ``process_mask_native`` (upsample by 1, 2 or 4 so the padding crops on whole pixels,
    crop the padding, resize to the image, threshold at 0, crop to the image-pixel boxes); without it,
    ``process_mask(upsample=True)`` (resize to the input, threshold, crop to the input-pixel boxes) then
    ``scale_masks`` (crop the padding, resize to the image, threshold at 0.5).
    """
    c, mh, mw = protos.shape
    n = len(coeffs)
    if n == 0:
        return np.zeros((0, *image_hw), bool)
    logits = (coeffs.astype(np.float32) @ protos.reshape(c, -1)).reshape(n, mh, mw)
    h0, w0 = image_hw
    if retina:
        gain = min(4 * mh / h0, 4 * mw / w0)
        pad = (4 * mh - max(round(h0 * gain), 1)) | (4 * mw - max(round(w0 * gain), 1))
        f = 4 // math.gcd(4, pad | pad // 2)
        if f > 1:
            logits = _resize_stack(logits, (mh * f, mw * f))
        # chunks bound the (n, H, W) float intermediate, as ultralytics does
        step = max(1, 16_000_000 // (h0 * w0 + f * f * mh * mw))
        masks = np.concatenate([_unpad(logits[i : i + step], image_hw) > 0 for i in range(0, n, step)])
        return _crop(masks, boxes)
    masks = _crop(_resize_stack(logits, input_hw) > 0, boxes_in)
    return _unpad(masks.astype(np.float32), image_hw) > 0.5


class DeployedSegmenter(DeployedDetector, SegmentsInstances):
    """A YOLO instance-segmentation artifact: the detector's path, plus masks from the prototypes."""

    tasks: ClassVar[tuple[Task, ...]] = (Task.DETECT, Task.SEGMENT_INSTANCES)
    Options = SegmentDeployOptions

    def __init__(self, path: Path, session: Any, meta: dict[str, Any], **options: Any) -> None:
        super().__init__(path, session, meta, **options)
        self.protos_name = meta["output"]["protos"]

    def resolved(self, options: DeployOptions) -> DeployOptions:
        opts = super().resolved(options)
        if getattr(opts, "retina_masks", False) is None:
            retina = bool(self.artifact["defaults"].get("retina_masks", True))
            opts = opts.model_copy(update={"retina_masks": retina})
        return opts

    def forward(self, inputs: Any) -> Any:
        """Network + NMS once per image: ``(raw, selected, protos)`` per image."""
        return [self._run([self.raw_name, self.selected_name, self.protos_name], feed) for feed in inputs]

    def postprocess(self, outputs: Any, batch: Batch[DeployOptions], task: Task) -> list[Any]:
        """Detections; for ``segment_instances`` also masks (detections with an empty mask dropped)."""
        if task is not Task.SEGMENT_INSTANCES:
            return super().postprocess(outputs, batch, task)
        opts = batch.options
        results = []
        for (raw, sel, protos), im, meta in zip(outputs, batch.images, batch.metas, strict=True):
            packed, score, ids, coeffs = self._kept(raw, sel, im, meta, opts)
            masks = yolo_masks(
                protos[0],
                coeffs,
                packed[:, :4],
                packed[:, 4:],
                meta["input_shape"],
                im.shape[:2],
                bool(getattr(opts, "retina_masks", True)),
            )
            keep = masks.any((1, 2))  # ultralytics drops detections whose mask is empty
            if not keep.all():
                packed, score, ids, masks = packed[keep], score[keep], ids[keep], masks[keep]
            fields = self._detections(packed[:, :4], score, ids, im, meta)
            results.append(InstanceMasks(**fields, mask=masks))
        return results


class ClassifyDeployOptions(BackendOptions):
    """Options of a deployed classifier."""

    top_k: int | None = Field(None, ge=1, description="Classes returned (default: the file's).")
    threads: int | None = Field(
        None,
        ge=1,
        description="Engine threads: ONNX Runtime intra-op, or OpenVINO INFERENCE_NUM_THREADS "
        "(default: one per core).",
    )


def _shortest_side(h: int, w: int, size: int, max_long: int | None) -> tuple[int, int]:
    """torchvision's ``resize(img, [size])`` output ``(h, w)``; a long side above ``max_long`` is
    scaled to it instead (the torchvision backends' ``max_imgsz`` guard)."""
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = size, int(size * long / short)  # torchvision's rounding
    if max_long is not None and new_long > max_long:
        new_short, new_long = max(1, int(max_long * size / new_long)), max_long
    return (new_short, new_long) if h <= w else (new_long, new_short)


def _aa_pass(img: np.ndarray, axis: int, out_size: int, fixed_point: bool) -> np.ndarray:
    """One separable pass of torch's antialiased bilinear resize (ATen's ``_upsample_bilinear2d_aa``):
    Pillow's triangle filter. ``fixed_point``: the uint8 kernel (int16 weights, rounded to uint8 after the
    pass); else the float kernel (float32, no rounding)."""
    in_size = img.shape[axis]
    if in_size == out_size:
        return img
    # the float kernel computes its weights in float32, the uint8 one in float64
    ft: Any = np.float64 if fixed_point else np.float32
    scale = ft(in_size) / ft(out_size)
    support, inv = (scale, ft(1.0) / scale) if scale >= 1.0 else (ft(1.0), ft(1.0))
    center = scale * (np.arange(out_size, dtype=ft) + ft(0.5))
    xmin = np.maximum((center - support + ft(0.5)).astype(np.int64), 0)
    xmax = np.minimum((center + support + ft(0.5)).astype(np.int64), in_size)
    k = np.arange(int((xmax - xmin).max()))[None]
    x = ((k + xmin[:, None]).astype(ft) - center[:, None] + ft(0.5)) * inv
    w = np.clip(ft(1.0) - np.abs(x), ft(0.0), None)
    w[k >= (xmax - xmin)[:, None]] = 0.0
    total = np.zeros((out_size, 1), ft)
    for j in range(k.shape[1]):  # sequential sums, as the kernel
        total[:, 0] += w[:, j]
    w = w / np.where(total == 0, ft(1.0), total)
    src = np.moveaxis(img, axis, 0)
    idx = np.minimum(xmin[:, None] + k, in_size - 1)
    shape = (-1, *([1] * (src.ndim - 1)))
    if not fixed_point:
        wf = w.astype(np.float32)
        accf = np.zeros((out_size, *src.shape[1:]), np.float32)
        for j in range(k.shape[1]):
            accf += wf[:, j].reshape(shape) * src[idx[:, j]]
        return np.moveaxis(accf, 0, axis)
    precision = 0  # the most fraction bits that keep the largest weight within int16
    while precision < 15 and int(0.5 + w.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    wi = np.trunc(0.5 + w * (1 << precision)).astype(np.int64)  # weights are >= 0
    acc = np.zeros((out_size, *src.shape[1:]), np.int64)
    for j in range(k.shape[1]):
        acc += wi[:, j].reshape(shape) * src[idx[:, j]]
    out = np.clip((acc + (1 << (precision - 1))) >> precision, 0, 255).astype(np.uint8)
    return np.moveaxis(out, 0, axis)


def _resize(im: np.ndarray, hw: tuple[int, int], how: str) -> np.ndarray:
    """Antialiased bilinear resize of an RGB uint8 image to ``hw``, as the exporting backend did it.

    ``how``: ``"torch-antialiased-bilinear-uint8"``: torch's uint8 kernel (transformers' processors,
    torchvision v2 on uint8 tensors); ``"torch-antialiased-bilinear-float"``: torch's float kernel, then
    rounded (torchvision's v1 ``resize``, used by the weights' preset transforms); both reproduced in
    numpy, pixel for pixel in the tests. ``"pil-bilinear"``: Pillow's ``BILINEAR`` (torchvision's PIL
    path, ultralytics' classifier transforms).
    """
    from PIL import Image

    if im.shape[:2] == tuple(hw):
        return im
    if how == "torch-antialiased-bilinear-uint8":
        return _aa_pass(_aa_pass(im, 1, hw[1], True), 0, hw[0], True)
    if how == "torch-antialiased-bilinear-float":
        out = _aa_pass(_aa_pass(im.astype(np.float32), 1, hw[1], False), 0, hw[0], False)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(im).resize((hw[1], hw[0]), Image.Resampling.BILINEAR))


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class DeployedClassifier(_FileSpec, Backend[ClassifyDeployOptions], Classifies):
    """A classifier artifact (YOLO or torchvision): resize + centre crop with Pillow (torchvision's
    filter), normalise, ORT, softmax when the graph returns logits, top-k."""

    name: ClassVar[str] = "onnx"
    tasks: ClassVar[tuple[Task, ...]] = (Task.CLASSIFY,)
    Options = ClassifyDeployOptions

    def __init__(self, path: Path, session: Any, meta: dict[str, Any], **options: Any) -> None:
        super().__init__(weights=str(path), device="cpu", precision=str(meta["precision"]), **options)
        self.session, self.artifact = session, meta
        self.class_names = tuple(meta["class_names"])
        inp, norm = meta["input"], meta["normalize"]
        self.input_name, self.raw_name = inp["name"], meta["output"]["raw"]
        self.resize_to, self.crop = int(inp["resize_to"]), tuple(inp["crop"])
        self.max_long = inp.get("max_long_side")
        self.interpolation = str(inp.get("interpolation", "pil-bilinear"))
        self.logits = meta["output"].get("decoding") == "logits"
        self.result_meta = {k: v for k, v in (meta.get("metadata") or {}).items() if v is not None}
        self._scale = np.float32(norm.get("scale", 1 / 255))
        self._mean = np.asarray(norm["mean"], np.float32).reshape(3, 1, 1)
        self._std = np.asarray(norm["std"], np.float32).reshape(3, 1, 1)
        self.runtime = _describe(path, session, meta, self.options.threads)

    def preprocess(
        self, images: list[np.ndarray], options: ClassifyDeployOptions
    ) -> Batch[ClassifyDeployOptions]:
        """Shortest side to ``resize_to`` (Pillow bilinear), centre crop, scale and normalise: NCHW."""
        ch, cw = self.crop
        x = np.empty((len(images), 3, ch, cw), np.float32)
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            new_h, new_w = _shortest_side(h, w, self.resize_to, self.max_long)
            resized = _resize(im, (new_h, new_w), self.interpolation)
            top, left = round((new_h - ch) / 2.0), round((new_w - cw) / 2.0)  # torchvision's centre crop
            crop = resized[top : top + ch, left : left + cw]
            x[i] = (crop.transpose(2, 0, 1) * self._scale - self._mean) / self._std
        top_k = options.top_k or int(self.artifact["defaults"]["top_k"])
        return Batch(images, x, [{} for _ in images], options.model_copy(update={"top_k": top_k}))

    def forward(self, inputs: Any) -> Any:
        """Class scores (probabilities or logits), one row per image."""
        return self._run([self.raw_name], {self.input_name: inputs})[0]

    def postprocess(self, outputs: Any, batch: Batch[ClassifyDeployOptions], task: Task) -> list[Any]:
        """The ``top_k`` most probable classes of each image."""
        probs = _softmax(outputs.astype(np.float32), 1) if self.logits else outputs
        k = min(int(batch.options.top_k or 5), probs.shape[1])
        out = []
        for row, im in zip(probs, batch.images, strict=True):
            ids = np.argsort(-row, kind="stable")[:k]
            out.append(
                Classifications(
                    class_id=ids.astype(np.int64),
                    confidence=row[ids].astype(np.float32),
                    class_name=tuple(self.class_names[int(i)] for i in ids),
                    metadata=self.meta(im, **self.result_meta),
                )
            )
        return out


class SemanticDeployOptions(BackendOptions):
    """Options of a deployed semantic segmenter."""

    return_scores: bool | None = Field(
        None, description="Also return per-class probabilities (C, H, W) (default: the file's)."
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="Engine threads: ONNX Runtime intra-op, or OpenVINO INFERENCE_NUM_THREADS "
        "(default: one per core).",
    )


class DeployedSemanticSegmenter(_FileSpec, Backend[SemanticDeployOptions], SegmentsSemantic):
    """A torchvision semantic segmenter artifact: shortest-side resize (Pillow), normalise, one image per
    ORT run, logits resized bilinearly (OpenCV) to the image, argmax (and softmax for ``scores``)."""

    name: ClassVar[str] = "onnx"
    tasks: ClassVar[tuple[Task, ...]] = (Task.SEGMENT_SEMANTIC,)
    Options = SemanticDeployOptions

    def __init__(self, path: Path, session: Any, meta: dict[str, Any], **options: Any) -> None:
        super().__init__(weights=str(path), device="cpu", precision=str(meta["precision"]), **options)
        self.session, self.artifact = session, meta
        self.class_names = tuple(meta["class_names"])
        inp, norm = meta["input"], meta["normalize"]
        self.input_name, self.sizes_name, self.raw_name = inp["name"], inp["sizes"], meta["output"]["raw"]
        self.resize_to, self.max_long = inp.get("resize_to"), inp.get("max_long_side")
        self.interpolation = str(inp.get("interpolation", "torch-antialiased-bilinear-float"))
        self.result_meta = {k: v for k, v in (meta.get("metadata") or {}).items() if v is not None}
        self._scale = np.float32(norm.get("scale", 1 / 255))
        self._mean = np.asarray(norm["mean"], np.float32).reshape(3, 1, 1)
        self._std = np.asarray(norm["std"], np.float32).reshape(3, 1, 1)
        self.runtime = _describe(path, session, meta, self.options.threads)

    def preprocess(
        self, images: list[np.ndarray], options: SemanticDeployOptions
    ) -> Batch[SemanticDeployOptions]:
        """One ``(1, 3, h, w)`` feed per image (no padding: each image runs alone)."""
        feeds = []
        for im in images:
            h, w = im.shape[:2]
            if self.resize_to is not None:
                h, w = _shortest_side(h, w, int(self.resize_to), self.max_long)
            x = (
                _resize(im, (h, w), self.interpolation).transpose(2, 0, 1) * self._scale - self._mean
            ) / self._std
            sizes = np.array([[h, w]], np.int64)
            feeds.append({self.input_name: x[None].astype(np.float32), self.sizes_name: sizes})
        if options.return_scores is None:
            scores = bool(self.artifact["defaults"].get("return_scores", False))
            options = options.model_copy(update={"return_scores": scores})
        return Batch(images, feeds, [{} for _ in images], options)

    def forward(self, inputs: Any) -> Any:
        """Logits ``(1, C, h, w)`` per image."""
        return [self._run([self.raw_name], feed)[0] for feed in inputs]

    def postprocess(self, outputs: Any, batch: Batch[SemanticDeployOptions], task: Task) -> list[Any]:
        """Logits resized to the image (bilinear, half-pixel centres), arg-maxed."""
        results = []
        for logits, im in zip(outputs, batch.images, strict=True):
            up = _resize_stack(logits[0].astype(np.float32), im.shape[:2])
            fields: dict[str, Any] = {
                "label_map": up.argmax(0).astype(np.int32),
                "class_names": self.class_names,
                "metadata": self.meta(im, **self.result_meta),
            }
            if batch.options.return_scores:
                fields["scores"] = _softmax(up, 0).astype(np.float32)
            results.append(SemanticMask(**fields))
        return results


class DetrDeployOptions(BackendOptions):
    """Options of a deployed DETR-family detector; defaults are the file's."""

    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Score threshold (default: the file's)."
    )
    max_detections: int | None = Field(
        None, ge=1, description="Most detections per image, highest scores kept (default: the file's)."
    )
    clip_boxes: bool | None = Field(None, description="Clip boxes to the image (default: the file's).")
    threads: int | None = Field(
        None,
        ge=1,
        description="Engine threads: ONNX Runtime intra-op, or OpenVINO INFERENCE_NUM_THREADS "
        "(default: one per core).",
    )


def _detr_size(h: int, w: int, size: dict[str, int]) -> tuple[int, int]:
    """transformers' ``get_size_with_aspect_ratio`` (shortest/longest edge), or the fixed size."""
    if "shortest_edge" not in size:
        return int(size["height"]), int(size["width"])
    short, max_size = int(size["shortest_edge"]), size.get("longest_edge")
    raw = None
    if max_size is not None:
        lo, hi = float(min(h, w)), float(max(h, w))
        if hi / lo * short > max_size:
            raw = max_size * lo / hi
            short = round(raw)
    if (h <= w and h == short) or (w <= h and w == short):
        return h, w
    if w < h:
        return (int(raw * h / w) if raw is not None else int(short * h / w)), short
    return short, (int(raw * w / h) if raw is not None else int(short * w / h))


class DeployedDetr(_FileSpec, Backend[DetrDeployOptions], Detects):
    """A DETR / RT-DETR / D-FINE artifact: the processor's resize and normalisation, one image per ORT
    run (no padding, an all-ones pixel mask), then ``post_process_object_detection`` in numpy (no NMS)."""

    name: ClassVar[str] = "onnx"
    tasks: ClassVar[tuple[Task, ...]] = (Task.DETECT,)
    Options = DetrDeployOptions

    def __init__(self, path: Path, session: Any, meta: dict[str, Any], **options: Any) -> None:
        super().__init__(weights=str(path), device="cpu", precision=str(meta["precision"]), **options)
        self.session, self.artifact = session, meta
        self.class_names = tuple(meta["class_names"])
        inp, norm, out = meta["input"], meta["normalize"], meta["output"]
        self.input_name, self.mask_name = inp["name"], inp.get("mask")
        self.size, self.do_resize = dict(inp["size"]), bool(inp.get("do_resize", True))
        self.interpolation = str(inp.get("interpolation", "pil-bilinear"))
        self.logits_name, self.boxes_name, self.scoring = out["raw"], out["boxes"], out["decoding"]
        self.result_meta = {k: v for k, v in (meta.get("metadata") or {}).items() if v is not None}
        self._scale = np.float32(norm.get("scale", 1 / 255))
        self._mean = np.asarray(norm["mean"], np.float32).reshape(3, 1, 1)
        self._std = np.asarray(norm["std"], np.float32).reshape(3, 1, 1)
        self.runtime = _describe(path, session, meta, self.options.threads)

    def _thin_padding(self, h: int, w: int) -> tuple[int, int]:
        """Edge rows/columns so an aspect-keeping resize gives no side of 0 pixels (as the backend)."""
        longest = self.size.get("longest_edge")
        if "shortest_edge" not in self.size or not longest:
            return (0, 0)
        need = math.ceil(max(h, w) / longest) + 1
        return (max(0, need - h), max(0, need - w)) if min(h, w) < need else (0, 0)

    def preprocess(self, images: list[np.ndarray], options: DetrDeployOptions) -> Batch[DetrDeployOptions]:
        """Resize (aspect kept, or fixed), rescale and normalise each image: one feed per image."""
        defaults = self.artifact["defaults"]
        fill = {
            k: defaults[k]
            for k in ("threshold", "max_detections", "clip_boxes")
            if getattr(options, k) is None
        }
        opts = options.model_copy(update=fill) if fill else options
        feeds, metas = [], []
        for im in images:
            pad = self._thin_padding(*im.shape[:2])
            arr = np.pad(im, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge") if any(pad) else im
            h, w = arr.shape[:2]
            if self.do_resize:
                arr = _resize(arr, _detr_size(h, w, self.size), self.interpolation)
            x = ((arr.transpose(2, 0, 1) * self._scale - self._mean) / self._std)[None].astype(np.float32)
            feed = {self.input_name: x}
            if self.mask_name:
                feed[self.mask_name] = np.ones((1, *x.shape[2:]), np.int64)
            feeds.append(feed)
            metas.append({"target": (h, w)})
        return Batch(images, feeds, metas, opts)

    def forward(self, inputs: Any) -> Any:
        """``(logits, pred_boxes)`` per image."""
        return [self._run([self.logits_name, self.boxes_name], feed) for feed in inputs]

    def _scores(self, logits: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """transformers' ``post_process_object_detection`` scoring: per query (DETR) or top-k (RT-DETR)."""
        if self.scoring == "softmax-no-object":
            prob = _softmax(logits.astype(np.float32), -1)[:, :-1]
            labels = prob.argmax(-1)
            return prob[np.arange(len(prob)), labels], labels, boxes
        nq, nc = logits.shape
        flat = 1.0 / (1.0 + np.exp(-logits.astype(np.float32).reshape(-1)))
        index = np.argsort(-flat, kind="stable")[:nq]  # torch.topk: the nq best, best first
        return flat[index], index % nc, boxes[index // nc]

    def postprocess(self, outputs: Any, batch: Batch[DetrDeployOptions], task: Task) -> list[Any]:
        """Scores, threshold, boxes to pixels; then the backend's clipping, cap and order."""
        opts = batch.options
        results = []
        for (logits, pred), im, meta in zip(outputs, batch.images, batch.metas, strict=True):
            th, tw = meta["target"]
            cx, cy, bw, bh = (pred[0][:, i] for i in range(4))
            boxes = np.stack([cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh], 1)
            boxes = boxes * np.array([tw, th, tw, th], np.float32)
            scores, labels, boxes = self._scores(logits[0], boxes)
            keep = scores > opts.threshold
            scores, labels, boxes = scores[keep], labels[keep].astype(np.int64), boxes[keep]
            h, w = im.shape[:2]
            if (th, tw) != (h, w):  # thin image: drop what lies only in the padding
                boxes = np.clip(boxes, 0, [w, h, w, h])
                inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                scores, boxes, labels = scores[inside], boxes[inside], labels[inside]
            if opts.max_detections is not None and len(scores) > opts.max_detections:
                keep = np.sort(np.argsort(-scores, kind="stable")[: opts.max_detections])
                scores, boxes, labels = scores[keep], boxes[keep], labels[keep]
            order = np.argsort(-scores, kind="stable")  # most confident first, ties in query order
            scores, boxes, labels = scores[order], boxes[order], labels[order]
            if opts.clip_boxes:
                boxes = np.clip(boxes, 0, [w, h, w, h])
            results.append(
                Detections(
                    xyxy=boxes.astype(np.float32).reshape(-1, 4),
                    confidence=scores.astype(np.float32),
                    class_id=labels,
                    class_name=tuple(
                        self.class_names[int(i)] if int(i) < len(self.class_names) else str(int(i))
                        for i in labels
                    ),
                    metadata=self.meta(im, **self.result_meta),
                )
            )
        return results


class TvDetectDeployOptions(BackendOptions):
    """Options of a deployed torchvision detector (the rest is baked into its graph)."""

    score_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Keep scores above this (default: the file's; per call: stricter only).",
    )
    detections_per_image: int | None = Field(
        None, ge=1, description="Most detections per image (default: the file's; per call: fewer only)."
    )
    mask_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Soft-mask threshold (default: the file's)."
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="Engine threads: ONNX Runtime intra-op, or OpenVINO INFERENCE_NUM_THREADS "
        "(default: one per core).",
    )


class DeployedTorchvisionDetector(_FileSpec, Backend[TvDetectDeployOptions], Detects):
    """A torchvision detector / Mask R-CNN artifact: its graph holds the whole model (resize, normalise,
    proposals, heads, NMS, box rescaling, mask pasting); numpy only scales pixels to 0-1 and reads the
    outputs, one image per run."""

    name: ClassVar[str] = "onnx"
    tasks: ClassVar[tuple[Task, ...]] = (Task.DETECT,)
    Options = TvDetectDeployOptions

    def __init__(self, path: Path, session: Any, meta: dict[str, Any], **options: Any) -> None:
        super().__init__(weights=str(path), device="cpu", precision=str(meta["precision"]), **options)
        self.session, self.artifact = session, meta
        self.class_names = tuple(meta["class_names"])
        inp = meta["input"]
        self.input_name, self.sizes_name = inp["name"], inp["sizes"]
        self.max_size = inp.get("thin_padding_max_size")
        self.output_names = list(meta["output"]["names"])
        self.result_meta = {k: v for k, v in (meta.get("metadata") or {}).items() if v is not None}
        self.runtime = _describe(path, session, meta, self.options.threads)
        self._check(self.options)

    def _resolved(self, options: TvDetectDeployOptions) -> TvDetectDeployOptions:
        d = self.artifact["defaults"]
        fill = {k: d[k] for k in ("score_threshold", "detections_per_image", "mask_threshold") if k in d}
        fill = {k: v for k, v in fill.items() if getattr(options, k) is None}
        return options.model_copy(update=fill) if fill else options

    def _check(self, options: TvDetectDeployOptions) -> None:
        d, o = self.artifact["defaults"], self._resolved(options)
        if o.score_threshold is not None and o.score_threshold < d["score_threshold"]:
            raise InvalidOptionError(
                f"This file's graph keeps scores above {d['score_threshold']} (baked in at export); "
                f"score_threshold={o.score_threshold} needs a re-export with that threshold."
            )
        if o.detections_per_image is not None and o.detections_per_image > d["detections_per_image"]:
            raise InvalidOptionError(
                f"This file's graph returns at most {d['detections_per_image']} detections (baked in at "
                f"export); detections_per_image={o.detections_per_image} needs a re-export."
            )

    def with_options(self, overrides: dict[str, Any]) -> TvDetectDeployOptions:
        opts = super().with_options(overrides)
        if "threads" in overrides and overrides["threads"] != self.options.threads:
            raise InvalidOptionError("threads is fixed when the file is loaded: load(..., threads=N).")
        self._check(opts)
        return opts

    def _thin_padding(self, h: int, w: int) -> tuple[int, int]:
        """Edge rows/columns so torchvision's resize gives no side of 0 pixels (the backend's rule)."""
        if self.max_size is None:
            return (0, 0)
        need = math.ceil(max(h, w) / float(self.max_size)) + 1
        return (max(0, need - h), max(0, need - w)) if min(h, w) < need else (0, 0)

    def preprocess(
        self, images: list[np.ndarray], options: TvDetectDeployOptions
    ) -> Batch[TvDetectDeployOptions]:
        """Pixels to float 0-1 (``convert_image_dtype``), thin images edge-padded; one feed per image."""
        feeds, metas = [], []
        for im in images:
            pad = self._thin_padding(*im.shape[:2])
            arr = np.pad(im, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge") if any(pad) else im
            x = (arr.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0))[None]
            feeds.append({self.input_name: x, self.sizes_name: np.array([arr.shape[:2]], np.int64)})
            metas.append({"thin_padding": pad})
        return Batch(images, feeds, metas, self._resolved(options))

    def forward(self, inputs: Any) -> Any:
        """``boxes, labels, scores[, masks], count`` per image."""
        return [
            dict(zip(self.output_names, self._run(self.output_names, feed), strict=True)) for feed in inputs
        ]

    def postprocess(self, outputs: Any, batch: Batch[TvDetectDeployOptions], task: Task) -> list[Any]:
        """As the backend: scores above the threshold, thin padding dropped, the cap, masks thresholded."""
        opts = batch.options
        results: list[Any] = []
        for out, im, meta in zip(outputs, batch.images, batch.metas, strict=True):
            h, w = im.shape[:2]
            keep = np.nonzero(out["scores"] > opts.score_threshold)[0]
            boxes = out["boxes"]
            if any(meta["thin_padding"]):  # drop what lies only in the padding, clip the rest
                boxes = np.minimum(np.clip(boxes, 0, None), np.array([w, h, w, h], boxes.dtype))
                box = boxes[keep]
                keep = keep[(box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])]
            keep = keep[: opts.detections_per_image]
            labels = out["labels"][keep].astype(np.int64)
            fields: dict[str, Any] = {
                "xyxy": boxes[keep].astype(np.float32).reshape(-1, 4),
                "confidence": out["scores"][keep].astype(np.float32),
                "class_id": labels,
                "class_name": tuple(
                    self.class_names[int(i)] if 0 <= int(i) < len(self.class_names) else str(int(i))
                    for i in labels
                ),
                "metadata": self.meta(im, **self.result_meta),
            }
            if task is Task.SEGMENT_INSTANCES:
                soft = out["masks"][keep][:, 0, :h, :w]
                results.append(InstanceMasks(**fields, mask=soft > opts.mask_threshold))
            else:
                results.append(Detections(**fields))
        return results


class DeployedTorchvisionSegmenter(DeployedTorchvisionDetector, SegmentsInstances):
    """A torchvision Mask R-CNN artifact: detections, and masks pasted by its graph."""

    tasks: ClassVar[tuple[Task, ...]] = (Task.DETECT, Task.SEGMENT_INSTANCES)


def _describe(path: Path, session: Any, meta: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """What ``backend.runtime`` says about a deployed file."""
    base = {
        "name": "onnxruntime",
        "deployed": True,
        "kind": meta["kind"],
        "precision": meta["precision"],
        "model_path": str(path),
        "calibration": meta.get("calibration"),
        "gate": meta.get("gate"),
        "source": meta.get("source"),
    }
    if isinstance(session, OvEngine):
        return {**base, "name": "openvino", "engine": "openvino", **session.settings}
    return {
        **base,
        "engine": "onnxruntime",
        "providers": session.get_providers(),
        "intra_op_threads": threads or 0,
    }


_KINDS: dict[str, Any] = {
    "yolo-detect": DeployedDetector,
    "yolo-segment": DeployedSegmenter,
    "yolo-classify": DeployedClassifier,
    "image-classify": DeployedClassifier,
    "semantic-segment": DeployedSemanticSegmenter,
    "detr": DeployedDetr,
    "tv-detect": DeployedTorchvisionDetector,
}


def load_artifact(
    *,
    weights: Any = None,
    device: str = "cpu",
    precision: str = "fp32",
    engine: str | None = None,
    **options: Any,
) -> Backend[Any]:
    """The ``onnx`` backend's factory: open a deploy artifact and return the backend it describes.

    ``engine``: ``"onnxruntime"`` (default for ``.onnx``) or ``"openvino"`` (default, and the only
    choice, for an OpenVINO IR ``.xml``; OpenVINO also runs a deploy ``.onnx``).
    """
    if weights is None:
        raise InvalidOptionError("load('onnx') needs weights=PATH of an exported .onnx deploy artifact.")
    path = Path(os.fspath(weights)).expanduser()
    if not path.is_file():
        from visionkit import WeightsNotFoundError

        raise WeightsNotFoundError(str(path), [str(path.resolve())])
    if device not in ("cpu", "auto"):
        raise InvalidOptionError(f"The deploy runtime runs on CPU; got device={device!r}.")
    ir = path.suffix.lower() == ".xml"
    engine = engine or ("openvino" if ir else "onnxruntime")
    if engine not in ENGINES or (ir and engine != "openvino"):
        valid = ["openvino"] if ir else list(ENGINES)
        raise InvalidOptionError(
            f"engine must be one of {', '.join(valid)} for {path.name!r}, but got {engine!r}.",
            key="engine",
            valid=valid,
        )
    threads = options.get("threads")
    session = open_engine(path, engine, threads)
    meta = read_metadata(path, session)
    if isinstance(session, OvEngine):
        session.compile(meta)
    cls = _KINDS.get(meta["kind"])
    if meta["kind"] == "sam":
        from visionkit_onnx._deploy_sam import DeployedSam

        cls = DeployedSam
    if cls is DeployedTorchvisionDetector and meta["output"].get("masks"):
        cls = DeployedTorchvisionSegmenter
    if cls is None:
        raise InvalidOptionError(
            f"{path.name!r} holds a {meta['kind']!r} model, which this visionkit-onnx cannot decode "
            f"(it decodes: {', '.join([*_KINDS, 'sam'])}); upgrade visionkit-onnx."
        )
    return cls(path, session, meta, **options)
