"""The CLI as a careless user drives it: bad files among good ones, Ctrl-C, closed pipes, bad flags,
unwritable outputs, an unreachable Ray cluster. Every error is one ``error: ...`` line, no traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import visionkit
from visionkit import hookimpl
from visionkit.cli import main
from visionkit.registry import Registry, reset_registry
from visionkit.testing import FakeDetector, fake_plugin, make_test_image


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """a/x.png, b/x.png (same stem, different pictures), c.png and a corrupt bad.png."""
    paths = []
    for i, rel in enumerate(("a/x.png", "b/x.png", "c.png")):
        path = tmp_path / rel
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(make_test_image(48, 64, seed=i)).save(path)
        paths.append(path)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return [*paths, tmp_path / "bad.png"]


def _one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and all(n in lines[0] for n in needles), err


# -- item 7: explicit files skip and report, and keep what was done --------------------------------
def test_one_bad_file_among_explicit_files_is_skipped_and_reported(
    fake_registry: Registry, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _, c, bad = (str(p) for p in images)
    out = tmp_path / "out.json"
    assert main(["predict", "fake-detector", a, bad, c, "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"{a}: 3 detections" in captured.out and f"{c}: 3 detections" in captured.out
    assert f"failed: {bad}: Cannot decode" in captured.err and "2 predicted, 1 failed" in captured.err
    assert "Traceback" not in captured.err
    assert [r["source"] for r in json.loads(out.read_text())] == [a, c]


def test_when_no_explicit_file_can_be_predicted_it_is_an_error(
    fake_registry: Registry, images: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = str(images[-1])
    assert main(["predict", "fake-detector", bad, bad]) == 2
    err = capsys.readouterr().err
    assert err.count("failed: ") == 2 and err.strip().splitlines()[-1].startswith("error: None of the 2")


def test_ctrl_c_keeps_the_results_so_far(
    fake_registry: Registry,
    images: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = FakeDetector.detect

    def detect(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FakeDetector, "detect", detect)
    out = tmp_path / "out.json"
    argv = ["predict", "fake-detector", *(str(p) for p in images[:3]), "--json", str(out)]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted after 1 of 3 input(s); results so far in" in err and "Traceback" not in err
    assert [r["source"] for r in json.loads(out.read_text())] == [str(images[0])]


# -- item 11: --save-dir names ----------------------------------------------------------------------
@pytest.mark.parametrize("streamed", [False, True], ids=["explicit-files", "folder"])
def test_save_dir_keeps_sources_that_share_a_stem_apart(
    fake_registry: Registry, images: list[Path], tmp_path: Path, streamed: bool
) -> None:
    save = tmp_path / "viz"
    inputs = [str(tmp_path / "a"), str(tmp_path / "b")] if streamed else [str(images[0]), str(images[1])]
    assert (
        main(
            ["predict", "fake-detector", *inputs, "--save-dir", str(save), "--no-progress"][
                : None if streamed else -1
            ]
        )
        == 0
    )
    saved = sorted(save.iterdir())
    assert len(saved) == 2 and all(p.name.startswith("x-") for p in saved)
    pixels = [np.asarray(Image.open(p)) for p in saved]
    assert not np.array_equal(pixels[0], pixels[1])  # two pictures, neither overwrote the other
    again = tmp_path / "viz2"
    main(
        ["predict", "fake-detector", *inputs, "--save-dir", str(again), "--no-progress"][
            : None if streamed else -1
        ]
    )
    assert sorted(p.name for p in again.iterdir()) == [p.name for p in saved]  # stable names


# -- item 11: flags that were ignored or misread ------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--batch-size", "0"], ("--batch-size must be at least 1, but got 0",)),
        (["--point", "3,4"], ("--point and --box are prompts for task 'segment_prompt'", "'detect'")),
        (["--box", "1,2,3,4"], ("--point and --box are prompts",)),
        (["--task", "banana"], ("Unknown task 'banana'",)),
        (["--ray", "--out", "r.jsonl", "--ray-workers", "0"], ("--ray-workers must be at least 1",)),
    ],
)
def test_bad_predict_flags_are_one_error_line(
    fake_registry: Registry,
    images: list[Path],
    argv: list[str],
    needles: tuple[str, ...],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["predict", "fake-detector", str(images[2]), *argv]) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err, *needles)
    assert captured.out == ""  # refused before any image was predicted


def test_point_on_a_folder_for_a_detector_is_refused(
    fake_registry: Registry, images: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", "fake-detector", str(images[0].parent), "--point", "3,4"]) == 2
    _one_error_line(capsys.readouterr().err, "--point and --box are prompts")


class _RecordingRuntime:
    """A runtime plugin whose exporter records the backend it was given (for ``export``)."""

    exported: list[Any] = []

    @hookimpl
    def register_runtimes(self, register: Any) -> None:
        register(
            "recorder",
            factory=lambda backend, **_: backend,
            precisions=("int8",),
            exporter=lambda backend, **kw: _RecordingRuntime.exported.append(kw) or {"ok": True},
        )


def test_weights_none_is_random_init_in_predict_and_export(
    images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reset_registry(
        Registry(entry_points=[], plugins=[fake_plugin(), _RecordingRuntime()], use_environment=False)
    )
    seen: list[Any] = []
    real = visionkit.load

    def load(name: str, **kwargs: Any) -> Any:
        seen.append(kwargs.get("weights", "<not given>"))
        return real(name, **kwargs)

    monkeypatch.setattr(visionkit.loading, "load", load)  # what every command's load recipe calls
    try:
        img = str(images[2])
        assert main(["predict", "fake-detector", img, "--weights", "none"]) == 0
        assert (
            main(["predict", "fake-detector", img, "--weights", "None", "--out", str(tmp_path / "o.jsonl")])
            == 0
        )
        assert main(["export", "fake-detector", "--weights", "none", "-o", str(tmp_path / "m.onnx")]) == 0
    finally:
        reset_registry(None)
    assert seen == [None, None, None]
    assert _RecordingRuntime.exported and _RecordingRuntime.exported[-1]["output"] == str(tmp_path / "m.onnx")


def test_eval_limit_must_be_positive(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["eval", "fake-classifier", "--imagefolder", str(tmp_path), "--limit", "-1"]
    assert main([*argv, "--plugin", "visionkit.testing.fakes:fake_plugin"]) == 2
    _one_error_line(capsys.readouterr().err, "--limit must be a number of images, at least 1, but got -1")


# -- item 11: outputs that cannot be written, OS errors ------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (
            ["--json", "{blocker}/out.json"],
            "--json '{blocker}/out.json' cannot be written: '{blocker}' is a file",
        ),
        (
            ["--out", "{blocker}/out.jsonl"],
            "--out '{blocker}/out.jsonl' cannot be written: '{blocker}' is a file, not a folder",
        ),
        (["--out", "{blocker}/r.json"], "--out '{blocker}/r.json' cannot be written: '{blocker}' is a file"),
        (["--save-dir", "{blocker}/viz"], "Not a directory: '{blocker}/viz'"),
    ],
)
def test_unwritable_outputs_are_one_error_line(
    fake_registry: Registry,
    images: list[Path],
    tmp_path: Path,
    flags: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "blocker"  # a file where a folder is needed: unwritable even for root
    blocker.write_text("")
    argv = [f.format(blocker=blocker) for f in flags]
    assert main(["predict", "fake-detector", str(images[2]), *argv]) == 2
    _one_error_line(capsys.readouterr().err, needle.format(blocker=blocker))


def test_a_broken_out_sidecar_is_one_error_line(
    fake_registry: Registry, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "r.json.progress.jsonl").mkdir()  # where `--out r.json` keeps its progress
    assert main(["predict", "fake-detector", str(images[2]), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    _one_error_line(
        err, f"Cannot write results file '{tmp_path / 'r.json.progress.jsonl'}': it is a directory"
    )


def test_report_output_is_checked_before_the_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "blocker").write_text("")
    argv = ["bench", "fake-detector", "--plugin", "visionkit.testing.fakes:fake_plugin", "--no-isolate"]
    assert main([*argv, "--output", str(tmp_path / "blocker" / "r.json")]) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err, "--output", "is a file, not a folder")
    assert captured.out == ""


def test_an_os_error_below_is_one_error_line(
    fake_registry: Registry,
    images: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def load(*_: Any, **__: Any) -> Any:  # e.g. a runtime's cache directory that cannot be written
        raise PermissionError(13, "Permission denied", "/root/.cache/visionkit/onnx")

    monkeypatch.setattr(visionkit.loading, "load", load)
    assert main(["predict", "fake-detector", str(images[2])]) == 2
    _one_error_line(capsys.readouterr().err, "Permission denied: '/root/.cache/visionkit/onnx'")


# -- item 11 / issue 15: closed pipes ------------------------------------------------------------------
DRIVER = textwrap.dedent(
    """
    import sys
    from visionkit.cli import main
    from visionkit.registry import Registry, reset_registry
    from visionkit.testing import fake_plugin

    reset_registry(Registry(entry_points=[], plugins=[fake_plugin()], use_environment=False))
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("command", ["list", "predict"])
def test_a_closed_pipe_ends_quietly(images: list[Path], tmp_path: Path, command: str) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    argv = ["list"] if command == "list" else ["predict", "fake-detector", *[str(p) for p in images[:3]] * 50]
    # `visionkit list | head -0`: the reader is gone before the first line is written
    proc = subprocess.Popen(
        [sys.executable, str(driver), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141  # as a command killed by SIGPIPE
    assert err == "", err


# -- item 11: an unreachable Ray cluster --------------------------------------------------------------
def test_unreachable_ray_cluster_is_one_error_line_quickly(
    fake_registry: Registry, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray session of another test is still running in this process")
    with socket.socket() as s:  # a port on this machine where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["predict", "fake-detector", str(images[2]), "--out", str(tmp_path / "r.jsonl")]
    start = time.monotonic()
    assert main([*argv, "--ray", "--ray-address", f"127.0.0.1:{port}"]) == 2
    assert time.monotonic() - start < 30
    _one_error_line(capsys.readouterr().err, f"Cannot reach the Ray cluster at '127.0.0.1:{port}'")
    assert not ray.is_initialized()
    assert main([*argv, "--no-progress"]) == 0  # the output was not left locked


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["serve", "fake-detector", "--log-level", "banana"],
            "argument --log-level: invalid choice: 'banana'",
        ),
        (["predict", "fake-detector", "x.png", "--batch-size", "two"], "invalid int value: 'two'"),
        (["nosuch"], "invalid choice: 'nosuch'"),
        # -O is checked while parsing, in every command alike
        (["predict", "fake-detector", "x.jpg", "-O", "novalue"], "must look like KEY=VALUE"),
    ],
)
def test_usage_mistakes_are_one_error_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    _one_error_line(capsys.readouterr().err, needle, "--help`)")


def test_ray_addresses_probed_before_ray_init() -> None:
    pytest.importorskip("ray.data")
    from visionkit.ray import _endpoint

    assert _endpoint("127.0.0.1:6380") == ("127.0.0.1", 6380)
    assert _endpoint("ray://head:10001") == ("head", 10001)
    assert _endpoint("ray://head") == ("head", 10001)
    assert _endpoint("head") == ("head", 6379)
    assert _endpoint("[::1]:6379") == ("::1", 6379)
    assert [_endpoint(a) for a in (None, "auto", "local", "anyscale://x")] == [None] * 4
