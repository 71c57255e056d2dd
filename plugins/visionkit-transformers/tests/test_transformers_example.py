"""examples/detr_quickstart.py runs offline: with --random, with a local checkpoint, and fails clearly otherwise."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import load

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "detr_quickstart.py"
LINE = re.compile(r"^.+: \d+(\.\d+)? at \[-?[\d.]+, -?[\d.]+, -?[\d.]+, -?[\d.]+\]$")


@pytest.fixture(scope="module")
def example() -> ModuleType:
    if not EXAMPLE.is_file():
        pytest.skip(f"{EXAMPLE} not found (plugin tested outside the repository)")
    spec = importlib.util.spec_from_file_location("detr_quickstart", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_model_prints_walkthrough_lines(
    example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert example.main(["--random"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(LINE.match(line) for line in lines), lines[:3]


def test_local_checkpoint(example: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    backend = load("detr", weights=None)
    backend.model.save_pretrained(tmp_path / "ckpt")
    backend.processor.save_pretrained(tmp_path / "ckpt")
    image = tmp_path / "image.png"
    Image.fromarray(np.full((60, 80, 3), 120, np.uint8)).save(image)
    assert example.main([str(image), "--weights", str(tmp_path / "ckpt"), "--threshold", "0"]) == 0
    assert all(LINE.match(line) for line in capsys.readouterr().out.strip().splitlines())


def test_missing_weights_message(
    example: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert example.main(["--weights", "facebook/detr-not-cached"]) == 2
    assert "try --random" in capsys.readouterr().err
