"""``--trust-pickle`` reaches the backend as its ``trust_pickle`` option in every command that loads one.

The fakes have no such option, so the backend's own "Unknown option 'trust_pickle'" error proves the flag
arrived; the real opt-in is tested in each plugin (a malicious pickle runs only with it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from visionkit.cli import main


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "fake-detector", "{img}", "--trust-pickle"],
        ["predict", "fake-detector", "{dir}", "--out", "{dir}/o.jsonl", "--trust-pickle"],
        ["track", "fake-detector", "{dir}", "--trust-pickle"],
    ],
)
def test_trust_pickle_flag_becomes_the_backend_option_in_loading_commands(
    fake_registry: Any, image: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.format(img=image, dir=image.parent) for a in argv]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc != 0
    assert "trust_pickle" in err, err
    assert "Traceback" not in err


def test_trust_pickle_flag_in_report_and_serve_parsers() -> None:
    from visionkit.cli import build_parser

    parser = build_parser()
    bench = parser.parse_args(["bench", "yolo", "--images", "x", "--trust-pickle"])
    assert "trust_pickle=true" in bench.option
    serve = parser.parse_args(["serve", "yolo", "--trust-pickle"])
    assert "trust_pickle=true" in serve.option
