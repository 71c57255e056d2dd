"""The CLI side of streaming: flags, when `predict` hands over, exit codes, messages (in-process)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import visionkit
from visionkit.cli._predict import _Run, add_commands, cmd_predict
from visionkit.stream import read_records
from visionkit.testing import make_test_image


def _parser() -> argparse.ArgumentParser:
    """The real ``visionkit predict`` parser."""
    p = argparse.ArgumentParser()
    add_commands(p.add_subparsers(dest="command", required=True))
    return p


def _args(argv: list[str]) -> argparse.Namespace:
    return _parser().parse_args(["predict", *argv])


def wants_stream(args: argparse.Namespace) -> bool:
    return _Run.from_args(args).streamed


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        Image.fromarray(make_test_image(32, 40, seed=i)).save(d / f"a{i}.png")
    return d


def run(argv: list[str]) -> int:
    return cmd_predict(_args(argv))


def test_when_predict_streams(folder: Path) -> None:
    assert wants_stream(_args(["yolo", str(folder)]))
    assert wants_stream(_args(["yolo", str(folder / "*.png")]))
    assert wants_stream(_args(["yolo", str(folder / "a0.png"), "--out", "x.jsonl"]))
    assert not wants_stream(_args(["yolo", str(folder / "a0.png"), str(folder / "a1.png")]))


def test_predict_folder_to_jsonl_with_options(fake_registry: Any, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    assert run(["fake-detector", str(folder), "--out", str(out), "-O", "conf=0.99", "--no-progress"]) == 0
    records = list(read_records(out))
    det = visionkit.load("fake-detector", conf=0.99, registry=fake_registry)
    assert len(records) == 3
    for rec in records:
        assert visionkit.Detections.from_dict(rec["result"]) == det.detect(rec["source"])


def test_no_out_prints_one_line_per_image_and_saves_annotations(
    fake_registry: Any, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["fake-detector", str(folder), "--save-dir", str(tmp_path / "viz"), "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(folder / f"a{i}.png") for i in range(3)]
    assert all("detections (blue, green, red)" in line for line in lines)
    assert sorted(p.name for p in (tmp_path / "viz").iterdir()) == ["a0.jpg", "a1.jpg", "a2.jpg"]


def test_strict_turns_failures_into_exit_1(
    fake_registry: Any, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "zz.png").write_bytes(b"nope")
    out = tmp_path / "r.jsonl"
    assert run(["fake-detector", str(folder), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"failed: {folder / 'zz.png'}: Cannot decode" in err
    assert err.strip().splitlines()[-1].startswith("3 processed, 0 skipped (already done), 1 failed")
    assert run(["fake-detector", str(folder), "--out", str(out), "--strict", "--no-progress"]) == 1


def test_prompt_flags_reach_segment_prompt(fake_registry: Any, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    assert (
        run(
            [
                "fake-prompt",
                str(folder),
                "--task",
                "segment_prompt",
                "--point",
                "3,4",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    rec = next(read_records(out))
    sam = visionkit.load("fake-prompt", registry=fake_registry)
    assert visionkit.PromptMasks.from_dict(rec["result"]) == sam.segment_prompt(
        rec["source"], points=[[3, 4]], labels=[1]
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--json", "x.json"], "--json keeps every result in memory"),
        (["--every", "0"], "--every must be a positive number of frames, but got 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1, but got 0"),
        (["--ray"], "--ray writes its results to --out"),
        (["--ray", "--out", "x.jsonl", "--every", "3"], "--every and prompts are local only"),
    ],
)
def test_bad_flags_are_explained(fake_registry: Any, folder: Path, argv: list[str], message: str) -> None:
    with pytest.raises(visionkit.InvalidOptionError, match=message):
        run(["fake-detector", str(folder), *argv])


def test_every_public_name_is_in_docs_batch_md() -> None:
    import visionkit.stream

    text = (Path(__file__).parents[1] / "docs" / "batch.md").read_text()
    assert [n for n in visionkit.stream.__all__ if n not in text] == []
    flags = [
        "--out",
        "--every",
        "--batch-size",
        "--strict",
        "--categories",
        "--no-progress",
        "--ray-address",
        "--ray-workers",
        "--ray-gpus",
    ]
    assert [f for f in flags if f not in text] == []
