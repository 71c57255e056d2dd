"""``visionkit track``: JSONL per frame, MOT text, annotated video, resume after a kill without duplicates."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("trackers", reason="tracking needs the trackers library (pip install trackers)")
pytest.importorskip("cv2", reason="video files need OpenCV")

from visionkit.cli import main
from visionkit.tracking import VideoWriter, iter_frames

N_FRAMES = 30
SIZE = 30


def _frame(t: int) -> np.ndarray:
    img = np.zeros((120, 200, 3), np.uint8)
    img[40 : 40 + SIZE, 5 + 4 * t : 5 + 4 * t + SIZE] = (230, 20, 20)  # red goes right
    img[50 : 50 + SIZE, 160 - 4 * t : 160 - 4 * t + SIZE] = (20, 20, 230)  # blue goes left
    return img


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    with VideoWriter(path, fps=10) as writer:
        for t in range(N_FRAMES):
            writer.write(_frame(t))
    return path


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_track_writes_jsonl_mot_and_video_then_resumes_to_nothing(
    fake_registry: Any, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, mot, video = tmp_path / "t.jsonl", tmp_path / "t.txt", tmp_path / "t.mp4"
    argv = ["track", "fake-instance", str(clip), "--out", str(out), "--quiet"]
    assert main([*argv, "--mot", str(mot), "--save-video", str(video)]) == 0
    recs = _records(out)
    assert [r["frame"] for r in recs] == list(range(N_FRAMES))
    assert {r["type"] for r in recs} == {"InstanceMasks"}
    ids: dict[str, set[int]] = {}
    for r in recs[2:]:
        for name, tid in zip(r["result"]["class_name"], r["result"]["tracker_id"], strict=True):
            ids.setdefault(name, set()).add(tid)
    assert sorted(ids) == ["blue", "red"]
    assert all(len(v) == 1 for v in ids.values()), ids  # each square keeps one id on every frame
    assert mot.read_text().count("\n") == sum(len(r["result"]["tracker_id"]) for r in recs)
    assert sum(1 for _ in iter_frames(video)) == N_FRAMES
    assert main(argv) == 0
    assert _records(out) == recs  # nothing written twice
    assert "0 frame(s), 30 already in" in capsys.readouterr().out


def test_same_video_from_another_directory_or_a_symlink_is_not_duplicated(
    fake_registry: Any, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "t.jsonl"
    assert main(["track", "fake-detector", str(clip), "--out", str(out), "--quiet"]) == 0
    link = tmp_path / "link.avi"
    link.symlink_to(clip)
    monkeypatch.chdir(clip.parent)
    assert main(["track", "fake-detector", clip.name, "--out", str(out), "--quiet"]) == 0
    assert main(["track", "fake-detector", str(link), "--out", str(out), "--quiet"]) == 0
    assert len(_records(out)) == N_FRAMES


def test_corrupt_middle_line_is_kept_and_reported_half_written_last_line_dropped(
    fake_registry: Any, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.jsonl"
    assert main(["track", "fake-detector", str(clip), "--out", str(out), "--quiet"]) == 0
    lines = out.read_text().splitlines(keepends=True)
    lines[5] = "{not json\n"  # corrupt in the middle: frame 5 is redone, the bad line is kept
    out.write_text("".join(lines[:-1]) + lines[-1][:20])  # and the last record cut by a kill
    assert main(["track", "fake-detector", str(clip), "--out", str(out), "--quiet"]) == 0
    assert "line 6 is not a valid record" in capsys.readouterr().err
    text = out.read_text().splitlines()
    assert "{not json" in text  # never rewritten
    frames = sorted(json.loads(t)["frame"] for t in text if t != "{not json")
    assert frames == list(range(N_FRAMES))


def test_a_second_run_on_a_locked_output_is_refused(
    fake_registry: Any, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.jsonl"
    with open(out, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        assert main(["track", "fake-detector", str(clip), "--out", str(out), "--quiet"]) == 2
    assert "being written by another visionkit run" in capsys.readouterr().err
    assert out.read_text() == ""


def test_bad_sources_and_flags_are_one_line_errors(
    fake_registry: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"no video here")
    assert main(["track", "fake-detector", str(junk)]) == 2
    assert main(["track", "fake-detector", str(tmp_path / "nope.mp4")]) == 2
    assert main(["track", "fake-detector", str(junk), "--tracker", "deepsort"]) == 2
    assert main(["track", "fake-classifier", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 4
    assert "Traceback" not in err


DRIVER = textwrap.dedent(
    """
    import sys, time
    from visionkit import hookimpl
    from visionkit.registry import Registry, reset_registry
    from visionkit.testing import FakeInstanceSegmenter, fake_plugin

    class Slow(FakeInstanceSegmenter):
        name = "slow-instance"
        def forward(self, inputs):
            time.sleep(0.15)  # slow enough to be killed mid-video, even on a busy machine
            return super().forward(inputs)

    class SlowPlugin:
        @hookimpl
        def register_backends(self, register):
            register("slow-instance", Slow, tasks=("detect", "segment_instances"))

    reset_registry(Registry(entry_points=[], plugins=[fake_plugin(), SlowPlugin()], use_environment=False))
    from visionkit.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_track_resumes_without_loss_or_duplicates(
    fake_registry: Any, clip: Path, tmp_path: Path, sig: int
) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "t.jsonl"
    cmd = [sys.executable, str(driver), "track", "slow-instance", str(clip), "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 8):
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    partial = _records(out)
    assert 8 <= len(partial) < N_FRAMES
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    recs = _records(out)
    assert [r["frame"] for r in recs] == list(range(N_FRAMES))
    # the resumed run rebuilt the tracker state: ids are those of one uninterrupted run
    ref = tmp_path / "ref.jsonl"
    assert main(["track", "fake-instance", str(clip), "--out", str(ref), "--quiet"]) == 0

    def tracks(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(r["result"]["xyxy"], r["result"]["tracker_id"], r["result"]["mask"]) for r in records]

    assert tracks(recs) == tracks(_records(ref))
