"""visionkit.benchmark on the fakes: well-formed reports, isolation, errors (no timing assertions)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionkit.bench import BenchReport, benchmark, environment
from visionkit.cli._reports import add_commands
from visionkit.errors import InvalidOptionError
from visionkit.registry import Registry
from visionkit.testing.fakes import FakeDetector, fake_plugin

REGISTRY = Registry(entry_points=[], plugins=[fake_plugin()])
FAKES = "visionkit.testing.fakes:fake_plugin"


def test_every_configuration_is_measured_in_process() -> None:
    report = benchmark(
        "fake-detector", registry=REGISTRY, imgsz=[32, 64], precision="fp32", batch=[1, 3], runs=4, warmup=1
    )
    assert [(r.imgsz, r.batch) for r in report.results] == [(32, 1), (32, 3), (64, 1), (64, 3)]
    for r in report.results:
        assert r.error is None and r.latency is not None and r.stages is not None
        assert r.runs == 4 and r.warmup == 1 and r.task == "detect"
        assert (
            r.latency.min_ms
            <= r.latency.median_ms
            <= r.latency.p90_ms
            <= r.latency.p99_ms
            <= r.latency.max_ms
        )
        assert r.latency.jitter == pytest.approx(r.latency.p99_ms / r.latency.median_ms)
        assert r.images_per_s == pytest.approx(r.batch * 1e3 / r.latency.median_ms)
        assert r.input_shape == (r.imgsz, r.imgsz)
        assert r.peak_rss_mb is not None and r.peak_rss_mb > 0 and not r.isolated
        assert r.imgsz_option is None  # the fakes have no input-size option ...
    assert any("no input-size option" in n for n in report.results[0].notes)  # ... and the report says so
    assert any("ran in this process" in n for n in report.notes)
    assert BenchReport.model_validate_json(report.to_json()) == report


def test_isolated_run_in_a_fresh_subprocess_pins_threads() -> None:
    ballast = np.ones(400 * 2**20, np.uint8)  # the parent's memory must not show up in the worker's peak
    report = benchmark("fake-instance", plugins=[FAKES], imgsz=48, runs=3, warmup=1, threads=1)
    del ballast
    (r,) = report.results
    assert r.error is None, r.error
    assert r.isolated and r.threads == 1 and report.environment.threads == 1
    assert r.peak_rss_mb is not None and r.baseline_rss_mb is not None and r.peak_rss_mb >= r.baseline_rss_mb
    assert r.peak_rss_mb < 300, r.peak_rss_mb
    assert report.notes == []
    env = report.environment
    assert env.versions["visionkit"] and env.cpu_count and isinstance(env.cpu_flags, list)


def test_rounds_interleave_and_pool_samples() -> None:
    report = benchmark("fake-detector", registry=REGISTRY, batch=[1, 2], runs=3, warmup=0, rounds=2)
    for r in report.results:
        assert r.rounds == 2 and r.runs == 6 and len(r.samples_ms) == 6
        assert r.latency is not None and r.latency.median_ms == pytest.approx(
            float(np.median(r.samples_ms)), rel=1e-3
        )
    with pytest.raises(InvalidOptionError, match="rounds must be >= 1, but got 0"):
        benchmark("fake-detector", registry=REGISTRY, rounds=0)


def test_missing_int8_runtime_is_reported_per_configuration() -> None:
    report = benchmark("fake-detector", registry=REGISTRY, precision=["fp32", "int8"], runs=2, warmup=0)
    fp32, int8 = report.results
    assert fp32.error is None and fp32.latency is not None
    assert int8.latency is None
    assert "does not support precision 'int8'" in (int8.error or "")
    # The fake cannot be exported, so installing the ONNX runtime plugin would not help: no such hint.
    assert "cannot run in another runtime" in (int8.error or "")
    assert "pip install visionkit-onnx" not in (int8.error or "")
    assert "error: InvalidOptionError" in report.table()


def test_loaded_backend_real_images_and_other_tasks(tmp_path: Path) -> None:
    paths = []
    for i in range(2):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((20 + i, 30, 3), (200, 30, 30), np.uint8)).save(p)
        paths.append(p)
    report = benchmark(FakeDetector(), precision=["fp32", "int8"], images=paths, batch=2, runs=2, warmup=0)
    (r,) = report.results
    assert r.backend == "fake-detector" and r.precision == "fp32" and r.input_shape == (20, 30)
    assert any("only at its own precision" in n for n in report.notes)
    cls = benchmark("fake-classifier", registry=REGISTRY, runs=2, warmup=0).results[0]
    assert cls.task == "classify" and cls.error is None
    prompt = benchmark("fake-prompt", registry=REGISTRY, runs=2, warmup=0, batch=[1, 2]).results
    assert prompt[0].error is None and prompt[0].stages is None
    assert any("does not record last_timing" in n for n in prompt[0].notes)
    assert "one image per call" in (prompt[1].error or "")


def test_argument_errors() -> None:
    with pytest.raises(InvalidOptionError, match="runs must be >= 1"):
        benchmark("fake-detector", registry=REGISTRY, runs=0)
    with pytest.raises(InvalidOptionError, match="batch and imgsz must be >= 1"):
        benchmark("fake-detector", registry=REGISTRY, batch=0)
    with pytest.raises(InvalidOptionError, match="isolate=True needs a backend name and installed plugins"):
        benchmark("fake-detector", registry=REGISTRY, isolate=True)
    with pytest.raises(InvalidOptionError, match="Cannot import plugin 'no_such_module:x'"):
        benchmark("fake-detector", plugins=["no_such_module:x"])
    bad_task = benchmark("fake-detector", registry=REGISTRY, task="classify", runs=1).results[0]
    assert "does not do task 'classify'" in (bad_task.error or "")


def test_environment_records_threads_and_isa() -> None:
    env = environment(3)
    assert env.threads == 3 and env.python and env.machine
    assert all(f == f.lower() for f in env.cpu_flags)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="visionkit")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_bench_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = _cli(
        [
            "bench",
            "fake-detector",
            "--plugin",
            FAKES,
            "--imgsz",
            "32",
            "--batch",
            "1",
            "2",
            "--runs",
            "2",
            "--warmup",
            "0",
            "--no-isolate",
            "--json",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert [r["batch"] for r in printed["results"]] == [1, 2]
    assert (
        _cli(["bench", "fake-detector", "--plugin", FAKES, "--runs", "1", "--no-isolate", "-O", "margin=50"])
        == 0
    )
    assert "pre/fwd/post ms" in capsys.readouterr().out


def test_cli_bench_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["bench", "fake-detector", "--plugin", FAKES, "--runs", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: runs must be >= 1")
    # every configuration failed: the table says why, and the exit status is not success
    assert (
        _cli(["bench", "fake-detector", "--plugin", FAKES, "--no-isolate", "-O", "nope=1", "--runs", "1"])
        == 1
    )
    captured = capsys.readouterr()
    assert "Unknown option 'nope'" in captured.out
    assert captured.err.strip() == "1 of 1 configuration failed (see the table)"
    with pytest.raises(SystemExit):
        _cli(["bench", "fake-detector", "-O", "novalue"])
    assert "Option 'novalue' must look like KEY=VALUE" in capsys.readouterr().err


def test_a_load_recipe_stands_for_the_load_arguments() -> None:
    from visionkit.loading import LoadRecipe

    recipe = LoadRecipe("fake-detector", weights=None, options={"conf": 0.9}, plugins=(FAKES,))
    (result,) = benchmark(recipe, runs=1, warmup=0).results
    assert result.error is None and result.backend == "fake-detector" and result.latency is not None
    bad = LoadRecipe("fake-detector", options={"nope": 1}, plugins=(FAKES,))
    (failed,) = benchmark(bad, runs=1, warmup=0).results  # the recipe's options reached load()
    assert "Unknown option 'nope'" in (failed.error or "")
