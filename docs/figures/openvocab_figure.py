"""Regenerate docs/figures/open-vocabulary-predict.jpg: ``visionkit predict grounding-dino ... --classes ...``.

No real Grounding DINO weights are available offline, so the checkpoint is a **randomly initialised** tiny
Grounding DINO (``visionkit.load("grounding-dino", weights=None)``: the real
``GroundingDinoForObjectDetection`` architecture with a few small layers and an in-memory BERT tokenizer,
torch seed 0, not picked), saved in the official layout
(``model.save_pretrained`` + ``processor.save_pretrained``) and loaded back by the CLI like a Hub
checkpoint. The picture shows the command and the drawing, not the model's quality
(OWLv2's random box head draws slivers, so Grounding DINO's is shown).

Input: COCO val2017 image 000000214753 (two riders on a beach, Flickr, CC BY 2.0) from
``$VISIONKIT_DATA/coco-mini``; without ``VISIONKIT_DATA``, the synthetic
``visionkit.testing.make_test_image`` (written to a temp dir, never to the repo).

Usage (from the repository root, about 20 s on 2 CPU cores)::

    VISIONKIT_DATA=/work/shared/data python docs/figures/openvocab_figure.py [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).parent / "open-vocabulary-predict.jpg"
CLASSES = ["horse", "person", "dog"]
BACKEND = "grounding-dino"


def _image(tmp: Path) -> Path:
    root = os.environ.get("VISIONKIT_DATA")
    photo = Path(root or "/nonexistent") / "coco-mini" / "images" / "000000214753.jpg"
    if root and photo.is_file():
        return photo
    from PIL import Image

    from visionkit.testing import make_test_image

    path = tmp / "synthetic.png"
    Image.fromarray(make_test_image(480, 640, seed=0)).save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    import torch

    import visionkit

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        torch.manual_seed(0)
        backend = visionkit.load(BACKEND, weights=None)
        checkpoint = tmp / f"{BACKEND}-random"
        backend.model.save_pretrained(checkpoint)
        backend.processor.save_pretrained(checkpoint)
        image = _image(tmp)
        command = [
            sys.executable, "-m", "visionkit.cli", "predict", BACKEND, str(image),
            "--weights", str(checkpoint), "--classes", *CLASSES,
            "-O", "threshold=0.3", "-O", "max_detections=6", "--save-dir", str(tmp / "out"),
        ]  # fmt: skip
        subprocess.run(
            command, check=True, env={**os.environ, "VISIONKIT_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
        )
        (annotated,) = (tmp / "out").iterdir()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(annotated, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
