"""Regenerate docs/sam-predict.jpg: the annotated output of ``visionkit predict mobile-sam ... --save-dir``.

No real SAM / MobileSAM weights are available offline, so the checkpoint is a **randomly initialised**
MobileSAM built by the reference implementation (ultralytics' ``build_mobile_sam``, the same modules and
parameter names as the official ``mobile_sam.pt``) and saved as a plain state dict, exactly the layout of
the released file (torch seed 0, not picked). The picture therefore shows the CLI and the mask drawing,
not SAM's quality: run the same command with the real ``mobile_sam.pt`` for real masks.

Input: COCO val2017 image 000000214753 (two riders on a beach, Flickr, CC BY 2.0) from
``$VISIONKIT_DATA/coco-mini`` with its two ``horse`` boxes from the official annotations; without
``VISIONKIT_DATA``, the synthetic ``visionkit.testing.make_test_image`` (written to a temp dir, never
to the repo) with boxes around its coloured rectangles.

Usage (from the repository root, about 20 s on 2 CPU cores; the output is byte-for-byte reproducible)::

    VISIONKIT_DATA=/work/shared/data python docs/figures/sam_figure.py [--out docs/sam-predict.jpg]
        [--weights mobile_sam.pt]   # real weights instead of the random checkpoint (update the caption)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
IMAGE_ID = 214753  # COCO val2017, "Attribution License" (CC BY 2.0)
CATEGORY = "horse"
MAX_BYTES = 150_000
SEED = 0


def coco_input(data: Path) -> tuple[Path, list[list[float]]]:
    """The COCO image and the xyxy boxes of its ``CATEGORY`` annotations (largest first)."""
    coco = json.loads((data / "coco-mini" / "instances.json").read_text())
    image = next(im for im in coco["images"] if im["id"] == IMAGE_ID)
    cat = next(c["id"] for c in coco["categories"] if c["name"] == CATEGORY)
    anns = sorted(
        (a for a in coco["annotations"] if a["image_id"] == IMAGE_ID and a["category_id"] == cat),
        key=lambda a: -a["area"],
    )
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
    return data / "coco-mini" / "images" / image["file_name"], boxes


def synthetic_input(tmp: Path) -> tuple[Path, list[list[float]]]:
    """``make_test_image`` saved to ``tmp`` and boxes around its red and green rectangles."""
    from visionkit.testing import make_test_image

    h, w = 240, 320
    path = tmp / "test_image.png"
    Image.fromarray(make_test_image(h, w, seed=0)).save(path)
    return path, [[w / 10, h / 8, w / 3, h / 2], [w / 2, h / 3, w * 4 / 5, h * 3 / 4]]


def write_random_mobile_sam(path: Path, seed: int) -> None:
    """A random-init MobileSAM from ultralytics' builder, saved as a state dict (mobile_sam.pt's layout)."""
    from ultralytics.models.sam.build import build_mobile_sam

    torch.manual_seed(seed)
    torch.save(build_mobile_sam().state_dict(), path)


def fit(src: Path, dest: Path, max_bytes: int = MAX_BYTES) -> None:
    """Copy the CLI's picture to ``dest``; if it is over max_bytes, re-encode it (then scale it down) to fit."""
    if src.stat().st_size <= max_bytes:
        shutil.copy(src, dest)
        return
    img = Image.open(src).convert("RGB")
    scale = 1.0
    while True:
        out = img if scale == 1.0 else img.resize((round(img.width * scale), round(img.height * scale)))
        out.save(dest, quality=85, optimize=True)
        if dest.stat().st_size <= max_bytes or scale < 0.3:
            return
        scale *= 0.9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "sam-predict.jpg")
    parser.add_argument("--keep", type=Path, help="also keep the CLI's full-size output in this folder")
    parser.add_argument(
        "--weights", type=Path, help="a real mobile_sam.pt to use instead of the random checkpoint"
    )
    parser.add_argument("--seed", type=int, default=SEED, help="torch seed of the random checkpoint")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sam-figure-") as tmpdir:
        tmp = Path(tmpdir)
        data = os.environ.get("VISIONKIT_DATA")
        image, boxes = coco_input(Path(data)) if data else synthetic_input(tmp)
        weights = args.weights
        if weights is None:
            weights = tmp / "mobile_sam.pt"
            write_random_mobile_sam(weights, args.seed)
        save_dir = tmp / "annotated"
        visionkit = Path(sys.executable).with_name("visionkit")
        cmd = [
            str(visionkit) if visionkit.exists() else "visionkit",
            "predict",
            "mobile-sam",
            str(image),
            "--weights",
            str(weights),
            *[arg for box in boxes for arg in ("--box", ",".join(f"{v:g}" for v in box))],
            "--save-dir",
            str(save_dir),
        ]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        produced = save_dir / (image.stem + ".jpg")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(produced, args.keep / produced.name)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fit(produced, args.out)
    with Image.open(args.out) as done:
        print(f"wrote {args.out} ({done.width}x{done.height}, {args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
