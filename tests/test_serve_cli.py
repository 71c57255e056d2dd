"""`visionkit serve`: argument handling, and the real command serving real YOLOv8n weights."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import visionkit
from visionkit.cli._serve import add_commands, serve_settings

pytest.importorskip("fastapi")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_commands(p.add_subparsers(dest="command"))
    return p.parse_args(["serve", *argv])


def test_settings_per_backend() -> None:
    kwargs, config = serve_settings(
        parse(
            [
                "yolo",
                "sam",
                "--weights",
                "yolo=w.pt",
                "--weights",
                "sam=none",
                "-O",
                "yolo:conf=0.4",
                "--workers",
                "3",
                "--queue",
                "5",
                "--max-body-mb",
                "1",
            ]
        )
    )
    assert kwargs == {
        "yolo": {"device": "cpu", "precision": "fp32", "weights": "w.pt", "conf": 0.4},
        "sam": {"device": "cpu", "precision": "fp32", "weights": None},
    }
    assert (config.workers, config.queue_size, config.max_body_bytes) == (3, 5, 1024 * 1024)
    kwargs, _ = serve_settings(parse(["yolo", "--weights", "w.pt", "-O", "conf=0.3"]))
    assert kwargs["yolo"]["weights"] == "w.pt" and kwargs["yolo"]["conf"] == 0.3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["yolo", "sam", "--weights", "w.pt"],
            "--weights 'w.pt' is ambiguous with 2 backends; write --weights NAME=PATH",
        ),
        (["yolo", "--weights", "detr=w.pt"], "names 'detr', which is not served; served: yolo"),
        (
            ["yolo", "sam", "-O", "conf=0.3"],
            "Option 'conf=0.3' is ambiguous with 2 backends; write -O NAME:conf=0.3",
        ),
        (["yolo", "-O", "sam:conf=0.3"], "Option 'sam:conf=0.3' names 'sam', which is not served"),
        (["yolo", "--workers", "0"], "ServeConfig.workers must be at least 1"),
    ],
)
def test_bad_settings_are_explained(argv: list[str], message: str) -> None:
    with pytest.raises(visionkit.InvalidOptionError) as exc:
        serve_settings(parse(argv))
    assert message in str(exc.value)


def test_protection_flags_reach_the_config() -> None:
    _, config = serve_settings(
        parse(
            [
                "yolo",
                "--max-connections",
                "10",
                "--header-timeout",
                "2.5",
                "--body-timeout",
                "7",
                "--send-timeout",
                "9",
                "--max-response-mb",
                "2",
                "--max-prompts",
                "8",
            ]
        )
    )
    assert (config.max_connections, config.header_timeout_s, config.body_timeout_s) == (10, 2.5, 7.0)
    assert (config.send_timeout_s, config.max_response_bytes, config.max_prompts) == (9.0, 2 * 1024 * 1024, 8)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "99999"], "--port 99999 is not a TCP port; use 1-65535"),
        (["--port", "-1"], "--port -1 is not a TCP port"),
        (["--max-body-mb", "nan"], "--max-body-mb must be a positive number of megabytes, but got nan"),
        (["--max-response-mb", "0"], "--max-response-mb must be a positive number of megabytes"),
        (["--body-timeout", "0"], "ServeConfig.body_timeout_s must be a positive number of seconds"),
        (["--max-connections", "0"], "ServeConfig.max_connections must be at least 1"),
    ],
)
def test_bad_protection_flags_are_explained(argv: list[str], message: str) -> None:
    with pytest.raises(visionkit.InvalidOptionError) as exc:
        serve_settings(parse(["yolo", *argv]))
    assert message in str(exc.value)


def test_bad_port_is_one_line_before_any_load() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "visionkit.cli", "serve", "no-such-model", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == "error: --port 99999 is not a TCP port; use 1-65535.\n"


def test_a_port_in_use_is_reported_before_the_backends_load() -> None:
    pytest.importorskip("visionkit_yolo", reason="visionkit-yolo is not installed")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "visionkit.cli", "serve", "yolo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: Cannot listen on 127.0.0.1:{port} (")
    assert "Traceback" not in proc.stderr and "loading" not in proc.stderr  # refused before the load


def test_unknown_backend_fails_before_serving() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "visionkit.cli", "serve", "no-such-model", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "error: Unknown backend 'no-such-model'" in proc.stderr


@pytest.mark.real_weights
def test_real_yolo_server(tmp_path: Path) -> None:
    httpx = pytest.importorskip("httpx")
    weights_dir, data = os.environ.get("VISIONKIT_WEIGHTS"), os.environ.get("VISIONKIT_DATA")
    if not (weights_dir and data):
        pytest.skip("set VISIONKIT_WEIGHTS and VISIONKIT_DATA to the data kit")
    pytest.importorskip("visionkit_yolo", reason="visionkit-yolo is not installed")
    weights = Path(weights_dir) / "yolov8n-dq.pt"
    images = sorted((Path(data) / "coco-mini" / "images").glob("*.jpg"))
    if not (weights.is_file() and images):
        pytest.skip("yolov8n-dq.pt or the coco-mini images are missing")
    image = images[0]
    with socket.socket() as s:  # a free port on loopback (released just before the server takes it)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "visionkit.cli",
            "serve",
            "yolo",
            "--weights",
            str(weights),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "server not ready after 120 s"
            time.sleep(0.2)
        r = httpx.post(
            f"{url}/v1/detect/yolo",
            files={"image": (image.name, image.read_bytes(), "image/jpeg")},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        got = visionkit.Detections.from_dict(r.json()["result"])
        expected = visionkit.load("yolo", weights=str(weights)).detect(image)
        # same weights and image; another process may use other torch thread counts: float rounding only
        assert got.class_name == expected.class_name
        np.testing.assert_allclose(got.xyxy, expected.xyxy, atol=1e-2)
        np.testing.assert_allclose(got.confidence, expected.confidence, atol=1e-4)
        assert len(got) > 0
        r = httpx.post(
            f"{url}/v1/segment_instances/yolo",
            files={"image": (image.name, image.read_bytes(), "image/jpeg")},
            timeout=60,
        )
        assert r.status_code == 404 and r.json()["error"] == "TaskNotSupportedError"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_every_public_name_and_flag_is_in_docs_serving_md() -> None:
    import visionkit.serve

    text = (Path(__file__).parents[1] / "docs" / "serving.md").read_text()
    assert [n for n in visionkit.serve.__all__ if n not in text] == []
    flags = [a.option_strings[-1] for a in _serve_parser()._actions if a.option_strings and a.dest != "help"]
    assert [
        f
        for f in flags
        if f not in text and f not in ("--log-level", "--device", "--precision", "--port", "--host")
    ] == []


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    add_commands(sub)
    return sub.choices["serve"]


def test_the_python_example_in_docs_serving_md_runs_and_returns() -> None:
    pytest.importorskip("httpx")
    text = (Path(__file__).parents[1] / "docs" / "serving.md").read_text()
    section = text.split("## From Python", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "ServerThread" in example and "my_backend" not in example
    # in a child process with a deadline: the example must serve, answer and return on its own
    proc = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "red" in proc.stdout
