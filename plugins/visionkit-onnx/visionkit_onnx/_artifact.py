"""Self-describing deploy artifacts: an ONNX file that runs with onnxruntime + numpy + OpenCV alone.

Written at export time (torch and the source backend installed); read by :mod:`visionkit_onnx._deploy`
on a device that has neither. Everything needed to run the file lives in its ``metadata_props``:

* ``visionkit.schema``: the schema version (:data:`SCHEMA`); a reader refuses a version it does not know.
* ``visionkit``: one JSON object: ``kind`` (the decoder), ``tasks``, ``class_names``, ``input`` (name,
  layout, size, stride, letterbox policy, rect allowed, pad value, interpolation, colour order),
  ``normalize``, ``output`` (graph outputs and how to decode them), ``defaults`` (thresholds),
  ``precision``, ``calibration``, ``gate``, ``quantization``, ``source`` (backend, weights, weights
  fingerprint, visionkit version) and ``created``.

Kinds (:data:`KINDS`): ``yolo-detect`` / ``yolo-segment`` (ultralytics' NMS appended to the graph as
ONNX ops ending in ``NonMaxSuppression``, see :func:`_with_nms`, with the thresholds as graph inputs so
per-call ``conf`` / ``iou`` / ``max_det`` / ``agnostic_nms`` need no re-export; a segmenter's masks are
built from the prototypes in numpy), ``yolo-classify``, ``image-classify`` and ``semantic-segment``
(torchvision presets as data), ``tv-detect`` (torchvision detectors and Mask R-CNN: the graph holds its
own post-processing), ``detr`` (DETR, RT-DETR, D-FINE: the image processor's steps as data, no NMS),
``sam`` (SAM / MobileSAM: this file is the image encoder; ``output.decoder_file`` names the prompt
decoder written beside it, with its sha256).
:func:`deploy_plan` raises :class:`~visionkit.export.ExportNotSupportedError` with the reason, before
anything is exported, for any other backend.
"""

from __future__ import annotations

import json
import time
from importlib import metadata
from typing import Any

from visionkit import InvalidOptionError
from visionkit.export import ExportNotSupportedError, ExportSpec, export_specs_of

__all__ = [
    "KINDS",
    "SCHEMA",
    "artifact_meta",
    "deploy_plan",
    "deploy_plan_for",
    "nms_tail",
    "requested_plan",
    "write_artifact",
]

#: Version of the metadata schema; bump on any incompatible change.
SCHEMA = 1
#: Decoders the deploy runtime knows.
KINDS = (
    "yolo-detect",
    "yolo-segment",
    "yolo-classify",
    "image-classify",
    "semantic-segment",
    "detr",
    "tv-detect",
)
#: What those decoders cover, for messages.
COVERAGE = (
    "ultralytics YOLO detectors, instance segmenters and classifiers; torchvision classifiers, semantic "
    "segmenters, detectors and Mask R-CNN; transformers DETR, RT-DETR and D-FINE detectors; SAM and "
    "MobileSAM prompt segmentation (an encoder file and a prompt-decoder file)"
)


