"""Kill a real ``predict`` subprocess mid-run, run it again: nothing lost, nothing duplicated.

The subprocess runs the real CLI code path (``visionkit.cli.main(['predict', ...])``) with a slowed
fake detector, so the kill lands while results are being written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

import visionkit
from visionkit.stream import read_records
from visionkit.testing import FakeDetector, make_test_image

N_IMAGES = 40

DRIVER = textwrap.dedent(
    """
    import argparse, sys, time
    import visionkit
    from visionkit import hookimpl
    from visionkit.cli import main
    from visionkit.registry import Registry, reset_registry
    from visionkit.testing import FakeDetector, fake_plugin

    class Slow(FakeDetector):
        name = "slow-detector"
        def forward(self, inputs):
            time.sleep(0.15)  # per batch: slow enough to be killed mid-run, even on a busy machine
            return super().forward(inputs)

    class SlowPlugin:
        @hookimpl
        def register_backends(self, register):
            register("slow-detector", Slow, tasks=("detect",))

    reset_registry(Registry(entry_points=[], plugins=[fake_plugin(), SlowPlugin()], use_environment=False))
    sys.exit(main(['predict', *sys.argv[1:]]))
    """
)


@pytest.fixture
def job(tmp_path: Path) -> tuple[list[str], Path, Path]:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(N_IMAGES):
        Image.fromarray(make_test_image(40, 48, seed=i)).save(folder / f"p{i:03d}.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "out.jsonl"
    cmd = [
        sys.executable,
        str(driver),
        "slow-detector",
        str(folder),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--no-progress",
    ]
    return cmd, out, folder


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.communicate()}")
        time.sleep(0.01)
    pytest.fail(f"no {n} records in {path} after {timeout} s")


def _reference(folder: Path) -> dict[str, visionkit.Detections]:
    class SlowRef(FakeDetector):  # the driver's backend minus the sleep (same name in the metadata)
        name = "slow-detector"

    det = SlowRef()
    return {str(folder / f"p{i:03d}.png"): det.detect(folder / f"p{i:03d}.png") for i in range(N_IMAGES)}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_killed_run_resumes_without_loss_or_duplicates(job: tuple[list[str], Path, Path], sig: int) -> None:
    cmd, out, folder = job
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_lines(out, 6, proc)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=30)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "interrupted; run the same command again with --out" in err.decode()
    else:
        assert proc.returncode == -signal.SIGKILL
    partial = out.read_bytes().count(b"\n")
    assert 6 <= partial < N_IMAGES  # really stopped mid-run

    done = subprocess.run(cmd, capture_output=True, timeout=120)
    assert done.returncode == 0, (
        done.stderr.decode()
    )  # the corrupt file fails, but only --strict makes that an error
    summary = done.stderr.decode().strip().splitlines()[-1]
    assert summary.startswith(f"{N_IMAGES - partial} processed, {partial} skipped (already done), 1 failed")
    assert "failed: " in done.stderr.decode() and "corrupt.png" in done.stderr.decode()

    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is complete JSON
    sources = [r["source"] for r in records]
    assert len(sources) == len(set(sources)) == N_IMAGES
    ref = _reference(folder)
    assert {
        s: visionkit.Detections.from_dict(r["result"]) for s, r in zip(sources, records, strict=True)
    } == ref

    if sig == signal.SIGINT:
        return
    strict = subprocess.run([*cmd, "--strict"], capture_output=True, timeout=120)
    assert strict.returncode == 1  # nothing left but the corrupt file, which --strict turns into failure
    assert len(list(read_records(out))) == N_IMAGES
