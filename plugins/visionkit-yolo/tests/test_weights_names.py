"""Release names missing their size letter or suffix get the names that exist, not only "not found"."""

from __future__ import annotations

import pytest
from visionkit_yolo._backend import _name_hint

import visionkit


@pytest.mark.parametrize(
    "name, expected",
    [
        ("yolov8.pt", "yolov8n.pt, yolov8s.pt, yolov8m.pt, yolov8l.pt, yolov8x.pt"),
        ("yolo11-seg.pt", "yolo11n-seg.pt, yolo11s-seg.pt"),
        ("yolov8", "yolov8n.pt"),
        ("yolov8n-seg", "Did you mean 'yolov8n-seg.pt'?"),
    ],
)
def test_release_names_get_a_hint(name: str, expected: str) -> None:
    assert expected in _name_hint(name)


@pytest.mark.parametrize("name", ["yolov8n.pt", "my-model.pt", "runs/yolov8.pt", "best"])
def test_other_names_get_none(name: str) -> None:
    assert _name_hint(name) == ""


def test_load_names_the_sizes(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("VISIONKIT_OFFLINE", "1")
    monkeypatch.setenv("VISIONKIT_WEIGHTS", str(tmp_path))
    with pytest.raises(
        visionkit.WeightsNotFoundError, match=r"'yolov8\.pt' names no model size.*yolov8n\.pt"
    ):
        visionkit.load("yolo", weights="yolov8.pt")
    with pytest.raises(visionkit.InvalidOptionError, match=r"Did you mean 'yolov8n-seg\.pt'\?"):
        visionkit.load("yolo-seg", weights="yolov8n-seg")