def _not_deployable(name: str, why: str) -> ExportNotSupportedError:
    return ExportNotSupportedError(
        f"Backend {name!r} cannot be deployed without torch yet: {why} The deploy runtime decodes "
        f"{', '.join(KINDS)}: {COVERAGE}. Export it for the SDK's own runtime instead: "
        f"visionkit.load({name!r}, precision=..., runtime='onnxruntime')."
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


def _torchvision_detector_plan(backend: Any, spec: ExportSpec) -> dict[str, Any]:
    """A torchvision detector / Mask R-CNN: its graph holds resize, normalisation, NMS and mask pasting."""
    masks = backend.family == "instance"
    opts = backend.options
    transform = backend.model.transform
    baked = {
        k: getattr(opts, k)
        for k in (
            "score_threshold",
            "nms_threshold",
            "detections_per_image",
            "proposals",
            "min_size",
            "max_size",
        )
    }
    return {
        "kind": "tv-detect",
        "tasks": ["detect", "segment_instances"] if masks else ["detect"],
        "class_names": [str(c) for c in backend.categories],
        "input": {
            "name": spec.input_names[0],
            "sizes": spec.input_names[1],
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "resize": "in the graph (torchvision's GeneralizedRCNNTransform / SSD transform)",
            # the backend's thin-image guard: edge rows/columns so no side resizes to 0 pixels
            "thin_padding_max_size": None if backend._fixed_size is not None else int(transform.max_size),
            "rect": True,
        },
        "normalize": {"scale": 1 / 255, "mean": [0.0] * 3, "std": [1.0] * 3, "note": "the graph normalises"},
        "output": {
            "decoding": "torchvision-detections",
            "names": list(spec.output_names),
            "raw_layout": "boxes [n, 4] xyxy image pixels, labels [n], scores [n] sorted, "
            + ("masks [n, 1, H, W] soft 0-1 at the input size, " if masks else "")
            + "count [1]",
            "masks": masks,
        },
        # baked into the graph at export; per call only a stricter score_threshold or a smaller
        # detections_per_image apply (as for the SDK's exported graph)
        "defaults": {**baked, **({"mask_threshold": float(opts.mask_threshold)} if masks else {})},
        "metadata": {"label_space": getattr(backend, "label_space", None)},
    }


def _torchvision_plan(backend: Any, spec: ExportSpec) -> dict[str, Any]:
    """A torchvision classifier or semantic segmenter: its weights' preset transforms as data."""
    name, family = backend.name, backend.family
    tf = backend.transform(backend.options)  # the exact preset its preprocess applies
    interp = str(getattr(tf.interpolation, "value", tf.interpolation)).lower()
    resize = list(getattr(tf, "resize_size", None) or [])
    if interp != "bilinear" or not getattr(tf, "antialias", True) or len(resize) > 1:
        raise _not_deployable(name, f"its resize ({resize}, {interp}) is not an antialiased bilinear resize.")
    categories = [str(c) for c in backend.categories]
    max_imgsz = getattr(backend.options, "max_imgsz", None)
    inp: dict[str, Any] = {
        "name": spec.input_names[0],
        "layout": "NCHW",
        "dtype": "float32",
        "color": "RGB",
        # the preset's v1 resize of a uint8 tensor runs torch's antialiased bilinear in float, then
        # rounds (reproduced in numpy)
        "interpolation": "torch-antialiased-bilinear-float",
        "resize_to": int(resize[0]) if resize else None,
        # the SDK's guard: a long side above max_imgsz is scaled to it instead
        "max_long_side": None if max_imgsz is None else int(max_imgsz),
        "rect": family == "semantic",
    }
    norm = {"scale": 1 / 255, "mean": [float(v) for v in tf.mean], "std": [float(v) for v in tf.std]}
    meta = {"label_space": getattr(backend, "label_space", None)}
    if family == "classification":
        crop = [int(c) for c in tf.crop_size]
        crop = crop * 2 if len(crop) == 1 else crop
        return {
            "kind": "image-classify",
            "tasks": ["classify"],
            "class_names": categories,
            "input": {**inp, "resize": "shortest-side-then-center-crop", "crop": crop, "imgsz": crop[0]},
            "normalize": norm,
            "output": {"decoding": "logits", "raw": spec.output_names[0], "raw_layout": "[batch, classes]"},
            "defaults": {"top_k": int(backend.options.top_k)},
            "metadata": meta,
        }
    return {
        "kind": "semantic-segment",
        "tasks": ["segment_semantic"],
        "class_names": categories,
        "input": {
            **inp,
            "resize": "shortest-side" if resize else "none",
            "imgsz": int(resize[0]) if resize else None,
            "sizes": spec.input_names[1],
        },
        "normalize": norm,
        "output": {
            "decoding": "logits-argmax",
            "raw": spec.output_names[0],
            "raw_layout": "[1, classes, input_h, input_w]: one image per run (its size in 'sizes')",
            "upsample": "bilinear (OpenCV INTER_LINEAR = torch align_corners=False) to the image, argmax",
        },
        "defaults": {"return_scores": bool(backend.options.return_scores)},
        "metadata": meta,
    }


#: transformers image processors whose pre- and post-processing the deploy runtime reproduces, and how
#: their ``post_process_object_detection`` scores queries.
_DETR_PROCESSORS = {
    "DetrImageProcessor": "softmax-no-object",
    "DetrImageProcessorPil": "softmax-no-object",
    "DetrImageProcessorFast": "softmax-no-object",
    "RTDetrImageProcessor": "sigmoid-topk",
    "RTDetrImageProcessorPil": "sigmoid-topk",
    "RTDetrImageProcessorFast": "sigmoid-topk",
}


def _detr_plan(backend: Any, spec: ExportSpec) -> dict[str, Any]:
    """DETR / RT-DETR (and D-FINE, which uses RT-DETR's processor): the processor's steps as data."""
    name, proc = backend.name, backend.processor
    pname = type(proc).__name__
    scoring = _DETR_PROCESSORS.get(pname)
    if scoring is None:
        raise _not_deployable(
            name,
            f"its image processor {pname} is not one the deploy runtime reproduces "
            f"({', '.join(sorted(_DETR_PROCESSORS))}).",
        )
    resample = getattr(proc, "resample", 2)
    if int(getattr(resample, "value", resample)) != 2:  # PIL BILINEAR
        raise _not_deployable(name, f"its processor resizes with {resample!r}, not bilinear.")
    if spec.output_names != ["logits", "pred_boxes"]:
        raise _not_deployable(name, f"its graph returns {spec.output_names}, not logits and pred_boxes.")
    size = backend._effective_size(backend.options)  # the options' sizes over the processor's
    opts = backend.options
    normalize = (
        {"scale": float(proc.rescale_factor) if proc.do_rescale else 1.0, "mean": [0.0] * 3, "std": [1.0] * 3}
        if not proc.do_normalize
        else {
            "scale": float(proc.rescale_factor) if proc.do_rescale else 1.0,
            "mean": [float(v) for v in proc.image_mean],
            "std": [float(v) for v in proc.image_std],
        }
    )
    ids = sorted(backend.id2label)
    return {
        "kind": "detr",
        "tasks": ["detect"],
        "class_names": [backend.class_name(i) for i in range(max(ids) + 1)],
        "input": {
            "name": spec.input_names[0],
            "mask": spec.input_names[1] if len(spec.input_names) > 1 else None,
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "resize": "shortest-longest-edge" if "shortest_edge" in size else "fixed",
            "size": size,
            "do_resize": bool(proc.do_resize),
            # the Pil processors resize uint8 with Pillow; the others with torch's antialiased bilinear
            # uint8 kernel (reproduced)
            "interpolation": "pil-bilinear" if pname.endswith("Pil") else "torch-antialiased-bilinear-uint8",
            "thin_padding": "edge rows/columns so no side resizes to 0 pixels (the backend's own rule)",
            "rect": True,
        },
        "normalize": normalize,
        "output": {
            "decoding": scoring,
            "raw": spec.output_names[0],
            "boxes": spec.output_names[1],
            "raw_layout": "logits [batch, queries, classes (+1 no-object for softmax)], pred_boxes "
            "[batch, queries, 4] normalised cx, cy, w, h; no NMS",
        },
        "defaults": {
            "threshold": float(opts.threshold),
            "max_detections": None if opts.max_detections is None else int(opts.max_detections),
            "clip_boxes": bool(opts.clip_boxes),
        },
        "metadata": {"label_space": getattr(backend, "label_space", None)},
    }


def _sam_plan(backend: Any, specs: list[ExportSpec]) -> dict[str, Any]:
    """SAM / MobileSAM: the encoder file (this one) and the prompt decoder file beside it."""
    cfg, opts = backend.config, backend.options
    enc, dec = specs
    return {
        "kind": "sam",
        "tasks": ["segment_prompt"],
        "class_names": [],
        "input": {
            "name": enc.input_names[0],
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "imgsz": int(cfg.image_size),
            # SamPredictor: longest side to image_size (Pillow bilinear on uint8, at least 1 pixel),
            # normalise in 0-255, zero-pad bottom/right to a square
            "resize": "longest-side",
            "interpolation": "pil-bilinear",
            "pad": "bottom-right zeros to imgsz x imgsz after normalising",
            "rect": False,
        },
        "normalize": {
            "scale": 1.0,
            "mean": [float(v) for v in backend.model.pixel_mean.flatten().tolist()],
            "std": [float(v) for v in backend.model.pixel_std.flatten().tolist()],
        },
        "output": {
            "decoding": "sam-prompt",
            "raw": enc.output_names[0],
            "decoder_stage": dec.stage,
            "decoder_inputs": list(dec.input_names),
            "decoder_outputs": list(dec.output_names),
            "low_res_size": int(cfg.low_res_size),
            "masks": "low-res logits resized (bilinear, align_corners=False) to imgsz, cropped to the resized "
            "image, resized to the image, > mask_threshold; the best predicted IoU first per prompt",
        },
        "defaults": {
            "mask_threshold": float(opts.mask_threshold),
            "multimask_output": opts.multimask_output,
            "cache_size": int(opts.cache_size),
            "max_points": opts.max_points,
            "max_prompts": opts.max_prompts,
            "decoder_chunk": int(getattr(backend, "decoder_chunk", 4)),
        },
        "metadata": {"model_type": backend.model_type},
    }


def _deploy_flag(value: bool | str | None) -> bool | None:
    """``deploy=`` from Python (bool) or the CLI (``-R deploy=true``); ``None`` means "if possible"."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    if text in ("", "auto", "none"):
        return None
    raise InvalidOptionError(f"deploy must be true, false or auto, but got {value!r}.")


def requested_plan(backend: Any, deploy: bool | str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The deploy plan an exporter writes for ``deploy=`` (true: required, false: none, auto: if possible).

    Returns:
        ``(plan, None)``, or ``(None, why)`` when auto found the backend not deployable, or ``(None, None)``
        when ``deploy=false``.

    Raises:
        ExportNotSupportedError: ``deploy=true`` and the backend cannot be deployed.
        InvalidOptionError: ``deploy`` is not true, false or auto.
    """
    want = _deploy_flag(deploy)
    if want is False:
        return None, None
    try:
        return deploy_plan_for(backend, export_specs_of(backend)), None
    except ExportNotSupportedError as exc:
        if want:
            raise
        return None, str(exc)


def deploy_plan_for(backend: Any, specs: list[ExportSpec]) -> dict[str, Any]:
    """:func:`deploy_plan` for a backend's whole list of networks (SAM: encoder + prompt decoder)."""
    name = getattr(backend, "name", type(backend).__name__)
    if len(specs) == 1:
        return deploy_plan(backend, specs[0])
    if (
        name in ("sam", "mobile-sam")
        and len(specs) == 2
        and specs[1].stage == "decoder_forward"
        and hasattr(backend, "transform")
    ):
        return _sam_plan(backend, specs)
    raise _not_deployable(name, f"it runs {len(specs)} networks ({', '.join(s.stage for s in specs)}).")


def deploy_plan(backend: Any, spec: ExportSpec) -> dict[str, Any]:
    """What the artifact will say about ``backend``; :class:`ExportNotSupportedError` says why not.

    Called before anything is exported, so a backend that cannot be deployed fails fast.
    """
    name = getattr(backend, "name", type(backend).__name__)
    task = getattr(backend, "model_task", None)
    names = getattr(backend, "names", {})
    class_names = [str(names.get(i, i)) for i in range(len(names))]
    opts = backend.options
    if getattr(backend, "family", None) in ("detection", "instance") and hasattr(backend, "_fixed_size"):
        return _torchvision_detector_plan(backend, spec)
    if getattr(backend, "family", None) in ("classification", "semantic") and hasattr(backend, "transform"):
        return _torchvision_plan(backend, spec)
    if getattr(backend, "model_class", None) == "AutoModelForObjectDetection" and hasattr(
        backend, "processor"
    ):
        return _detr_plan(backend, spec)
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
    segment = name == "yolo-seg" and task == "segment"
    if (
        name not in ("yolo", "yolo-seg")
        or task not in ("detect", "segment")
        or getattr(backend, "is_rtdetr", False)
        or getattr(backend, "end2end", False)
    ):
        raise _not_deployable(name, "its pre/post-processing still needs torch.")
    nc = len(class_names)
    output: dict[str, Any] = {
        "decoding": "yolo-segment-nms" if segment else "yolo-detect-nms",
        "raw": "output0",
        "selected": "selected",
        "raw_layout": "[batch, 4 + classes + masks, anchors]: cx, cy, w, h in input pixels, then class "
        "scores 0-1, then mask coefficients (none for a detector)",
        "num_classes": nc,
        "nms": "ONNX NonMaxSuppression in the graph on each anchor's best class, boxes shifted by "
        "class * class_offset (7680, or 0 for class-agnostic), as ultralytics",
        "class_offset": 7680.0,
        "boxes": "xyxy in original-image pixels (letterbox undone, clipped)",
    }
    defaults: dict[str, Any] = {
        "conf": float(opts.conf),
        "iou": float(opts.iou),
        "max_det": int(opts.max_det),
    }
    if segment:
        output.update(
            protos="output1",
            protos_layout="[batch, masks, input_h / 4, input_w / 4]",
            masks="coefficients @ protos at proto resolution (numpy), then ultralytics' process_mask_native "
            "(retina) or process_mask + scale_masks, bilinear (OpenCV INTER_LINEAR), threshold 0, cropped "
            "to the box; detections with an empty mask are dropped",
        )
        defaults["retina_masks"] = bool(opts.retina_masks)
    return {
        "kind": "yolo-segment" if segment else "yolo-detect",
        "tasks": ["detect", "segment_instances"] if segment else ["detect"],
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
        "output": output,
        "defaults": defaults,
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


def nms_tail(num_classes: int) -> Any:
    """The NMS that :func:`write_artifact` appends, alone: an ONNX model from ``output0`` (``[batch,
    channels, anchors]``) and the threshold inputs to ``selected``.

    Other runtimes (the OpenVINO exporter) convert it and join it to their own network, so every
    artifact runs the same suppression.
    """
    from onnx import TensorProto, helper

    raw = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", "channels", "anchors"])
    graph = helper.make_graph([], "visionkit_nms", [raw], [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return _with_nms(model, num_classes)


def artifact_meta(plan: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The ``visionkit`` metadata object every deploy artifact carries (ONNX ``metadata_props``,
    OpenVINO ``rt_info``): the plan, what the build knows, the schema, the versions, the time."""
    version = "unknown"
    for dist in ("visionkit-core", "visionkit"):  # the core's distribution name, then its old one
        try:
            version = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    return {
        "schema": SCHEMA,
        **plan,
        **info,
        "source": {**info.get("source", {}), "visionkit": version},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_artifact(
    model_bytes: bytes, plan: dict[str, Any], info: dict[str, Any], output: Any
) -> dict[str, Any]:
    """Write ``model_bytes`` (the exported network) as a self-describing deploy artifact at ``output``.

    ``info`` carries what the build knows: ``precision``, ``calibration``, ``gate``, ``quantization``,
    ``source``. Returns the metadata written.
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    if plan["kind"] in ("yolo-detect", "yolo-segment"):
        model = _with_nms(model, len(plan["class_names"]))
    meta = artifact_meta(plan, info)
    del model.metadata_props[:]
    for key, value in (("visionkit.schema", str(SCHEMA)), ("visionkit", json.dumps(meta, sort_keys=True))):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(output))
    return meta
