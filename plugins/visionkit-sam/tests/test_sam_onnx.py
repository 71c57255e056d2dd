"""SAM on ONNX Runtime: the image encoder AND the prompt decoder leave torch (two exported networks).

Tolerances: fp32 ONNX vs torch on the same random weights: masks IoU >= 0.999, predicted IoU and
low-res logits within 1e-4 (measured ~1e-6). INT8 (static encoder, dynamic decoder) on a random tiny
model, whose logits hover near the 0 threshold (so mask IoU says little): low-res logits correlate
>= 0.97 with fp32's (measured 0.985-0.992), predicted IoU within 0.05 (measured <= 0.009).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("visionkit_onnx")

import torch

import visionkit
from visionkit.export import export_specs_of

PROMPTS = [
    {"points": [(30, 20)]},
    {"boxes": [[10, 10, 80, 90], [50, 40, 120, 90]]},
    {"points": [[(30, 20), (40, 50)]] * 3, "labels": [[1, 0]] * 3},
]


def load_seeded(name: str, **kwargs: Any) -> Any:
    torch.manual_seed(0)  # the same random weights as the plugin's other tests
    return visionkit.load(name, weights=None, **kwargs)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = (a & b).sum((1, 2))
    union = (a | b).sum((1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sam-onnx")


@pytest.fixture(scope="module", params=["sam", "mobile-sam"])
def pair(request: pytest.FixtureRequest, cache: Path) -> tuple[Any, Any, Any]:
    """``(torch, ort fp32, ort int8)`` backends with the same random weights."""
    name = request.param
    opts = {"runtime": "onnxruntime", "runtime_options": {"cache_dir": cache}}
    return (
        load_seeded(name),
        load_seeded(name, precision="fp32", **opts),
        load_seeded(name, precision="int8", **opts),
    )


def test_both_networks_are_exported(pair: tuple[Any, Any, Any]) -> None:
    ref, fp32, _ = pair
    assert [s.stage for s in export_specs_of(ref)] == ["forward", "decoder_forward"]
    stages = fp32.runtime["stages"]
    assert set(stages) == {"forward", "decoder_forward"}
    assert all(Path(s["model_path"]).exists() for s in stages.values())
    # the torch decoder is no longer called: the stage is the ORT session
    assert type(fp32.decoder_forward).__name__ == "OrtForward"
    # two sessions run in turn: their threads must not spin-wait and steal each other's cores
    assert fp32.runtime["spinning"] is False
    spin = fp32.decoder_forward.session.get_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning"
    )
    assert spin == "0"


@pytest.mark.parametrize("prompt", PROMPTS, ids=["point", "boxes", "grouped-points"])
def test_fp32_onnx_matches_torch(pair: tuple[Any, Any, Any], image: np.ndarray, prompt: dict) -> None:
    ref, fp32, _ = pair
    a, b = ref.segment_prompt(image, **prompt), fp32.segment_prompt(image, **prompt)
    assert a.mask.shape == b.mask.shape
    assert _iou(a.mask, b.mask).min() >= 0.999
    np.testing.assert_allclose(b.score, a.score, atol=1e-4)
    np.testing.assert_allclose(b.logits, a.logits, atol=1e-4)


def test_fp32_onnx_mask_refinement(pair: tuple[Any, Any, Any], image: np.ndarray) -> None:
    ref, fp32, _ = pair
    first = ref.segment_prompt(image, points=[(30, 20)])
    a = ref.segment_prompt(image, points=[(30, 20)], mask_input=first.logits[0])
    b = fp32.segment_prompt(image, points=[(30, 20)], mask_input=first.logits[0])
    np.testing.assert_allclose(b.logits, a.logits, atol=1e-4)


def test_int8_is_close_to_fp32(pair: tuple[Any, Any, Any], image: np.ndarray) -> None:
    _, fp32, int8 = pair
    assert int8.runtime["stages"]["decoder_forward"]["quantization"] == "dynamic"
    assert int8.runtime["stages"]["forward"]["quantization"] == "static"
    for prompt in PROMPTS:
        a, b = fp32.segment_prompt(image, **prompt), int8.segment_prompt(image, **prompt)
        for x, y in zip(a.logits, b.logits, strict=True):
            assert np.corrcoef(x.ravel(), y.ravel())[0, 1] >= 0.97, prompt
        np.testing.assert_allclose(b.score, a.score, atol=0.05)
    sizes = {k: v["size_bytes"] for k, v in int8.runtime["stages"].items()}
    assert all(sizes[k] < fp32.runtime["stages"][k]["size_bytes"] for k in sizes)


def test_export_writes_one_file_per_network(pair: tuple[Any, Any, Any], tmp_path: Path, cache: Path) -> None:
    from visionkit_onnx._export import export

    ref, _, _ = pair
    report = export(ref, precision="fp32", output=tmp_path / "sam.onnx", cache_dir=cache)
    assert report["cache_hit"] is True  # the pair fixture built the same models
    files = {k: Path(v) for k, v in report["files"].items()}
    assert files == {
        "forward": tmp_path / "sam.onnx",
        "decoder_forward": tmp_path / "sam.decoder_forward.onnx",
    }
    assert all(p.stat().st_size > 0 for p in files.values())
    json.dumps(report)


def test_static_int8_decoder_calibrates_through_the_encoder(image: np.ndarray, tmp_path: Path) -> None:
    """quantization='static' reaches the decoder too: its calibration feeds come from the backend's own
    preprocessing and encoder, with a grid of clicks."""
    fp32 = load_seeded("sam")
    static = load_seeded(
        "sam",
        precision="int8",
        runtime="onnxruntime",
        runtime_options={"cache_dir": tmp_path, "quantization": "static", "calib_images": 2},
    )
    assert static.runtime["stages"]["decoder_forward"]["quantization"] == "static"
    a, b = fp32.segment_prompt(image, points=[(30, 20)]), static.segment_prompt(image, points=[(30, 20)])
    assert a.mask.shape == b.mask.shape and np.isfinite(b.logits).all()


def test_random_inits_do_not_share_a_cache_entry() -> None:
    torch.manual_seed(1)
    a = visionkit.load("sam", weights=None)
    torch.manual_seed(2)
    b = visionkit.load("sam", weights=None)
    torch.manual_seed(1)
    c = visionkit.load("sam", weights=None)
    keys = [[s.key for s in export_specs_of(m)] for m in (a, b, c)]
    assert keys[0] == keys[2]
    assert all(x != y for x, y in zip(keys[0], keys[1], strict=True))
