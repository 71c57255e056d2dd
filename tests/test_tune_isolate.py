"""``visionkit tune`` times every candidate in a fresh process of its own (requirement 3 of issue 19).

The plugin lives in ``tests/plugins/vk_test_tune.py`` (the conftest puts that folder on ``sys.path``,
which a spawned worker inherits), so a worker can import it by name.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from visionkit import tune as vt
from visionkit.cli import main
from visionkit.devices import cpu_threads
from visionkit.errors import InvalidOptionError
from visionkit.loading import LoadRecipe, load
from visionkit.registry import Registry
from visionkit.testing.fakes import make_test_image

PLUGIN = "vk_test_tune:plugin"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(2):
        Image.fromarray(make_test_image(96, 128, seed=seed)).save(folder / f"im{seed}.png")
    return folder


def test_cli_tune_measures_each_candidate_in_its_own_process(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import vk_test_tune as plug

    monkeypatch.setenv("VISIONKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VK_TEST_TUNE_PARENT", str(os.getpid()))
    argv = ["tune", "tune-slow", "--plugin", PLUGIN, "--plugin", "vk_test_tune:crash_plugin"]
    argv += ["--images", str(images), "--json", "--no-cache"]
    argv += ["--candidates", "bloat:fp32", "crash:int8", "--runs", "2", "--rounds", "2", "--warmup", "0"]
    built = plug.TuneSlowDetector.built
    code = main(argv)  # isolated: the CLI's default
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "each in a fresh process" in captured.err
    report = vt.TuneReport.model_validate_json(captured.out)
    rows = {c.label: c for c in report.candidates}
    assert report.isolated and all(c.isolated for c in report.candidates)
    ref, bloat, crash = rows["fp32"], rows["bloat:fp32"], rows["crash:int8"]
    # Timings came back from the workers: two interleaved rounds of two runs each, medians.
    assert ref.runs == bloat.runs == 4
    assert ref.median_ms is not None and ref.median_ms >= plug.NATIVE_S * 1e3
    assert bloat.median_ms is not None and bloat.median_ms < ref.median_ms
    assert report.picked == "bloat:fp32" and bloat.change == pytest.approx(0.0)
    # Each peak RSS is its own process's: the 120 MiB the bloat runtime holds are in its row only
    # (in one process, the fp32 row, finished after bloat had loaded, would carry them too).
    assert ref.peak_rss_mb is not None and bloat.peak_rss_mb is not None
    assert bloat.peak_rss_mb - ref.peak_rss_mb > 0.8 * plug.BLOAT_MB
    if sys.platform == "linux":  # the peak while timed: the ballast is held while serving too
        assert ref.run_peak_rss_mb is not None and bloat.run_peak_rss_mb is not None
        assert bloat.run_peak_rss_mb - ref.run_peak_rss_mb > 0.8 * plug.BLOAT_MB
        # loading needed the scratch, serving only the ballast
        assert bloat.peak_rss_mb - bloat.run_peak_rss_mb > 0.8 * (plug.SCRATCH_MB - plug.BLOAT_MB)
    # Threads: what the runtime reports, else the CPU policy (no torch in a fake's worker).
    assert bloat.threads == 3 and bloat.thread_info["runtime"] == 3
    assert ref.threads == cpu_threads() and "torch" not in ref.thread_info
    # A candidate whose process dies is an error row; the others were measured.
    assert crash.error is not None and "worker process exited (code 3)" in crash.error
    assert plug.TuneSlowDetector.built == built  # the parent never built a model: the workers did
    summary = report.summary()
    assert summary["isolated"] is True
    assert {c["label"]: c["threads"] for c in summary["candidates"]}["bloat:fp32"] == 3
    table = report.table()
    assert (
        "peak MB" in table
        and "run MB" in table
        and "threads" in table
        and "each candidate in a fresh process" in table
    )


def test_in_process_tuning_reports_threads_but_no_memory(images: Path) -> None:
    recipe = LoadRecipe("tune-slow", plugins=(PLUGIN,))  # only this plugin, by import string
    report = vt.tune(
        recipe, images=images, candidates=["sloppy:int8"], runs=1, rounds=1, warmup=0, cache=False
    )
    assert not report.isolated and report.picked == "fp32"  # sloppy loses green: over the budget
    # the backend's own code runs on torch's pool when torch is loaded (another test may have shrunk it)
    torch = sys.modules.get("torch")
    native = torch.get_num_threads() if torch is not None else cpu_threads()
    assert all(c.peak_rss_mb is None for c in report.candidates)
    assert [c.threads for c in report.candidates] == [native, cpu_threads()]
    assert "all candidates in one process" in report.table()


def test_isolation_needs_a_registry_a_worker_can_rebuild(images: Path) -> None:
    reg = Registry(entry_points=[], plugins=[], use_environment=False)
    with pytest.raises(InvalidOptionError, match="cannot be handed to a worker process"):
        vt.tune("tune-slow", images=images, registry=reg, isolate=True)


def test_a_threads_option_finds_the_decision_measured_without_it(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # compare and bench pin every entry's runtime threads; `visionkit tune` measured without a pin.
    monkeypatch.setenv("VISIONKIT_CACHE", str(tmp_path / "cache"))
    recipe = LoadRecipe("tune-slow", plugins=(PLUGIN,))
    vt.tune(recipe, images=images, candidates=["sloppy:int8"], runs=1, rounds=1, warmup=0)
    det = load("tune-slow", precision="auto", runtime_options={"threads": 2}, registry=recipe.registry())
    auto = det.runtime["auto"]
    assert auto["from_cache"] is True and auto["picked"] == "fp32"
    assert "measured without threads=2; loaded with it" in auto["notes"]
