"""Weights resolution: explicit path → VISIONKIT_WEIGHTS → download; the error lists every place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from visionkit import WeightsNotFoundError, resolve_weights


def test_explicit_path_wins(tmp_path: Path) -> None:
    f = tmp_path / "m.pt"
    f.write_bytes(b"x")
    assert resolve_weights(f) == f


def test_weights_dirs_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (b / "m.pt").write_bytes(b"x")
    (b / "org--model").mkdir()
    monkeypatch.setenv("VISIONKIT_WEIGHTS", f"{a}{os.pathsep}{b}")
    assert resolve_weights("m.pt") == b / "m.pt"
    assert resolve_weights("org/model") == b / "org--model"  # hub ids may be stored flattened


def test_download_is_last_and_skipped_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("VISIONKIT_WEIGHTS", "VISIONKIT_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # Hugging Face's switch does not block other libraries
    target = tmp_path / "dl.pt"
    target.write_bytes(b"x")
    assert resolve_weights("dl-name.pt", download=lambda name: target) == target
    monkeypatch.setenv("VISIONKIT_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="skipped: offline mode is on"):
        resolve_weights("dl-name.pt", download=lambda name: target, download_from="the hub")


def test_error_lists_every_place_and_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VISIONKIT_OFFLINE", raising=False)
    monkeypatch.setenv("VISIONKIT_WEIGHTS", str(tmp_path / "nope"))

    def fail(name: str) -> None:
        raise ConnectionError("network unreachable")

    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(
            "yolov8n.pt", download=fail, download_from="ultralytics GitHub releases", hint="See docs."
        )
    msg = str(info.value)
    assert "Weights 'yolov8n.pt' not found" in msg
    assert "yolov8n.pt (as given)" in msg
    assert str(tmp_path / "nope" / "yolov8n.pt") in msg and "directory does not exist" in msg
    assert "ultralytics GitHub releases (failed: ConnectionError: network unreachable)" in msg
    assert "VISIONKIT_WEIGHTS" in msg and "See docs." in msg
    assert isinstance(info.value, FileNotFoundError)
