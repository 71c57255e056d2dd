"""``visionkit.tune``, ``visionkit tune`` and ``load(precision="auto")``: measure, pick, cache.

Fake runtimes make speed and accuracy deterministic: the backend's own forward sleeps 60 ms, a
"sloppy" runtime sleeps 2 ms and loses every green object, an "accurate" one sleeps 30 ms and changes
nothing, and a "broken" one fails to load.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import visionkit
from visionkit import tune as vt
from visionkit.cli import main
from visionkit.errors import BackendError, InvalidOptionError
from visionkit.loading import LoadRecipe
from visionkit.registry import Registry, reset_registry
from visionkit.testing.fakes import FakeClassifier, FakeDetector, FakeSemanticSegmenter, make_test_image

NATIVE_S, SLOPPY_S, ACCURATE_S = 0.060, 0.002, 0.030


class SlowDetector(FakeDetector):
    """The fake detector with a forward that takes 60 ms (the "fp32 reference")."""

    name = "slow-detector"

    def forward(self, inputs: Any) -> Any:
        time.sleep(NATIVE_S)
        return inputs


class SlowClassifier(FakeClassifier):
    name = "slow-classifier"

    def forward(self, inputs: Any) -> Any:
        time.sleep(NATIVE_S)
        return inputs


class SlowSemantic(FakeSemanticSegmenter):
    name = "slow-semantic"

    def forward(self, inputs: Any) -> Any:
        time.sleep(NATIVE_S)
        return inputs


def _lose_green(inputs: Any) -> Any:
    """The sloppy runtime's error: detectors and segmenters miss green, the classifier swaps red/green."""
    if isinstance(inputs, np.ndarray):  # the classifier's (B, 3) colour means
        return inputs[:, [1, 0, 2]]
    out = []
    for m in inputs:
        m = np.array(m)
        m[1] = False
        out.append(m)
    return out


def _runtime(name: str, delay: float, perturb: bool) -> Any:
    """A runtime factory whose forward takes ``delay`` seconds (and loses green when ``perturb``)."""

    def forward(inputs: Any) -> Any:
        time.sleep(delay)
        return _lose_green(inputs) if perturb else inputs

    def wrap(backend: Any, precision: str = "int8", **runtime_options: Any) -> Any:
        backend.install_runtime({"name": name, "precision": precision}, {"forward": forward})
        return backend

    return wrap


def _broken(backend: Any, precision: str = "int8", **runtime_options: Any) -> Any:
    raise RuntimeError("INT8 export failed: unsupported operator")


class _Plugin:
    @visionkit.hookimpl
    def register_backends(self, register: Any) -> None:
        for cls in (SlowDetector, SlowClassifier, SlowSemantic):
            register(cls.name, cls, tasks=cls.tasks, options="visionkit.testing.fakes:FakeOptions")

    @visionkit.hookimpl
    def register_runtimes(self, register: Any) -> None:
        register("sloppy", _runtime("sloppy", SLOPPY_S, True), precisions=("int8",))
        register("accurate", _runtime("accurate", ACCURATE_S, False), precisions=("fp32", "int8"))
        register("broken", _broken, precisions=("int8",))


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """Only the slow fakes and the fake runtimes, as the process-wide registry; a private cache dir."""
    monkeypatch.setenv("VISIONKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VISIONKIT_CALIB", raising=False)
    reg = Registry(entry_points=[], plugins=[_Plugin()], use_environment=False)
    reset_registry(reg)
    yield reg
    reset_registry(None)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(3):
        Image.fromarray(make_test_image(96, 128, seed=seed)).save(folder / f"im{seed}.png")
    return folder


FAST = {"runs": 3, "warmup": 1, "rounds": 2}


def _row(report: vt.TuneReport, label: str) -> vt.CandidateResult:
    return next(c for c in report.candidates if c.label == label)


