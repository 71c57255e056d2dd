"""``visionkit info NAME`` shows the cached ``precision="auto"`` decision, reading only the cache file."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from visionkit import tune as vt
from visionkit.cli import main
from visionkit.loading import LoadRecipe
from visionkit.registry import Registry, reset_registry
from visionkit.testing.fakes import make_test_image

# Importing any of these while `info` runs fails the test (it must stay a light command).
HEAVY = ("torch", "ultralytics", "onnxruntime", "openvino", "transformers")


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    import vk_test_tune

    monkeypatch.setenv("VISIONKIT_CACHE", str(tmp_path / "cache"))
    reg = Registry(entry_points=[], plugins=[vk_test_tune.plugin], use_environment=False)
    reset_registry(reg)
    yield reg
    reset_registry(None)


def _info(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    import vk_test_tune

    built = vk_test_tune.TuneSlowDetector.built
    with monkeypatch.context() as m:
        for name in HEAVY:
            m.setitem(sys.modules, name, None)  # `import torch` now raises ImportError
        code = main(["info", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert vk_test_tune.TuneSlowDetector.built == built  # no model was built
    return captured.out


def test_info_shows_the_cached_auto_decision(
    registry: Registry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = _info(["tune-slow", "-O", "margin=3"], capsys, monkeypatch)
    assert "no cached decision: run `visionkit tune tune-slow -O margin=3 --images DIR`" in out
    assert "no cached decision" in _info(["tune-slow"], capsys, monkeypatch)

    (tmp_path / "photos").mkdir()
    Image.fromarray(make_test_image(96, 128)).save(tmp_path / "photos" / "a.png")
    measured = vt.tune(
        "tune-slow", images=tmp_path / "photos", candidates=["sloppy:int8"], runs=1, rounds=1, warmup=0
    )
    assert measured.cache_file is not None

    out = _info(["tune-slow"], capsys, monkeypatch)
    assert "precision='auto' on this machine:" in out
    assert "picked fp32: the fastest within the 1-point budget" in out  # what and why
    assert "faster but over budget: sloppy:int8" in out
    assert measured.cache_file in out and f"measured {measured.measured_at}" in out
    sloppy_line = next(line for line in out.splitlines() if line.strip().startswith("sloppy:int8"))
    sloppy = next(c for c in measured.candidates if c.label == "sloppy:int8")
    assert f"{sloppy.change:+.2f}" in sloppy_line and f"{sloppy.ratio:.2f}" in sloppy_line
    assert "no cached decision: run `visionkit tune tune-slow -O margin=3" in _info(
        ["tune-slow", "-O", "margin=3"], capsys, monkeypatch
    )  # another key

    data = json.loads(_info(["tune-slow", "--json", "-R", "max_drop=100"], capsys, monkeypatch))
    auto = data["auto"]
    assert auto["picked"] == "sloppy:int8" and auto["max_drop"] == 100  # re-picked from the cache
    assert auto["cache_file"] == measured.cache_file and auto["from_cache"] is True
    rows = {c["label"]: c for c in auto["candidates"]}
    assert rows["sloppy:int8"]["ratio"] == sloppy.ratio and rows["sloppy:int8"]["change"] == sloppy.change
    assert vt.cached(LoadRecipe("tune-slow")) is not None


def test_info_json_says_null_without_a_decision(
    registry: Registry, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = json.loads(_info(["tune-slow", "--json"], capsys, monkeypatch))
    assert data["name"] == "tune-slow" and data["auto"] is None
    assert main(["info", "tune-slow", "-R", "max_drop=lots"]) == 2
    assert "max_drop must be a number of points" in capsys.readouterr().err
