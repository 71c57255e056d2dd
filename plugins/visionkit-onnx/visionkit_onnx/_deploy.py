"""Run a deploy artifact (see :mod:`visionkit_onnx._artifact`) with onnxruntime, numpy and OpenCV only.

``visionkit.load("model.onnx")`` or ``visionkit.load("onnx", weights="model.onnx")``. Nothing here
imports torch, torchvision, ultralytics, transformers or segment_anything: a subprocess test proves it.
Pre-processing is the torch path's letterbox (same rounding, OpenCV's bilinear resize, pad 114), so
results match ``load("yolo", precision="int8")`` on the same network.
"""

from __future__ import annotations

import json
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
    InvalidOptionError,
    Task,
)

__all__ = [
    "ClassifyDeployOptions",
    "DeployOptions",
    "DeployedClassifier",
    "DeployedDetector",
    "load_artifact",
    "read_metadata",
]

SCHEMA = 1  # the newest schema this reader understands (mirrors _artifact.SCHEMA, without importing onnx)
_REQUIRED = ("kind", "tasks", "class_names", "input", "normalize", "output", "defaults", "precision")


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
        None, ge=1, description="ONNX Runtime intra-op threads (default: one per core)."
    )


def read_metadata(path: Path, session: Any) -> dict[str, Any]:
    """The artifact's description; a clear error when the file is not a visionkit deploy artifact."""
    props = session.get_modelmeta().custom_metadata_map
    if "visionkit" not in props or "visionkit.schema" not in props:
        have = ", ".join(sorted(props)) or "none"
        raise InvalidOptionError(
            f"{path.name!r} is not a visionkit deploy artifact: its ONNX metadata_props lack 'visionkit' and "
            f"'visionkit.schema' (it has: {have}). Export it with `visionkit export NAME -o {path.name}` "
            "(needs torch and the source backend), or load an ultralytics export with load('yolo', weights=...)."
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
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise InvalidOptionError(f"{path.name!r} metadata lacks {', '.join(missing)} (schema {schema}).")
    return meta


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


class DeployedDetector(Backend[DeployOptions], Detects):
    """A YOLO detector artifact: letterbox in numpy/OpenCV, network + NMS in ONNX Runtime."""

    name: ClassVar[str] = "onnx"
    tasks = (Task.DETECT,)
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
        outs = []
        for feed in inputs:
            try:
                outs.append(self.session.run([self.raw_name, self.selected_name], feed))
            except Exception as exc:
                shape = list(feed[self.input_name].shape)
                raise BackendError(
                    f"ONNX Runtime failed on input {shape}: {type(exc).__name__}: {exc}"
                ) from exc
        return outs

    def postprocess(self, outputs: Any, batch: Batch[DeployOptions], task: Task) -> list[Any]:
        """Gather the kept anchors, best score first, then undo the letterbox."""
        opts = batch.options
        results = []
        for (raw, sel), im, meta in zip(outputs, batch.images, batch.metas, strict=True):
            idx = sel[:, 2]  # kept anchors, best score first (NonMaxSuppression's order)
            pred = raw[0][:, idx]  # (4 + classes, kept)
            cls = pred[4:].argmax(0)  # the first best class, as torch's max
            score = pred[4 + cls, np.arange(len(idx))]
            order = np.argsort(-score, kind="stable")
            if opts.classes is not None:
                order = order[np.isin(cls[order], opts.classes)]
            order = order[: opts.max_det]
            cx, cy, w, h = pred[:4, order]
            xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
            h0, w0 = im.shape[:2]
            new_h, new_w = meta["size"]
            left, top = meta["pad"]
            xyxy -= np.array([left, top, left, top], np.float32)
            xyxy /= np.array([new_w / w0, new_h / h0, new_w / w0, new_h / h0], np.float32)
            np.clip(xyxy, 0, [w0, h0, w0, h0], out=xyxy)
            ids = cls[order].astype(np.int64)
            results.append(
                Detections(
                    xyxy=xyxy.astype(np.float32),
                    confidence=score[order].astype(np.float32),
                    class_id=ids,
                    class_name=tuple(self.class_names[int(i)] for i in ids),
                    metadata=self.meta(im, input_shape=meta["input_shape"]),
                )
            )
        return results


class ClassifyDeployOptions(BackendOptions):
    """Options of a deployed classifier."""

    top_k: int | None = Field(None, ge=1, description="Classes returned (default: the file's).")
    threads: int | None = Field(
        None, ge=1, description="ONNX Runtime intra-op threads (default: one per core)."
    )


class DeployedClassifier(Backend[ClassifyDeployOptions], Classifies):
    """A YOLO classifier artifact: resize + centre crop with Pillow (as torchvision's PIL path), ORT, top-k."""

    name: ClassVar[str] = "onnx"
    tasks = (Task.CLASSIFY,)
    Options = ClassifyDeployOptions

    def __init__(self, path: Path, session: Any, meta: dict[str, Any], **options: Any) -> None:
        super().__init__(weights=str(path), device="cpu", precision=str(meta["precision"]), **options)
        self.session, self.artifact = session, meta
        self.class_names = tuple(meta["class_names"])
        inp, norm = meta["input"], meta["normalize"]
        self.input_name, self.raw_name = inp["name"], meta["output"]["raw"]
        self.resize_to, self.crop = int(inp["resize_to"]), tuple(inp["crop"])
        self._scale = np.float32(norm.get("scale", 1 / 255))
        self._mean = np.asarray(norm["mean"], np.float32).reshape(3, 1, 1)
        self._std = np.asarray(norm["std"], np.float32).reshape(3, 1, 1)
        self.runtime = _describe(path, session, meta, self.options.threads)

    def preprocess(
        self, images: list[np.ndarray], options: ClassifyDeployOptions
    ) -> Batch[ClassifyDeployOptions]:
        """Shortest side to ``resize_to`` (Pillow bilinear), centre crop, scale and normalise: NCHW."""
        from PIL import Image

        ch, cw = self.crop
        x = np.empty((len(images), 3, ch, cw), np.float32)
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            short, long = (h, w) if h <= w else (w, h)
            new_long = int(self.resize_to * long / short)  # torchvision's rounding
            new_h, new_w = (self.resize_to, new_long) if h <= w else (new_long, self.resize_to)
            img = Image.fromarray(im)
            if (new_w, new_h) != (w, h):
                img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
            top, left = round((new_h - ch) / 2.0), round((new_w - cw) / 2.0)  # torchvision's centre crop
            crop = np.asarray(img)[top : top + ch, left : left + cw]
            x[i] = (crop.transpose(2, 0, 1) * self._scale - self._mean) / self._std
        top_k = options.top_k or int(self.artifact["defaults"]["top_k"])
        return Batch(images, x, [{} for _ in images], options.model_copy(update={"top_k": top_k}))

    def forward(self, inputs: Any) -> Any:
        """Class probabilities, one row per image."""
        try:
            return self.session.run([self.raw_name], {self.input_name: inputs})[0]
        except Exception as exc:
            raise BackendError(f"ONNX Runtime failed on input {list(inputs.shape)}: {exc}") from exc

    def postprocess(self, outputs: Any, batch: Batch[ClassifyDeployOptions], task: Task) -> list[Any]:
        """The ``top_k`` most probable classes of each image."""
        k = min(int(batch.options.top_k or 5), outputs.shape[1])
        out = []
        for probs, im in zip(outputs, batch.images, strict=True):
            ids = np.argsort(-probs, kind="stable")[:k]
            out.append(
                Classifications(
                    class_id=ids.astype(np.int64),
                    confidence=probs[ids].astype(np.float32),
                    class_name=tuple(self.class_names[int(i)] for i in ids),
                    metadata=self.meta(im),
                )
            )
        return out


def _describe(path: Path, session: Any, meta: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """What ``backend.runtime`` says about a deployed file."""
    return {
        "name": "onnxruntime",
        "deployed": True,
        "kind": meta["kind"],
        "precision": meta["precision"],
        "model_path": str(path),
        "calibration": meta.get("calibration"),
        "gate": meta.get("gate"),
        "source": meta.get("source"),
        "providers": session.get_providers(),
        "intra_op_threads": threads or 0,
    }


_KINDS: dict[str, Any] = {"yolo-detect": DeployedDetector, "yolo-classify": DeployedClassifier}


def load_artifact(
    *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any
) -> DeployedDetector | DeployedClassifier:
    """The ``onnx`` backend's factory: open a deploy artifact and return the backend it describes."""
    if weights is None:
        raise InvalidOptionError("load('onnx') needs weights=PATH of an exported .onnx deploy artifact.")
    path = Path(os.fspath(weights)).expanduser()
    if not path.is_file():
        from visionkit import WeightsNotFoundError

        raise WeightsNotFoundError(str(path), [str(path.resolve())])
    if device not in ("cpu", "auto"):
        raise InvalidOptionError(f"The deploy runtime runs on CPU; got device={device!r}.")
    threads = options.get("threads")
    session = _session(path, threads)
    meta = read_metadata(path, session)
    cls = _KINDS.get(meta["kind"])
    if cls is None:
        raise InvalidOptionError(
            f"{path.name!r} holds a {meta['kind']!r} model, which this visionkit-onnx cannot decode "
            f"(it decodes: {', '.join(_KINDS)}); upgrade visionkit-onnx."
        )
    return cls(path, session, meta, **options)
