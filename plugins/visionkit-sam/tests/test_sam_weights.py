"""Checkpoint loading: official state-dict layouts saved from tiny models and re-loaded through visionkit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from visionkit_sam._model import OFFICIAL_WEIGHTS, build_model, config_from_state_dict, preset

import visionkit
from visionkit import BackendError, InvalidOptionError, UnsafeWeightsError, WeightsNotFoundError


def _save(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)  # exactly what the official .pth / mobile_sam.pt files hold
    return path


def test_sam_checkpoint_round_trip(tiny_sam: Any, image: np.ndarray, tmp_path: Path) -> None:
    path = _save(tiny_sam.model, tmp_path / "sam_tiny.pth")
    loaded = visionkit.load("sam", weights=path, model_type="tiny")
    inferred = visionkit.load("sam", weights=str(path))  # model type read off the state dict
    assert loaded.model_type == inferred.model_type == "tiny"
    want = tiny_sam.segment_prompt(image, points=[(30, 20)], boxes=[(10, 10, 60, 50)])
    assert loaded.segment_prompt(image, points=[(30, 20)], boxes=[(10, 10, 60, 50)]) == want
    assert inferred.segment_prompt(image, points=[(30, 20)], boxes=[(10, 10, 60, 50)]) == want


def test_mobile_sam_checkpoint_round_trip(tiny_mobile_sam: Any, image: np.ndarray, tmp_path: Path) -> None:
    path = _save(tiny_mobile_sam.model, tmp_path / "mobile_sam_tiny.pt")
    # TinyViT weights do not record the input size: give it (MobileSAM's own is 1024, the default).
    loaded = visionkit.load("mobile-sam", weights=path, image_size=256)
    assert loaded.model_type == "tiny_vit_t" and loaded.config.encoder == "tinyvit"
    assert loaded.segment_prompt(image, boxes=[(10, 10, 60, 50)]) == tiny_mobile_sam.segment_prompt(
        image, boxes=[(10, 10, 60, 50)]
    )


@pytest.mark.parametrize("model_type", ["vit_b", "vit_t"])
def test_official_configs_are_recognised(model_type: str) -> None:
    """The full-size layouts (random init; no real weights on these machines) are identified by shape."""
    # vit_b on the meta device: no memory or init time, only shapes matter (TinyViT's init needs real tensors).
    with torch.device("meta" if model_type == "vit_b" else "cpu"):
        sd = build_model(preset(model_type)).state_dict()
    assert config_from_state_dict(sd).model_type == model_type


def test_mobile_sam_layout_loads_into_ultralytics(tmp_path: Path) -> None:
    """A full-size random MobileSAM saved by us loads strictly into ultralytics' build_mobile_sam."""
    from ultralytics.models.sam.build import build_mobile_sam

    torch.manual_seed(0)
    path = _save(build_model(preset("vit_t")), tmp_path / "mobile_sam.pt")
    ref = build_mobile_sam(checkpoint=str(path))  # load_state_dict(strict=True) inside
    assert sum(p.numel() for p in ref.parameters()) > 9_000_000


def test_model_type_mismatch(tmp_path: Path, tiny_sam: Any) -> None:
    path = _save(tiny_sam.model, tmp_path / "t.pth")
    with pytest.raises(
        InvalidOptionError,
        match=r"model_type='vit_b' does not match .* which is a 'tiny' model \(embed_dim 64, depth 2\)",
    ):
        visionkit.load("sam", weights=path, model_type="vit_b")


def test_image_size_mismatch_for_vit(tmp_path: Path, tiny_sam: Any) -> None:
    path = _save(tiny_sam.model, tmp_path / "t.pth")
    with pytest.raises(InvalidOptionError, match="image_size=512 does not match the checkpoint"):
        visionkit.load("sam", weights=path, image_size=512)


def test_not_a_sam_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"backbone.weight": torch.zeros(2)}, path)
    with pytest.raises(BackendError, match="does not look like a SAM / MobileSAM state dict"):
        visionkit.load("sam", weights=path)


def test_pickled_object_refused_by_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole module: needs unpickling code, refused
    with pytest.raises(UnsafeWeightsError, match=r"SAM checkpoint .* is not a plain state dict"):
        visionkit.load("sam", weights=path)


def test_truncated_state_dict(tmp_path: Path, tiny_sam: Any) -> None:
    sd = tiny_sam.model.state_dict()
    sd.pop("mask_decoder.iou_token.weight")
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(BackendError, match="does not fit the 'tiny' architecture"):
        visionkit.load("sam", weights=tmp_path / "broken.pth")


def test_default_weights_offline_lists_places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VISIONKIT_OFFLINE", "1")
    monkeypatch.setenv("VISIONKIT_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        visionkit.load("sam")  # default: sam_vit_b_01ec64.pth
    msg = str(info.value)
    assert "sam_vit_b_01ec64.pth" in msg and str(tmp_path) in msg and "offline mode is on" in msg
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in msg


def test_weights_found_in_visionkit_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_sam: Any
) -> None:
    _save(tiny_sam.model, tmp_path / "sam_vit_b_01ec64.pth")
    monkeypatch.setenv("VISIONKIT_WEIGHTS", str(tmp_path))
    assert visionkit.load("sam").model_type == "tiny"  # the file named like the default, found there


def test_download_uses_official_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_sam: Any) -> None:
    monkeypatch.delenv("VISIONKIT_OFFLINE", raising=False)
    monkeypatch.delenv("VISIONKIT_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    urls: list[str] = []

    def fake_download(url: str, dst: str, progress: bool = True) -> None:
        urls.append(url)
        torch.save(tiny_sam.model.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    sam = visionkit.load("sam", weights="sam_vit_b_01ec64.pth")
    assert urls == [OFFICIAL_WEIGHTS["sam_vit_b_01ec64.pth"][1]]
    assert (tmp_path / "hub" / "checkpoints" / "sam_vit_b_01ec64.pth").exists() and sam.model_type == "tiny"
    visionkit.load("sam", weights="sam_vit_b_01ec64.pth")
    assert len(urls) == 1, "a cached download is not fetched again"


def test_unknown_name_has_no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VISIONKIT_OFFLINE", raising=False)
    with pytest.raises(WeightsNotFoundError, match=r"no official download for 'my_sam\.pth'"):
        visionkit.load("sam", weights="my_sam.pth")


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"model_type": "vit_x"}, "model_type"),
        ({"image_size": 100}, "image_size must be a multiple of 64"),
        ({"cache_size": -1}, "cache_size"),
        ({"treshold": 0.5}, "Unknown option 'treshold'"),
    ],
)
def test_bad_options(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidOptionError, match=fragment):
        visionkit.load("sam", weights=None, **options)


def test_precision_other_than_fp32_needs_a_runtime() -> None:
    from visionkit_sam._backend import SamBackend

    with pytest.raises(
        InvalidOptionError, match="runs natively in 'fp32' or 'bf16', but got precision 'fp16'"
    ):
        SamBackend(weights=None, precision="fp16")
