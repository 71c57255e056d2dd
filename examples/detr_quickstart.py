"""The DETR walkthrough (DetrImageProcessor + DetrForObjectDetection, threshold 0.9) in three lines of visionkit.

The transformers version this reproduces::

    processor = DetrImageProcessor.from_pretrained("facebook/detr-resnet-50")
    model = DetrForObjectDetection.from_pretrained("facebook/detr-resnet-50")
    inputs = processor(images=image, return_tensors="pt")
    outputs = model(**inputs)
    target_sizes = torch.tensor([image.size[::-1]])
    results = processor.post_process_object_detection(outputs, target_sizes=target_sizes, threshold=0.9)[0]
    for score, label, box in zip(results["scores"], results["labels"], results["boxes"]):
        print(f"{model.config.id2label[label.item()]}: {round(score.item(), 3)} at {[round(i, 2) for i in box.tolist()]}")

Usage::

    python examples/detr_quickstart.py [IMAGE]                     # facebook/detr-resnet-50 (HF cache or download)
    python examples/detr_quickstart.py IMAGE --weights DIR         # a local checkpoint directory
    python examples/detr_quickstart.py --random                    # tiny random model, offline (smoke test)

IMAGE defaults to the COCO val2017 picture of two cats the walkthrough uses, found under VISIONKIT_DATA.
Needs ``pip install visionkit-transformers`` (which brings timm: the official DETR checkpoints use a timm ResNet).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import visionkit


def _default_image() -> str | np.ndarray:
    data = os.environ.get("VISIONKIT_DATA")
    cats = Path(data) / "coco-mini" / "images" / "000000039769.png" if data else None
    if cats is not None and cats.is_file():
        return str(cats)
    print("(VISIONKIT_DATA not set: using a synthetic image)", file=sys.stderr)
    return np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="image path (default: the COCO cats picture)")
    parser.add_argument("--weights", default=visionkit.DEFAULT, help="hub id or checkpoint directory")
    parser.add_argument(
        "--random", action="store_true", help="tiny random DETR (offline; boxes are meaningless)"
    )
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args(argv)
    image = args.image or _default_image()
    weights = None if args.random else args.weights
    threshold = 0.0 if args.random and args.threshold == 0.9 else args.threshold  # random scores are low
    try:
        # --- the three lines ----------------------------------------------------------------
        detector = visionkit.load("detr", weights=weights, threshold=threshold)
        for det in detector.detect(image):
            print(f"{det.class_name}: {round(det.confidence, 3)} at {[round(v, 2) for v in det.xyxy]}")
        # -------------------------------------------------------------------------------------
    except visionkit.WeightsNotFoundError as exc:
        print(
            f"{exc}\n\nNo DETR weights here: pass --weights DIR, go online, or try --random.", file=sys.stderr
        )
        return 2
    except visionkit.BackendUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
