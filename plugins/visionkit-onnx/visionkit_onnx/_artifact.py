"""Self-describing deploy artifacts: an ONNX file that runs with onnxruntime + numpy + OpenCV alone.

Written at export time (torch and the source backend installed); read by :mod:`visionkit_onnx._deploy`
on a device that has neither. Everything needed to run the file lives in its ``metadata_props``:

* ``visionkit.schema``: the schema version (:data:`SCHEMA`); a reader refuses a version it does not know.
* ``visionkit``: one JSON object: ``kind`` (the decoder), ``tasks``, ``class_names``, ``input`` (name,
  layout, size, stride, letterbox policy, rect allowed, pad value, interpolation, colour order),
  ``normalize``, ``output`` (graph outputs and how to decode them), ``defaults`` (thresholds),
  ``precision``, ``calibration``, ``gate``, ``quantization``, ``source`` (backend, weights, weights
  fingerprint, visionkit version) and ``created``.

YOLO detectors get ultralytics' NMS appended to the graph as ONNX ops ending in ``NonMaxSuppression``
(see :func:`_with_nms`), with the thresholds as graph inputs so per-call ``conf`` / ``iou`` /
``max_det`` / ``agnostic_nms`` need no re-export.
"""

from __future__ import annotations

import json
import time
from importlib import metadata
from typing import Any

from visionkit.export import ExportNotSupportedError, ExportSpec

__all__ = ["KINDS", "SCHEMA", "deploy_plan", "write_artifact"]

#: Version of the metadata schema; bump on any incompatible change.
SCHEMA = 1
#: Decoders the deploy runtime knows.
KINDS = ("yolo-detect", "yolo-classify")


def _not_deployable(name: str, why: str) -> ExportNotSupportedError:
    return ExportNotSupportedError(
        f"Backend {name!r} cannot be deployed without torch yet: {why} The deploy runtime decodes "
        f"{', '.join(KINDS)} (ultralytics YOLO detectors and classifiers). Export it for the SDK's own "
        f"runtime instead: visionkit.load({name!r}, precision=..., runtime='onnxruntime')."
    )


def _classify_input(backend: Any, spec: ExportSpec) -> dict[str, Any]:
    """The classifier's torchvision transforms as data: resize (shortest side), centre crop, normalise."""
    name = backend.name
    imgsz = int(spec.example_inputs[0].shape[-1])
    tf = backend._transforms(imgsz)  # the exact transforms its preprocess applies
    steps = {type(t).__name__: t for t in getattr(tf, "transforms", [])}
    if list(steps) != ["Resize", "CenterCrop", "ToTensor", "Normalize"]:
        raise _not_deployable(name, f"its preprocessing {list(steps)} is not resize + crop + normalise.")
    resize, crop, norm = steps["Resize"], steps["CenterCrop"], steps["Normalize"]
    size = resize.size if isinstance(resize.size, int) else list(resize.size)
    if isinstance(size, list) and len(size) == 1:
        size = size[0]
    interp = str(getattr(resize.interpolation, "value", resize.interpolation)).lower()
    if interp != "bilinear" or not isinstance(size, int):
        raise _not_deployable(
            name, f"its resize ({size!r}, {interp}) is not a bilinear shortest-side resize."
        )
    return {
        "input": {
            "name": spec.input_names[0],
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "imgsz": imgsz,
            "resize": "shortest-side-then-center-crop",
            "resize_to": int(size),
            "crop": [int(c) for c in crop.size],
            "interpolation": "pil-bilinear",
            "rect": False,
        },
        "normalize": {
            "scale": 1 / 255,
            "mean": [float(v) for v in norm.mean],
            "std": [float(v) for v in norm.std],
        },
    }


def deploy_plan(backend: Any, spec: ExportSpec) -> dict[str, Any]:
    """What the artifact will say about ``backend``; :class:`ExportNotSupportedError` says why not.

    Called before anything is exported, so a backend that cannot be deployed fails fast.
    """
    name = getattr(backend, "name", type(backend).__name__)
    task = getattr(backend, "model_task", None)
    names = getattr(backend, "names", {})
    class_names = [str(names.get(i, i)) for i in range(len(names))]
    opts = backend.options
    if name == "yolo-cls" and task == "classify":
        return {
            "kind": "yolo-classify",
            "tasks": ["classify"],
            "class_names": class_names,
            **_classify_input(backend, spec),
            "output": {
                "decoding": "probabilities",
                "raw": spec.output_names[0],
                "raw_layout": "[batch, classes]",
            },
            "defaults": {"top_k": int(opts.top_k)},
        }
    if (
        name != "yolo"
        or task != "detect"
        or getattr(backend, "is_rtdetr", False)
        or getattr(backend, "end2end", False)
    ):
        raise _not_deployable(name, "its pre/post-processing still needs torch.")
    return {
        "kind": "yolo-detect",
        "tasks": ["detect"],
        "class_names": class_names,
        "input": {
            "name": spec.input_names[0],
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "imgsz": int(opts.imgsz or backend.default_imgsz),
            "stride": int(backend.stride),
            "resize": "letterbox",
            "rect": True,
            "pad_value": 114,
            "interpolation": "linear",
            "center": True,
        },
        "normalize": {"scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "output": {
            "decoding": "yolo-detect-nms",
            "raw": "output0",
            "selected": "selected",
            "raw_layout": "[batch, 4 + classes, anchors]: cx, cy, w, h in input pixels, then class scores 0-1",
            "nms": "ONNX NonMaxSuppression in the graph on each anchor's best class, boxes shifted by "
            "class * class_offset (7680, or 0 for class-agnostic), as ultralytics",
            "class_offset": 7680.0,
            "boxes": "xyxy in original-image pixels (letterbox undone, clipped)",
        },
        "defaults": {
            "conf": float(opts.conf),
            "iou": float(opts.iou),
            "max_det": int(opts.max_det),
        },
    }


