"""Resume keys, the output lock and damaged results files: no record lost, none written twice.

Records are keyed by the resolved absolute path, so the same folder run from another directory or
through a symlink is skipped; a second run on the same output while one is writing fails at once; a
corrupt line in the middle of the file is kept and reported, and only a half-written last line is cut.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import visionkit
from visionkit.registry import Registry
from visionkit.stream import predict_stream, read_records, resolve_source
from visionkit.testing import fake_plugin, make_test_image


@pytest.fixture
def detector() -> Any:
    reg = Registry(entry_points=[], plugins=[fake_plugin()], use_environment=False)
    return visionkit.load("fake-detector", weights=None, registry=reg)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(4):
        Image.fromarray(make_test_image(32, 40, seed=i)).save(root / f"p{i}.png")
    return root


def _sources(out: Path) -> list[str]:
    return [r["path"] for r in read_records(out)]


# -- item 5: keyed by resolved absolute path ------------------------------------------------------
def test_records_keep_the_path_as_given_and_the_resolved_path(
    detector: Any, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.jsonl"
    predict_stream(detector, ["photos"], out=out, progress=False)
    rec = next(read_records(out))
    assert rec["source"] == os.path.join("photos", "p0.png")  # for display: as typed
    assert rec["path"] == str((photos / "p0.png").resolve())  # for matching


def test_same_folder_from_another_directory_is_not_predicted_twice(
    detector: Any, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.jsonl"
    monkeypatch.chdir(tmp_path)
    first = predict_stream(detector, ["photos"], out=out, progress=False)
    monkeypatch.chdir(photos)
    again = predict_stream(detector, ["."], out=out, progress=False)
    assert (first.processed, again.processed, again.skipped) == (4, 0, 4)
    assert len(_sources(out)) == len(set(_sources(out))) == 4


def test_same_folder_through_a_symlink_is_not_predicted_twice(
    detector: Any, photos: Path, tmp_path: Path
) -> None:
    link = tmp_path / "link"
    link.symlink_to(photos, target_is_directory=True)
    out = tmp_path / "out.jsonl"
    predict_stream(detector, [photos / "p0.png", photos / "p1.png"], out=out, progress=False)
    again = predict_stream(detector, [link], out=out, progress=False)
    assert (again.processed, again.skipped) == (2, 2)
    records = list(read_records(out))
    assert len(records) == 4 and len({r["path"] for r in records}) == 4
    assert {Path(r["source"]).parent for r in records[2:]} == {link}  # shown as given


def test_records_without_path_from_older_files_still_resume(
    detector: Any, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    predict_stream(detector, [photos / "p0.png"], out=out, progress=False)
    rec = next(read_records(out))
    del rec["path"]  # what visionkit wrote before records carried it
    out.write_text(json.dumps(rec) + "\n")
    again = predict_stream(detector, [photos], out=out, progress=False)
    assert (again.processed, again.skipped) == (3, 1)


def test_resolve_source_follows_symlinks_and_keeps_uris(photos: Path, tmp_path: Path) -> None:
    link = tmp_path / "ln.png"
    link.symlink_to(photos / "p1.png")
    assert resolve_source(link) == resolve_source(photos / "p1.png") == str((photos / "p1.png").resolve())
    assert resolve_source("s3://bucket/a.jpg") == "s3://bucket/a.jpg"


# -- item 5: one writer at a time -----------------------------------------------------------------
DRIVER = textwrap.dedent(
    """
    import os, sys, time
    from visionkit import hookimpl
    from visionkit.cli import main
    from visionkit.registry import Registry, reset_registry
    from visionkit.testing import FakeDetector, fake_plugin

    class Slow(FakeDetector):
        name = "slow-detector"
        def forward(self, inputs):
            deadline = time.monotonic() + 30
            while os.path.exists(os.environ["HOLD"]) and time.monotonic() < deadline:
                time.sleep(0.02)  # the test holds the run open while it starts a second one
            return super().forward(inputs)

    class SlowPlugin:
        @hookimpl
        def register_backends(self, register):
            register("slow-detector", Slow, tasks=("detect",))

    reset_registry(Registry(entry_points=[], plugins=[fake_plugin(), SlowPlugin()], use_environment=False))
    sys.exit(main(sys.argv[1:]))
    """
)


def test_a_second_run_on_the_same_output_fails_clearly_while_the_first_writes(
    photos: Path, tmp_path: Path
) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out, hold = tmp_path / "out.jsonl", tmp_path / "hold"
    cmd = [sys.executable, str(driver), "predict", "slow-detector", str(photos), "--out", str(out)]
    cmd += ["--batch-size", "1", "--no-progress"]
    env = {**os.environ, "HOLD": str(hold)}
    hold.touch()
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while not out.exists():  # created (and locked) before the first image is predicted
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.02)
        second = subprocess.run(cmd, capture_output=True, timeout=60, env=env)
        assert first.poll() is None, "the first run ended too soon for this test to mean anything"
    finally:
        hold.unlink()
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err.decode()
    assert second.returncode == 2
    lines = second.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "being written by another" in lines[0]
    paths = _sources(out)
    assert len(paths) == len(set(paths)) == 4  # every image once
    third = subprocess.run(cmd, capture_output=True, timeout=60, env=env)  # the lock went with the first run
    assert third.returncode == 0 and "0 processed, 4 skipped" in third.stderr.decode()


def test_the_lock_is_released_when_a_run_fails(detector: Any, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    def boom(*_: Any) -> None:
        raise RuntimeError("the caller's callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        predict_stream(detector, [photos], out=out, progress=False, on_result=boom)
    assert predict_stream(detector, [photos], out=out, progress=False).processed == 3


# -- item 6: a damaged line is kept, only a half-written last line is cut --------------------------
def test_a_corrupt_middle_line_keeps_every_other_record(
    detector: Any, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for i in range(2):
        Image.fromarray(make_test_image(30, 30, seed=10 + i)).save(other / f"o{i}.png")
    out = tmp_path / "out.jsonl"
    predict_stream(detector, [photos / "p0.png", photos / "p1.png", other], out=out, progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4
    lines[1] = b'{"source": "photos/p1.png", "fra\x00garbage\n'  # a damaged record in the middle
    damaged = b"".join(lines)
    out.write_bytes(damaged)

    summary = predict_stream(detector, [photos], out=out, progress=False)
    assert out.read_bytes().startswith(damaged)  # nothing before the new records was rewritten
    assert (summary.processed, summary.skipped) == (3, 1)  # p1 (the damaged one), p2, p3
    assert summary.warnings and "line 2 " in summary.warnings[0]
    assert f"warning: {summary.warnings[0]}" in capsys.readouterr().err
    kept = list(read_records(out, skip_corrupt=True))
    assert {Path(r["source"]).name for r in kept} == {
        "p0.png",
        "p1.png",
        "p2.png",
        "p3.png",
        "o0.png",
        "o1.png",
    }
    assert len(kept) == 6
    again = predict_stream(detector, [photos, other], out=out, progress=False)
    assert (again.processed, again.skipped) == (0, 6) and "line 2 " in again.warnings[0]


def test_read_records_names_a_corrupt_line(detector: Any, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    predict_stream(detector, [photos / "p0.png"], out=out, progress=False)
    out.write_bytes(out.read_bytes() + b"not json\n" + out.read_bytes())
    with pytest.raises(ValueError, match=r"Line 2 of .* is not a visionkit record"):
        list(read_records(out))
    assert len(list(read_records(out, skip_corrupt=True))) == 2


def test_a_complete_last_record_without_newline_is_kept(detector: Any, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    predict_stream(detector, [photos / "p0.png", photos / "p1.png"], out=out, progress=False)
    out.write_bytes(out.read_bytes().rstrip(b"\n"))  # an editor dropped the final newline
    summary = predict_stream(detector, [photos], out=out, progress=False)
    assert (summary.processed, summary.skipped) == (2, 2)
    assert len(list(read_records(out))) == 4 and not summary.warnings


def test_coco_output_survives_a_corrupt_progress_line(detector: Any, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "res.json"
    predict_stream(detector, [photos / "p0.png", photos / "p1.png"], out=out, progress=False)
    progress = tmp_path / "res.json.progress.jsonl"
    lines = progress.read_bytes().splitlines(keepends=True)
    progress.write_bytes(lines[0] + b"}{\n" + lines[1])
    summary = predict_stream(detector, [photos], out=out, progress=False)
    assert (summary.processed, summary.skipped) == (2, 2) and "line 2 " in summary.warnings[0]
    image_ids = {r["image_id"] for r in json.loads(out.read_text())}
    assert len(image_ids) == 4


def test_a_broken_progress_sidecar_is_one_clear_error(detector: Any, photos: Path, tmp_path: Path) -> None:
    (tmp_path / "res.json.progress.jsonl").mkdir()  # the sidecar is not a file
    with pytest.raises(visionkit.InvalidOptionError, match=r"Cannot write results file .*progress\.jsonl"):
        predict_stream(detector, [photos], out=tmp_path / "res.json", progress=False)
