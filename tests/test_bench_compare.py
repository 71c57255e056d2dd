"""visionkit.compare and the eval/compare CLI on fakes and a generated COCO dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pycocotools", reason="compare evaluates COCO mAP with pycocotools")

from visionkit.cli._reports import add_commands
from visionkit.compare import CompareEntry, CompareReport, compare, delta_text, parse_spec
from visionkit.errors import InvalidOptionError
from visionkit.registry import Registry
from visionkit.testing.fakes import fake_plugin

REGISTRY = Registry(entry_points=[], plugins=[fake_plugin()])
FAKES = "visionkit.testing.fakes:fake_plugin"


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """Six images with red and green squares (ground truth shifted by a pixel or two)."""
    rng = np.random.default_rng(3)
    (tmp_path / "images").mkdir()
    images, anns = [], []
    for i in range(6):
        img = rng.integers(70, 110, size=(64, 80, 3), dtype=np.uint8)
        for cat, colour in ((1, (220, 30, 30)), (2, (30, 210, 40))):
            x, y, s = int(rng.integers(0, 50)), int(rng.integers(0, 34)), int(rng.integers(8, 28))
            img[y : y + s, x : x + s] = colour
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cat,
                    "bbox": [x + i % 3, y, s, s],
                    "area": s * s,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + s, y, x + s, y + s, x, y + s]],
                }
            )
        Image.fromarray(img).save(tmp_path / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 64, "width": 80})
    cats = [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_parse_spec() -> None:
    assert parse_spec("yolo") == ("yolo", None)
    assert parse_spec("yolo:int8") == ("yolo", "int8")
    assert parse_spec(" detr:FP16 ") == ("detr", "fp16")
    with pytest.raises(
        InvalidOptionError, match=r"Invalid spec 'yolo:fast': the part after ':' must be a precision"
    ):
        parse_spec("yolo:fast")


def test_compare_with_every_row_failed_writes_no_plot(tmp_path: Path, coco: Path) -> None:
    # README's `visionkit compare` without weights: every row errors; an empty chart is not written
    plot = tmp_path / "tradeoff.png"
    report = compare(
        ["fake-detector:int8"], coco=coco, images=coco.parent / "images", registry=REGISTRY, runs=1, plot=plot
    )
    assert report.entries[0].error is not None
    assert report.plot is None and not plot.exists()
    assert any("no plot written" in n for n in report.notes)


def test_compare_table_deltas_errors_and_plot(tmp_path: Path, coco: Path) -> None:
    pytest.importorskip("matplotlib", reason="the trade-off plot needs matplotlib")
    plot = tmp_path / "out" / "tradeoff.png"
    report = compare(
        ["fake-detector", "fake-instance", "fake-detector:int8"],
        coco=coco,
        images=coco.parent / "images",
        registry=REGISTRY,
        runs=3,
        warmup=1,
        plot=plot,
    )
    first, second, int8 = report.entries
    assert first.error is None and first.ap is not None and first.latency_ms is not None
    assert first.evaluation is not None and first.ap == first.evaluation.bbox.ap
    assert first.bench is not None and first.bench.images_per_s == first.images_per_s
    assert first.delta is None
    assert second.ap == first.ap  # same detections, same boxes
    assert second.delta is not None and second.delta.startswith("+0.0 AP, ") and "memory" in second.delta
    assert int8.error is not None and "does not support precision 'int8'" in int8.error
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.plot == str(plot)
    table = report.table()
    assert "fake-detector:int8" in table and "error: InvalidOptionError" in table and "vs first" in table
    assert CompareReport.model_validate_json(report.to_json()) == report


def test_compare_imgsz_multiplies_entries(coco: Path) -> None:
    report = compare(
        ["fake-detector"],
        coco=coco,
        images=coco.parent / "images",
        registry=REGISTRY,
        imgsz=[32, 64],
        runs=2,
        warmup=0,
        limit=2,
    )
    assert [e.label for e in report.entries] == ["fake-detector@32", "fake-detector@64"]
    assert all(e.evaluation is not None and e.evaluation.num_images == 2 for e in report.entries)


def test_delta_text_reads_like_a_decision() -> None:
    base = CompareEntry(
        spec="yolo",
        backend="yolo",
        precision="fp32",
        ap=0.424,
        latency_ms=52.0,
        peak_rss_mb=400.0,
        model_size_mb=12.0,
    )
    int8 = CompareEntry(
        spec="yolo:int8",
        backend="yolo",
        precision="int8",
        ap=0.416,
        latency_ms=20.0,
        peak_rss_mb=120.0,
        model_size_mb=3.0,
    )
    assert delta_text(int8, base) == "-0.8 AP, 2.6x faster, 0.30x memory, 0.25x size"
    slow = int8.model_copy(update={"latency_ms": 104.0})
    assert "2.0x slower" in delta_text(slow, base)


def test_compare_needs_specs(coco: Path) -> None:
    with pytest.raises(InvalidOptionError, match="at least one backend spec"):
        compare([], coco=coco, images=coco.parent / "images")


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="visionkit")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_eval_and_compare(tmp_path: Path, coco: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = str(coco.parent / "images")
    results = tmp_path / "res.json"
    assert (
        _cli(
            [
                "eval",
                "fake-detector",
                "--coco",
                str(coco),
                "--images",
                images,
                "--plugin",
                FAKES,
                "--json",
                "--results",
                str(results),
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert (
        data["kind"] == "coco"
        and data["bbox"]["ap"] > 0
        and data["settings"]["backend_options"] == {"conf": 0.001}
    )
    assert len(json.loads(results.read_text())) == data["num_detections"]

    assert (
        _cli(
            ["eval", "fake-instance", "--coco", str(coco), "--images", images, "--plugin", FAKES, "--no-segm"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "AP50" in out and "segm" not in out

    assert (
        _cli(["eval", "fake-detector:int8", "--coco", str(coco), "--images", images, "--plugin", FAKES]) == 2
    )
    assert capsys.readouterr().err.startswith("error: ")

    assert _cli(["eval", "fake-detector", "--plugin", FAKES]) == 2
    assert "Give exactly one dataset" in capsys.readouterr().err

    out_json = tmp_path / "cmp.json"
    assert (
        _cli(
            [
                "compare",
                "fake-detector",
                "fake-instance",
                "--coco",
                str(coco),
                "--images",
                images,
                "--plugin",
                FAKES,
                "--runs",
                "2",
                "--warmup",
                "0",
                "--no-isolate",
                "--rounds",
                "2",
                "--output",
                str(out_json),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "fake-instance" in table and "+0.0 AP" in table
    saved = json.loads(out_json.read_text())
    assert [e["bench"]["rounds"] for e in saved["entries"]] == [2, 2]
    assert [e["spec"] for e in saved["entries"]] == [
        "fake-detector",
        "fake-instance",
    ]


def test_cli_eval_imagefolder_and_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, colour in (("red", (220, 30, 30)), ("green", (30, 210, 40))):
        (tmp_path / "val" / name).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), colour, np.uint8)).save(tmp_path / "val" / name / "a.png")
    assert (
        _cli(["eval", "fake-classifier", "--imagefolder", str(tmp_path / "val"), "--plugin", FAKES, "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["top1"] == 1.0
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((8, 8), 1, np.uint8)).save(tmp_path / "masks" / "a.png")
    assert (
        _cli(
            [
                "eval",
                "fake-semantic",
                "--masks",
                str(tmp_path / "masks"),
                "--images",
                str(tmp_path / "val" / "red"),
                "--plugin",
                FAKES,
                "--ignore-index",
                "-1",
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["miou"] == 1.0 and data["ignore_index"] is None


def test_cli_compare_exit_status_when_rows_error(
    tmp_path: Path, coco: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = str(coco.parent / "images")
    argv = ["--coco", str(coco), "--images", images, "--plugin", FAKES, "--runs", "1", "--warmup", "0"]
    argv += ["--no-isolate", "--limit", "2", "--plot", str(tmp_path / "p.png")]
    # fake-detector:int8 has no runtime to run it: every row errors, which is not a success
    assert _cli(["compare", "fake-detector:int8", "fake-detector:fp16", *argv]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("error: ") == 2
    assert captured.err.strip() == "2 of 2 rows failed (see the table)"
    assert _cli(["compare", "fake-detector", "fake-detector:int8", *argv]) == 1  # one of two
    assert capsys.readouterr().err.strip() == "1 of 2 rows failed (see the table)"
    assert _cli(["compare", "fake-detector", *argv, "--limit", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --limit must be a number of images, at least 1")


def test_model_size_counts_the_openvino_weights_beside_the_xml(tmp_path: Path) -> None:
    from visionkit.bench import _model_size_mb

    xml = tmp_path / "m.xml"
    xml.write_bytes(b"x" * 2**19)
    xml.with_suffix(".bin").write_bytes(b"w" * 2**21)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"o" * 2**20)
    assert _model_size_mb(xml) == 2.5 and _model_size_mb(onnx) == 1.0 and _model_size_mb(None) is None
