"""Registration is lazy and declares what the backends do; export hands over the encoder."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch

import visionkit
from visionkit.export import export_spec_of


def test_registered_backends() -> None:
    specs = {s.name: s for s in visionkit.list_backends()}
    assert (
        specs["sam"].tasks == (visionkit.Task.SEGMENT_PROMPT,)
        and specs["sam"].default_weights == "sam_vit_b_01ec64.pth"
    )
    assert (
        specs["mobile-sam"].default_weights == "mobile_sam.pt"
        and "ultralytics" in specs["mobile-sam"].requires
    )
    assert specs["sam-auto"].tasks == (visionkit.Task.SEGMENT_INSTANCES,)
    assert set(specs["sam"].prompt_types) == {"point", "box", "mask"}
    assert specs["sam"].distribution == "visionkit-sam"


def test_listing_and_pipeline_import_no_model_library() -> None:
    code = (
        "import sys, visionkit, visionkit_sam; visionkit.list_backends(); "
        "from visionkit_sam import pipeline; "
        "bad = [m for m in ('torch', 'segment_anything', 'ultralytics') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unknown_option_fails_before_building_the_model() -> None:
    with pytest.raises(visionkit.InvalidOptionError, match="Did you mean 'cache_size'"):
        visionkit.load("sam", weights=None, cache_sise=3)


def test_export_spec_is_the_encoder(tiny_sam: Any) -> None:
    spec = export_spec_of(tiny_sam)
    (example,) = spec.example_inputs
    assert tuple(example.shape) == (1, 3, 256, 256)
    x = tiny_sam.preprocess([np.zeros((50, 60, 3), np.uint8)], tiny_sam.options).inputs
    with torch.inference_mode():
        torch.testing.assert_close(spec.module(x), tiny_sam.forward(x))
    assert spec.key.startswith("sam-encoder-random-tiny-256")
