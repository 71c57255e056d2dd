"""What this plugin serves, as plain data: read at registration time, so it must not import torch.

Each :class:`Entry` names a backend, the torchvision builder behind it (``arch``), the weights enum
member it loads by default, and the class names those weights predict when they are cheap to list.
The category tuples are copies of torchvision's ``weights.meta["categories"]``; a test checks they
have not drifted.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COCO_CATEGORIES", "ENTRIES", "VOC_CATEGORIES", "Entry"]

#: torchvision's COCO label space: index = official COCO category id, 0 is background, gaps are "N/A".
COCO_CATEGORIES: tuple[str, ...] = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A",
    "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "N/A",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

#: The 21 Pascal VOC classes torchvision's COCO-trained segmentation weights predict.
VOC_CATEGORIES: tuple[str, ...] = (
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

#: The family decides the backend class: "instance" (masks + boxes), "detection", "semantic", "classification".
FAMILIES = ("instance", "detection", "semantic", "classification")


@dataclass(frozen=True)
class Entry:
    """One registered backend.

    Attributes:
        name: the ``visionkit.load`` name.
        family: ``"instance"``, ``"detection"``, ``"semantic"`` or ``"classification"``.
        arch: torchvision builder name (``torchvision.models.get_model``); ``None`` for the generic
            backends, where the user passes ``arch=`` at load time.
        default_weights: weights enum member used by ``load(name)`` (torchvision's ``DEFAULT`` for
            the generic backends, since the arch is only known at load time).
        categories: class names of the default weights, or a label-space tag when too long to list.
        aliases: other names for ``visionkit.load``.
        description: one line for ``visionkit list``.
    """

    name: str
    family: str
    arch: str | None
    default_weights: str
    categories: tuple[str, ...] | str | None
    aliases: tuple[str, ...] = ()
    description: str = ""


ENTRIES: tuple[Entry, ...] = (
    Entry(
        "maskrcnn", "instance", "maskrcnn_resnet50_fpn_v2", "COCO_V1", COCO_CATEGORIES,
        ("mask-rcnn", "maskrcnn_resnet50_fpn_v2"),
        "Mask R-CNN ResNet-50 FPN v2 (torchvision, COCO): two-stage instance segmentation and detection.",
    ),
    Entry(
        "fasterrcnn", "detection", "fasterrcnn_resnet50_fpn_v2", "COCO_V1", COCO_CATEGORIES,
        ("faster-rcnn", "fasterrcnn_resnet50_fpn_v2"),
        "Faster R-CNN ResNet-50 FPN v2 (torchvision, COCO): two-stage detector, accurate and slow.",
    ),
    Entry(
        "fasterrcnn-mobilenet", "detection", "fasterrcnn_mobilenet_v3_large_fpn", "COCO_V1", COCO_CATEGORIES,
        ("fasterrcnn_mobilenet_v3_large_fpn",),
        "Faster R-CNN MobileNetV3-Large FPN (torchvision, COCO): a light two-stage detector.",
    ),
    Entry(
        "retinanet", "detection", "retinanet_resnet50_fpn_v2", "COCO_V1", COCO_CATEGORIES,
        ("retinanet_resnet50_fpn_v2",),
        "RetinaNet ResNet-50 FPN v2 (torchvision, COCO): one-stage detector with focal loss.",
    ),
    Entry(
        "ssdlite", "detection", "ssdlite320_mobilenet_v3_large", "COCO_V1", COCO_CATEGORIES,
        ("ssdlite320_mobilenet_v3_large",),
        "SSDlite 320 MobileNetV3-Large (torchvision, COCO): small one-stage detector at a fixed 320x320.",
    ),
    Entry(
        "deeplabv3", "semantic", "deeplabv3_resnet50", "COCO_WITH_VOC_LABELS_V1", VOC_CATEGORIES,
        ("deeplabv3_resnet50",),
        "DeepLabV3 ResNet-50 (torchvision, COCO subset with the 21 VOC labels): semantic segmentation.",
    ),
    Entry(
        "lraspp", "semantic", "lraspp_mobilenet_v3_large", "COCO_WITH_VOC_LABELS_V1", VOC_CATEGORIES,
        ("lraspp_mobilenet_v3_large",),
        "LR-ASPP MobileNetV3-Large (torchvision, 21 VOC labels): light semantic segmentation.",
    ),
    Entry(
        "resnet50", "classification", "resnet50", "IMAGENET1K_V2", "imagenet-1k",
        (),
        "ResNet-50 (torchvision, ImageNet-1k): image classifier.",
    ),
    Entry(
        "mobilenet_v3_large", "classification", "mobilenet_v3_large", "IMAGENET1K_V2", "imagenet-1k",
        ("mobilenet_v3",),
        "MobileNetV3-Large (torchvision, ImageNet-1k): light image classifier.",
    ),
    Entry(
        "tv-classifier", "classification", None, "DEFAULT", None,
        ("torchvision-classifier",),
        "Any torchvision classification model by name: load('tv-classifier', arch='efficientnet_b0').",
    ),
    Entry(
        "tv-detector", "detection", None, "DEFAULT", None,
        ("torchvision-detector",),
        "Any torchvision detection model by name: load('tv-detector', arch='fcos_resnet50_fpn').",
    ),
    Entry(
        "tv-segmenter", "semantic", None, "DEFAULT", None,
        ("torchvision-segmenter",),
        "Any torchvision semantic segmentation model by name: load('tv-segmenter', arch='fcn_resnet50').",
    ),
)  # fmt: skip

BY_NAME: dict[str, Entry] = {e.name: e for e in ENTRIES}