def _with_nms(model: Any, num_classes: int) -> Any:
    """Append ultralytics' NMS after ``output0`` as ONNX ops; new inputs ``conf``, ``iou``, ``max_det``,
    ``class_offset``.

    The same arithmetic as ``ultralytics.utils.nms.non_max_suppression`` (single label): boxes to xyxy
    (``xy -/+ wh / 2``), each anchor's best class score, boxes shifted by ``class * class_offset`` (7680:
    one NMS separates classes; 0: class-agnostic), then one ``NonMaxSuppression`` keeping ``max_det``. Same
    float operations, so the kept boxes are the torch path's even where float rounding of the shifted
    boxes decides an IoU at the threshold.
    """
    from onnx import TensorProto, helper

    g = model.graph
    raw = "output0"
    c = helper.make_tensor
    g.initializer.extend(
        [
            c("vk_0", TensorProto.INT64, [1], [0]),
            c("vk_2", TensorProto.INT64, [1], [2]),
            c("vk_4", TensorProto.INT64, [1], [4]),
            c("vk_e", TensorProto.INT64, [1], [4 + num_classes]),
            c("vk_ax1", TensorProto.INT64, [1], [1]),
            c("vk_ax2", TensorProto.INT64, [1], [2]),
            c("vk_half", TensorProto.FLOAT, [], [2.0]),
        ]
    )
    n = helper.make_node
    g.node.extend(
        [
            n("Slice", [raw, "vk_0", "vk_4", "vk_ax1"], ["vk_xywh_t"], name="vk_slice_boxes"),
            n("Transpose", ["vk_xywh_t"], ["vk_xywh"], perm=[0, 2, 1], name="vk_boxes_t"),
            n("Slice", ["vk_xywh", "vk_0", "vk_2", "vk_ax2"], ["vk_xy"], name="vk_xy"),
            n("Slice", ["vk_xywh", "vk_2", "vk_4", "vk_ax2"], ["vk_wh"], name="vk_wh"),
            n("Div", ["vk_wh", "vk_half"], ["vk_wh2"], name="vk_wh2"),
            n("Sub", ["vk_xy", "vk_wh2"], ["vk_x1y1"], name="vk_x1y1"),
            n("Add", ["vk_xy", "vk_wh2"], ["vk_x2y2"], name="vk_x2y2"),
            n("Concat", ["vk_x1y1", "vk_x2y2"], ["vk_xyxy"], axis=2, name="vk_xyxy"),
            n("Slice", [raw, "vk_4", "vk_e", "vk_ax1"], ["vk_scores"], name="vk_slice_scores"),
            n("ReduceMax", ["vk_scores"], ["vk_best"], axes=[1], keepdims=1, name="vk_best"),
            n("ArgMax", ["vk_scores"], ["vk_cls"], axis=1, keepdims=1, name="vk_argmax"),
            n("Cast", ["vk_cls"], ["vk_cls_f"], to=TensorProto.FLOAT, name="vk_cls_f"),
            n("Transpose", ["vk_cls_f"], ["vk_cls_t"], perm=[0, 2, 1], name="vk_cls_t"),
            n("Mul", ["vk_cls_t", "class_offset"], ["vk_offset"], name="vk_offset"),
            n("Add", ["vk_xyxy", "vk_offset"], ["vk_boxes"], name="vk_shift"),
            n(
                "NonMaxSuppression",
                ["vk_boxes", "vk_best", "max_det", "iou", "conf"],
                ["selected"],
                center_point_box=0,
                name="vk_nms",
            ),
        ]
    )
    g.input.extend(
        [
            helper.make_tensor_value_info("conf", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("max_det", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("class_offset", TensorProto.FLOAT, [1]),
        ]
    )
    g.output.append(helper.make_tensor_value_info("selected", TensorProto.INT64, ["selected", 3]))
    return model


def write_artifact(
    model_bytes: bytes, plan: dict[str, Any], info: dict[str, Any], output: Any
) -> dict[str, Any]:
    """Write ``model_bytes`` (the exported network) as a self-describing deploy artifact at ``output``.

    ``info`` carries what the build knows: ``precision``, ``calibration``, ``gate``, ``quantization``,
    ``source``. Returns the metadata written.
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    if plan["kind"] == "yolo-detect":
        model = _with_nms(model, len(plan["class_names"]))
    try:
        version = metadata.version("visionkit")
    except metadata.PackageNotFoundError:
        version = "unknown"
    meta = {
        "schema": SCHEMA,
        **plan,
        **info,
        "source": {**info.get("source", {}), "visionkit": version},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    del model.metadata_props[:]
    for key, value in (("visionkit.schema", str(SCHEMA)), ("visionkit", json.dumps(meta, sort_keys=True))):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(output))
    return meta
