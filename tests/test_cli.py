"""The command line over the fake backends: list, info, predict --json --save-dir, and error output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionkit.cli import main
from visionkit.registry import Registry
from visionkit.testing import make_test_image


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "scene.png"
    Image.fromarray(make_test_image()).save(path)
    return path


def test_list_and_json(fake_registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "fake-detector" in out and "detect" in out
    assert main(["list", "--task", "semantic", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in payload["backends"]] == ["fake-semantic"]


def test_info(fake_registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "fake-prompt", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tasks"] == ["segment_prompt"] and info["available"] is True


def test_predict_prints_writes_json_and_annotated_images(
    fake_registry: Registry, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, save_dir = tmp_path / "out.json", tmp_path / "annotated"
    code = main(
        [
            "predict",
            "fake-instance",
            str(image),
            str(image),
            "--json",
            str(out_json),
            "--save-dir",
            str(save_dir),
            "-O",
            "conf=0.3",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "3 detections" in text and "red: 1.000 at [" in text
    records = json.loads(out_json.read_text())
    assert (
        len(records) == 2
        and records[0]["task"] == "segment_instances"
        and records[0]["type"] == "InstanceMasks"
    )
    from visionkit import InstanceMasks

    assert len(InstanceMasks.from_dict(records[0]["result"])) == 3
    annotated = np.asarray(Image.open(save_dir / "scene.jpg"))
    assert annotated.shape == (96, 128, 3)


def test_predict_prompt_segmenter_with_points(
    fake_registry: Registry, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", "fake-prompt", str(image), "--point", "20,20"]) == 0
    assert "3 masks" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "fake-detectr", "x.jpg"], "Did you mean 'fake-detector'"),
        (["predict", "fake-detector", "/no/such.jpg"], "'/no/such.jpg' does not exist"),
        (["predict", "fake-detector", "x.jpg", "-O", "conff=1"], "Unknown option 'conff'"),
        (["predict", "fake-detector", "x.jpg", "--task", "classify"], "does not do task 'classify'"),
        (["export", "fake-detector", "-o", "x.onnx", "--runtime", "nope"], "No installed runtime"),
    ],
)
def test_errors_are_one_line_without_traceback(
    fake_registry: Registry, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
