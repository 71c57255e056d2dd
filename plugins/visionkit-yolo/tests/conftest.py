"""Fixtures of the visionkit-yolo tests: real weights/images when available, tiny random checkpoints otherwise."""

from __future__ import annotations

import os

# Before anything imports ultralytics: offline, quiet, no pip installs (as the plugin itself does).
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import visionkit


def _weights_file(name: str) -> Path:
    """A real checkpoint from VISIONKIT_WEIGHTS, or skip with the reason."""
    raw = os.environ.get("VISIONKIT_WEIGHTS")
    if not raw:
        pytest.skip("VISIONKIT_WEIGHTS is not set: real-weight parity tests need ../shared/data/weights")
    for d in raw.split(os.pathsep):
        if (Path(d) / name).is_file():
            return Path(d) / name
    pytest.skip(f"{name} not found in VISIONKIT_WEIGHTS={raw!r}")


def _coco_image(name: str) -> Path:
    """A coco-mini image from VISIONKIT_DATA, or skip with the reason."""
    raw = os.environ.get("VISIONKIT_DATA")
    if not raw:
        pytest.skip("VISIONKIT_DATA is not set: coco-mini images live in ../shared/data/coco-mini")
    path = Path(raw) / "coco-mini" / "images" / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def weights_file() -> Callable[[str], Path]:
    """``weights_file(name)``: a real checkpoint from VISIONKIT_WEIGHTS, or skip."""
    return _weights_file


@pytest.fixture(scope="session")
def coco_image() -> Callable[[str], Path]:
    """``coco_image(name)``: a coco-mini image from VISIONKIT_DATA, or skip."""
    return _coco_image


@pytest.fixture(scope="session")
def bus() -> np.ndarray:
    """ultralytics' own bus.jpg (shipped in the pip package), as RGB."""
    from ultralytics.utils import ASSETS

    return visionkit.load_image(ASSETS / "bus.jpg")


def save_random_checkpoint(yaml: str, path: Path) -> Path:
    """Save the plugin's seeded random model for ``yaml`` as an ultralytics checkpoint both sides can load."""
    import torch
    from ultralytics.nn import tasks

    d = tasks.yaml_model_load(yaml)
    task = tasks.guess_model_task(d)
    cls = {
        "detect": tasks.DetectionModel,
        "segment": tasks.SegmentationModel,
        "classify": tasks.ClassificationModel,
    }[task]
    if "rtdetr" in yaml:
        cls = tasks.RTDETRDetectionModel
    torch.manual_seed(0)
    model = cls(d, verbose=False)
    # Random heads score everything near zero; a positive class bias gives scores to compare.
    head = model.model[-1]
    if hasattr(head, "cv3"):
        for seq in head.cv3:
            seq[-1].bias.data[:] = -2.0
    torch.save({"model": model, "train_args": {"imgsz": 160, "task": task}}, path)
    return path


@pytest.fixture(scope="session")
def random_ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("yolo-random")
    return {
        "detect": save_random_checkpoint("yolov8n.yaml", root / "det.pt"),
        "segment": save_random_checkpoint("yolov8n-seg.yaml", root / "seg.pt"),
        "classify": save_random_checkpoint("yolov8n-cls.yaml", root / "cls.pt"),
    }
