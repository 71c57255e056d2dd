"""The README's demo: detect objects in a photo, print them and write an annotated copy.

    python examples/demo.py                                   # yolov8n.pt via VISIONKIT_WEIGHTS or download
    python examples/demo.py --weights yolov8n-dq.pt --image street.jpg

Offline without the weights it says exactly where it looked and where to put the file.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import visionkit
from visionkit.draw import annotate


def sample_image() -> Path:
    """A real photo: coco-mini from VISIONKIT_DATA, else the bus.jpg that ships with ultralytics."""
    data = os.environ.get("VISIONKIT_DATA")
    if data and (Path(data) / "coco-mini/images/000000039769.png").exists():
        return Path(data) / "coco-mini/images/000000039769.png"
    try:
        from ultralytics.utils import ASSETS
    except ImportError:
        sys.exit("No sample image: pass --image PATH (or install visionkit-yolo, which ships bus.jpg).")
    return Path(ASSETS) / "bus.jpg"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="yolo")
    parser.add_argument("--weights", default="yolov8n.pt")
    parser.add_argument("--image", type=Path)
    parser.add_argument("--save-dir", type=Path, default=Path("runs/demo"))
    args = parser.parse_args()
    image = args.image or sample_image()
    try:
        detector = visionkit.load(args.backend, task="detect", weights=args.weights)
        dets = detector.detect(image)
    except visionkit.VisionKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{image.name}: {len(dets)} objects ({detector.name}, {args.weights})")
    for d in dets:
        print(f"  {d.class_name}: {d.confidence:.2f} at [{', '.join(f'{v:.0f}' for v in d.xyxy)}]")
    args.save_dir.mkdir(parents=True, exist_ok=True)
    out = args.save_dir / f"{image.stem}.jpg"
    annotate(image, dets).save(out, quality=90)
    print(f"annotated image: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
