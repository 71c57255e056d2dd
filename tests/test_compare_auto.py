"""``compare ... name:auto``: the row is the recipe precision='auto' picks, and the table and plot name it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pycocotools", reason="compare evaluates COCO mAP with pycocotools")

import vk_test_tune

from visionkit import tune as vt
from visionkit.cli._reports import add_commands
from visionkit.compare import CompareReport, compare
from visionkit.loading import LoadRecipe
from visionkit.registry import Registry

PLUGIN = "vk_test_tune:plugin"


@pytest.fixture
def coco(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three images with red and green squares, labelled; a private tune cache."""
    monkeypatch.setenv("VISIONKIT_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(5)
    (tmp_path / "images").mkdir()
    images, anns = [], []
    for i in range(3):
        img = rng.integers(70, 110, size=(64, 80, 3), dtype=np.uint8)
        for cat, colour in ((1, (220, 30, 30)), (2, (30, 210, 40))):
            x, y, s = int(rng.integers(0, 50)), int(rng.integers(0, 34)), int(rng.integers(10, 28))
            img[y : y + s, x : x + s] = colour
            box = [x, y, s, s]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "bbox": box, "area": s * s, "iscrowd": 0})  # fmt: skip
        Image.fromarray(img).save(tmp_path / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 64, "width": 80})
    cats = [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_compare_names_what_auto_picked(
    coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib", reason="the trade-off plot needs matplotlib")
    reg = Registry(entry_points=[], plugins=[vk_test_tune.plugin], use_environment=False)
    plot = tmp_path / "tradeoff.png"
    # Nothing cached: compare measures the decision once, on its own images, with their real labels.
    report = compare(
        ["tune-slow", "tune-slow:auto"],
        coco=coco,
        images=coco.parent / "images",
        registry=reg,
        runs=2,
        warmup=0,
        plot=plot,
    )
    assert "no precision='auto' decision for 'tune-slow'" in capsys.readouterr().err
    fp32, auto = report.entries
    assert fp32.error is None and auto.error is None, (fp32.error, auto.error)
    # sloppy:int8 is faster but loses every green box: over the 1-point budget; bloat:fp32 is exact.
    assert auto.precision == "auto" and auto.picked == "bloat:fp32"
    assert auto.label == "tune-slow:auto → bloat:fp32"
    assert auto.picked_reason is not None and "the fastest within the 1-point budget" in auto.picked_reason
    assert "faster but over budget: sloppy:int8" in auto.picked_reason
    assert auto.ap == fp32.ap and auto.latency_ms is not None and fp32.latency_ms is not None
    assert auto.latency_ms < fp32.latency_ms  # the pick really ran: 8 ms against 40 ms
    assert not any("was asked for auto" in n for n in report.notes)
    table = report.table()
    assert "tune-slow:auto → bloat:fp32" in table
    assert "tune-slow:auto → bloat:fp32: precision='auto' picked bloat:fp32: the fastest within" in table
    assert plot.is_file() and report.plot == str(plot)
    assert CompareReport.model_validate_json(report.to_json()) == report
    decision = vt.cached(LoadRecipe("tune-slow"), registry=reg)
    assert decision is not None and decision.metric == "COCO AP (real labels)"

    # The CLI reads that decision (no measuring) and prints the same names.
    parser = argparse.ArgumentParser(prog="visionkit")
    add_commands(parser.add_subparsers(dest="command", required=True))
    argv = ["compare", "tune-slow:auto", "--coco", str(coco), "--images", str(coco.parent / "images")]
    argv += ["--plugin", PLUGIN, "--runs", "1", "--warmup", "0", "--no-isolate", "--limit", "1", "--json"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "no precision='auto' decision" not in captured.err
    (row,) = json.loads(captured.out)["entries"]
    assert row["picked"] == "bloat:fp32" and row["picked_reason"] == auto.picked_reason


def test_an_auto_spec_that_cannot_be_decided_is_an_error_row(coco: Path) -> None:
    reg = Registry(entry_points=[], plugins=[vk_test_tune.plugin], use_environment=False)
    report = compare(
        ["tune-slow", "tune-slow:auto"],
        coco=coco,
        images=coco.parent / "images",
        registry=reg,
        options={"margin": 999},  # out of range: the fp32 reference cannot load, nothing to measure
        runs=1,
        warmup=0,
    )
    fp32, auto = report.entries
    assert fp32.error is not None
    assert auto.error is not None and "fp32 reference failed" in auto.error and auto.picked is None
