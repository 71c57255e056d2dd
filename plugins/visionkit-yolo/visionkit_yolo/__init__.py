"""visionkit plugin for Ultralytics YOLO models (detection, instance segmentation, classification).

Only the registration lives here; torch and ultralytics are imported by :func:`visionkit.load`.
"""

from __future__ import annotations

from typing import Any

from visionkit import hookimpl

__all__ = ["register_backends"]

_INSTALL = "pip install visionkit-yolo  (pulls in ultralytics and torch)"
_REQUIRES = ("ultralytics", "torch")


@hookimpl
def register_backends(register: Any) -> None:
    """Register ``yolo``, ``yolo-rtdetr``, ``yolo-seg``, ``yolo-cls``, ``yolo-world`` and ``yoloe``."""
    register(
        "yolo",
        "visionkit_yolo._backend:YoloDetector",
        tasks=("detect",),
        aliases=("yolov8", "ultralytics", "yolo-detect"),
        requires=_REQUIRES,
        install=_INSTALL,
        description="Ultralytics YOLO / RT-DETR object detector (any .pt checkpoint, model yaml or .onnx export).",
        default_weights="yolov8n.pt",
        categories="coco80",
        precisions=("fp32", "fp16", "bf16"),
        options="visionkit_yolo._options:DetectOptions",
    )
    register(
        "yolo-rtdetr",
        "visionkit_yolo._backend:RTDETRDetector",
        tasks=("detect",),
        aliases=("ultralytics-rtdetr",),
        requires=_REQUIRES,
        install=_INSTALL,
        description="RT-DETR through ultralytics: NMS-free transformer detector.",
        default_weights="rtdetr-l.pt",
        categories="coco80",
        precisions=("fp32", "fp16", "bf16"),
        options="visionkit_yolo._options:DetectOptions",
    )
    register(
        "yolo-seg",
        "visionkit_yolo._backend:YoloSegmenter",
        tasks=("detect", "segment_instances"),
        aliases=("yolov8-seg", "ultralytics-seg"),
        requires=_REQUIRES,
        install=_INSTALL,
        description="Ultralytics YOLO instance segmentation (boxes + masks at the input resolution).",
        default_weights="yolov8n-seg.pt",
        categories="coco80",
        precisions=("fp32", "fp16", "bf16"),
        options="visionkit_yolo._options:SegmentOptions",
    )
    register(
        "yolo-cls",
        "visionkit_yolo._backend:YoloClassifier",
        tasks=("classify",),
        aliases=("yolov8-cls", "ultralytics-cls"),
        requires=_REQUIRES,
        install=_INSTALL,
        description="Ultralytics YOLO image classifier (top-k classes).",
        default_weights="yolov8n-cls.pt",
        categories="imagenet1k",
        precisions=("fp32", "fp16", "bf16"),
        options="visionkit_yolo._options:ClassifyOptions",
    )
    register(
        "yolo-world",
        "visionkit_yolo._world:YoloWorldDetector",
        tasks=("detect",),
        aliases=("yolov8-world", "yoloworld"),
        requires=_REQUIRES,
        install=_INSTALL,
        description="YOLO-World through ultralytics: open-vocabulary detector told what to find by name "
        "(classes=[...]; CLIP text encoder).",
        default_weights="yolov8s-worldv2.pt",
        precisions=("fp32", "fp16", "bf16"),
        prompt_types=("text",),
        options="visionkit_yolo._options:WorldOptions",
    )
    register(
        "yoloe",
        "visionkit_yolo._world:YoloeSegmenter",
        tasks=("detect", "segment_instances"),
        aliases=("yoloe-seg",),
        requires=_REQUIRES,
        install=_INSTALL,
        description="YOLOE through ultralytics: open-vocabulary boxes and masks of the classes named "
        "(classes=[...]; MobileCLIP text encoder).",
        default_weights="yoloe-11s-seg.pt",
        precisions=("fp32", "fp16", "bf16"),
        prompt_types=("text",),
        options="visionkit_yolo._options:YoloeOptions",
    )