def test_the_fastest_candidate_within_the_budget_is_picked(registry: Registry, images: Path) -> None:
    loose = vt.tune("slow-detector", images=images, max_drop=100.0, cache=False, **FAST)
    assert loose.picked == "sloppy:int8"  # 2 ms, and 100 points of budget allow losing green
    strict = loose.repick(1.0)  # the same measurements, another budget
    assert strict.picked in ("accurate:int8", "accurate:fp32")  # 30 ms and exact; sloppy is excluded
    sloppy = _row(strict, "sloppy:int8")
    assert sloppy.change is not None and sloppy.change < -20  # one class of three lost
    assert not sloppy.within_budget and not sloppy.picked
    assert "sloppy:int8" in strict.reason and "over budget" in strict.reason
    ref = _row(strict, "fp32")
    assert ref.score == pytest.approx(100.0) and ref.change == 0 and ref.ratio == pytest.approx(1.0)
    acc = _row(strict, strict.picked)
    assert acc.change == pytest.approx(0.0) and acc.ratio is not None and acc.ratio < 0.8
    assert acc.ran == strict.picked  # what the loaded backend reports running
    assert ref.median_ms is not None and ref.median_ms >= NATIVE_S * 1e3
    assert ref.runs == FAST["runs"] * FAST["rounds"]
    # A candidate that fails is reported with its reason, and the others still run.
    broken = _row(strict, "broken:int8")
    assert broken.error is not None and "INT8 export failed" in broken.error
    assert broken.median_ms is None and not broken.picked
    assert "could not run: broken:int8" in strict.reason
    assert "error: RuntimeError: INT8 export failed" in strict.table()
    with pytest.raises(InvalidOptionError, match="max_drop"):
        loose.repick(-1)


def test_a_candidate_that_ran_as_another_is_never_picked() -> None:
    # OpenVINO asked for bf16 on a CPU without it runs fp32: its timing is fp32's plus noise.
    def row(label: str, ran: str, ms: float) -> vt.CandidateResult:
        runtime, _, precision = label.rpartition(":")
        return vt.CandidateResult(
            label=label, runtime=runtime or None, precision=precision, ran=ran, score=100.0, change=0.0,
            median_ms=ms, ratio=ms / 100.0,
        )  # fmt: skip

    rows = [row("fp32", "fp32", 100.0), row("rt:fp32", "rt:fp32", 50.0), row("rt:bf16", "rt:fp32", 48.0)]
    report = vt.TuneReport(
        backend="x", task="detect", device="cpu", metric="m", max_drop=1.0, picked="fp32",
        picked_runtime=None, picked_precision="fp32", reason="", candidates=rows, images=1,
        image_source="test", runs=1, warmup=0, rounds=1, seconds=0.0, measured_at="now",
    ).repick(1.0)  # fmt: skip
    assert report.picked == "rt:fp32" and report.picked_precision == "fp32"
    assert "not offered here: rt:bf16 (ran as rt:fp32)" in report.reason
    assert "ran as rt:fp32" in report.table()


def test_a_failing_fp32_reference_is_fatal(registry: Registry, images: Path) -> None:
    with pytest.raises(BackendError, match="fp32 reference failed"):
        vt.tune(LoadRecipe("slow-detector", options={"margin": 999}), images=images, cache=False, **FAST)


def test_candidates_follow_the_registry_and_the_device(registry: Registry) -> None:
    spec = registry.get("slow-detector")
    assert vt.candidates_for(spec, registry) == [
        (None, "fp32"),
        ("accurate", "fp32"),
        ("accurate", "int8"),
        ("broken", "int8"),
        ("sloppy", "int8"),
    ]
    assert vt.candidates_for(spec, registry, runtime="sloppy") == [(None, "fp32"), ("sloppy", "int8")]
    with pytest.raises(InvalidOptionError, match="Unknown runtime 'nope'"):
        vt.candidates_for(spec, registry, runtime="nope")


def test_bf16_is_a_candidate_only_where_it_is_computed_natively(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    spec = replace(registry.get("slow-detector"), precisions=("fp32", "bf16", "fp16"))
    monkeypatch.setattr(vt, "cpu_has_bf16", lambda: False)  # an AVX2 CPU: bf16 is emulated, slower than fp32
    assert (None, "bf16") not in vt.candidates_for(spec, registry)
    assert (None, "bf16") in vt.candidates_for(spec, registry, device="cuda")
    monkeypatch.setattr(vt, "cpu_has_bf16", lambda: True)  # AVX512-BF16 / AMX
    got = vt.candidates_for(spec, registry)
    assert got[:2] == [(None, "fp32"), (None, "bf16")] and (None, "fp16") not in got


def test_bf16_units_are_read_from_the_cpu_flags() -> None:
    from visionkit.devices import cpu_has_bf16

    assert cpu_has_bf16(frozenset({"avx2", "amx_bf16"})) and cpu_has_bf16(frozenset({"asimd", "bf16"}))
    assert not cpu_has_bf16(frozenset({"avx2", "avx512f", "avx512_vnni"}))


@pytest.mark.parametrize(
    ("name", "metric"),
    [("slow-classifier", "top-1 agreement"), ("slow-semantic", "mIoU vs fp32")],
)
def test_classifiers_and_segmenters_are_scored_against_fp32(
    registry: Registry, images: Path, name: str, metric: str
) -> None:
    report = vt.tune(name, images=images, candidates=["sloppy:int8", "accurate:int8"], cache=False, **FAST)
    assert report.metric.startswith(metric)
    assert _row(report, "accurate:int8").change == pytest.approx(0.0)
    sloppy = _row(report, "sloppy:int8")
    assert sloppy.change is not None and sloppy.change < -1.0 and not sloppy.within_budget
    assert report.picked == "accurate:int8"


def test_the_cache_makes_the_second_call_instant_and_is_keyed(
    registry: Registry, images: Path, tmp_path: Path
) -> None:
    first = vt.tune("slow-detector", images=images, **FAST)
    assert first.cache_file is not None and Path(first.cache_file).is_file()
    assert Path(first.cache_file).parent == tmp_path / "cache" / "tune"
    t0 = time.perf_counter()
    again = vt.cached("slow-detector")
    assert time.perf_counter() - t0 < 0.5
    assert again is not None and again.from_cache and again.picked == first.picked
    assert again.candidates == first.candidates
    # Another max_drop re-picks from the same measurements, without measuring.
    loose = vt.cached("slow-detector", max_drop=100.0)
    assert loose is not None and loose.picked == "sloppy:int8" and loose.measured_at == first.measured_at
    # Other options, weights, device or runtime options are another key: nothing cached for them.
    assert vt.cached(LoadRecipe("slow-detector", options={"margin": 50})) is None
    assert vt.cached(LoadRecipe("slow-detector", weights=str(images / "im0.png"))) is None
    assert vt.cached(LoadRecipe("slow-detector", runtime_options={"threads": 1})) is None
    # ... but the auto-only keys are not part of it
    assert (
        vt.cached(LoadRecipe("slow-detector", runtime_options={"max_drop": 1.0, "retune": False})) is not None
    )


def test_the_key_follows_the_weights_file(registry: Registry, tmp_path: Path) -> None:
    w = tmp_path / "w.bin"
    w.write_bytes(b"1")
    k1, fp = vt.cache_key(LoadRecipe("slow-detector", weights=str(w)))
    assert (
        fp["weights"]["size"] == 1 and fp["machine"]["cpu_flags"] == visionkit.bench.environment().cpu_flags
    )
    w.write_bytes(b"22")
    k2, _ = vt.cache_key(LoadRecipe("slow-detector", weights=str(w)))
    k3, fp3 = vt.cache_key(LoadRecipe("slow-detector", weights=None))
    assert len({k1, k2, k3}) == 3 and fp3["weights"] == "random"


def test_a_stale_or_corrupt_cache_file_is_ignored(registry: Registry, images: Path) -> None:
    first = vt.tune("slow-detector", images=images, candidates=["sloppy:int8"], runs=1, rounds=1)
    assert first.cache_file is not None
    Path(first.cache_file).write_text("{not json")
    assert vt.cached("slow-detector") is None


def test_load_auto_tunes_once_then_reads_the_cache(
    registry: Registry, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.perf_counter()
    det = visionkit.load("slow-detector", precision="auto", runtime_options={"calib": str(images)})
    first_s = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert "first call times every candidate" in err and "may take a few minutes" in err
    assert det.precision in ("fp32", "int8") and det.runtime["name"] == "accurate"
    auto = det.runtime["auto"]
    assert auto["picked"] == f"accurate:{det.precision}" and auto["from_cache"] is False
    assert {c["label"] for c in auto["candidates"]} >= {"fp32", "sloppy:int8", "broken:int8"}
    assert len(det.detect(make_test_image())) == 3  # the loaded pick works, and keeps green
    t0 = time.perf_counter()
    again = visionkit.load("slow-detector", precision="auto", runtime_options={"calib": str(images)})
    assert time.perf_counter() - t0 < min(first_s / 3, 1.0)
    assert capsys.readouterr().err == ""
    assert again.runtime["auto"]["from_cache"] is True and again.runtime["name"] == "accurate"
    # A looser budget, from the cache: the sloppy runtime now wins.
    loose = visionkit.load(
        "slow-detector", precision="auto", runtime_options={"calib": str(images), "max_drop": 100}
    )
    assert loose.runtime["name"] == "sloppy" and loose.runtime["auto"]["from_cache"] is True


def test_load_auto_through_a_recipe_and_a_native_pick(registry: Registry, images: Path) -> None:
    recipe = LoadRecipe(
        "slow-detector", precision="auto", runtime="sloppy", runtime_options={"calib": str(images)}
    )
    assert recipe.check().name == "slow-detector"  # "auto" passes the early checks
    bk = recipe.load()  # only sloppy is a candidate, and it loses green: the native fp32 is picked
    assert bk.precision == "fp32" and bk.runtime["name"] == "native"
    assert bk.runtime["auto"]["picked"] == "fp32"
    with pytest.raises(InvalidOptionError, match="Unknown runtime 'nope'"):
        visionkit.load("slow-detector", precision="auto", runtime="nope")


def test_auto_without_the_hook_says_what_to_call(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(visionkit.loading, "_auto_loader", None)
    with pytest.raises(InvalidOptionError, match=r"visionkit\.tune\.load_auto"):
        visionkit.load("slow-detector", precision="auto")


def test_cli_tune_prints_the_table_and_caches(
    registry: Registry, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    argv = [
        "tune",
        "slow-detector",
        "--images",
        str(images),
        "--max-drop",
        "1.0",
        "--runs",
        "2",
        "--no-isolate",
    ]
    code = main([*argv, "--rounds", "2", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    text = captured.out
    for want in ("candidate", "change", "median ms", "x fp32", "<- picked", "sloppy:int8", "over 1 budget"):
        assert want in text
    assert "error: RuntimeError: INT8 export failed" in text
    assert "picked accurate:" in text and "cached in" in text
    assert "tuning slow-detector: 5 candidate(s) on 3 image(s)" in captured.err
    saved = json.loads(out.read_text())
    assert saved["picked"].startswith("accurate:") and saved["max_drop"] == 1.0
    assert vt.cached("slow-detector") is not None  # what load(precision="auto") will use


def test_cli_precision_auto_reads_the_decision_of_tune(
    registry: Registry, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["tune", "slow-detector", "--images", str(images), "--runs", "1", "--rounds", "1", "--no-isolate"]
    assert main(argv) == 0
    capsys.readouterr()
    out = tmp_path / "dets.json"
    assert (
        main(["predict", "slow-detector", str(images / "im0.png"), "--precision", "auto", "--json", str(out)])
        == 0
    )
    assert "first call" not in capsys.readouterr().err  # the decision of `visionkit tune`, from the cache
    assert out.is_file()


def test_cli_tune_errors_are_one_line(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "slow-detector", "--candidates", "nope:int8"]) == 2
    assert "error: Candidate 'nope:int8' names runtime 'nope'" in capsys.readouterr().err


# -- real weights ---------------------------------------------------------------------------------------
def test_tune_real_yolo_on_coco_mini(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights, data = os.environ.get("VISIONKIT_WEIGHTS"), os.environ.get("VISIONKIT_DATA")
    if not weights or not data:
        pytest.skip("needs VISIONKIT_WEIGHTS and VISIONKIT_DATA (the shared data kit)")
    w = Path(weights) / "yolov8n-dq.pt"
    photos = sorted((Path(data) / "coco-mini" / "images").glob("*.jpg"))[:4]
    if not w.is_file() or len(photos) < 4:
        pytest.skip("yolov8n-dq.pt or coco-mini missing from the data kit")
    pytest.importorskip("ultralytics")
    monkeypatch.setenv("VISIONKIT_CACHE", str(tmp_path / "cache"))
    reset_registry(None)
    reg = visionkit.get_registry()
    wanted = ["fp32", "bf16"] + (["onnxruntime:fp32"] if "onnxruntime" in reg.runtimes else [])
    report = vt.tune(
        LoadRecipe("yolo", weights=str(w), options={"imgsz": 320}),
        images=[str(p) for p in photos],
        candidates=wanted,
        runs=2,
        warmup=1,
        rounds=2,
    )
    print(report.table())
    assert [c.label for c in report.candidates] == wanted
    ref = _row(report, "fp32")
    assert ref.score == pytest.approx(100.0) and ref.median_ms is not None and ref.median_ms > 0
    for c in report.candidates:
        assert c.error is None, c.error
        assert c.score is not None and 0.0 <= c.score <= 100.0 and c.ratio is not None and c.ratio > 0
    picked = _row(report, report.picked)
    assert picked.picked and picked.change is not None and picked.change >= -1.0
    assert report.cache_file is not None and vt.cached(
        LoadRecipe("yolo", weights=str(w), options={"imgsz": 320})
    )
