"""The openvino runtime on tiny exportable backends: swap, precision reporting, threads, cache, INT8, gate.

Tolerances: fp32 OpenVINO vs torch on the same random weights, raw outputs within 1e-4 (measured
~1e-6). INT8 (NNCF, head tail float) on the tiny detector: boxes of the confident detections within
3 px of fp32 on 64-px inputs, scores not collapsed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import visionkit
from visionkit.export import ExportNotSupportedError


def _load(
    registry: visionkit.Registry, folder: Path, name: str = "tiny-det", precision: str = "fp32", **ro: Any
) -> Any:
    return visionkit.load(
        name,
        weights=None,
        registry=registry,
        precision=precision,
        runtime="openvino",
        runtime_options={"cache_dir": folder, **ro},
    )


def _cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_registration_is_lazy() -> None:
    code = (
        "import sys, visionkit; r = visionkit.Registry(); rt = r.runtimes['openvino'];"
        "print(rt.precisions, rt.install, 'openvino' in sys.modules, 'nncf' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [
        "('fp32',",
        "'bf16',",
        "'int8')",
        "pip",
        "install",
        "visionkit-openvino",
        "False",
        "False",
        "False",
    ]


def test_fp32_matches_torch_and_reports_what_runs(
    registry: visionkit.Registry, cache: Path, images: list[np.ndarray]
) -> None:
    ref = visionkit.load("tiny-det", weights=None, registry=registry)
    ov_ = _load(registry, cache, threads=1)
    x = ref.preprocess(images[:3], ref.options).inputs
    torch.testing.assert_close(ov_.forward(x), ref.forward(x), atol=1e-4, rtol=1e-4)
    a, b = ov_.detect(images[0], conf=0.0), ref.detect(images[0], conf=0.0)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
    rt = ov_.runtime
    assert type(ov_.forward).__name__ == "OvForward"
    # read back from the compiled model: f32 was asked for explicitly, one thread, one stream, latency
    assert (rt["name"], rt["precision"], rt["inference_precision"]) == ("openvino", "fp32", "fp32")
    assert (rt["threads"], rt["streams"], rt["performance_hint"]) == (1, 1, "LATENCY")
    assert ov_.precision == "fp32" and rt["cache_hit"] is False and Path(rt["model_path"]).exists()
    # fp32 weights are stored as fp32 (ov.save_model would compress them to fp16 by default)
    assert rt["size_bytes"] > 4 * sum(p.numel() for p in ref.net.parameters())


def test_default_threads_follow_the_cpu_affinity(registry: visionkit.Registry, cache: Path) -> None:
    from visionkit_openvino._runtime import default_threads

    be = _load(registry, cache)
    assert be.runtime["threads"] == default_threads() == be.runtime["default_threads"]


def test_bf16_is_reported_truthfully(
    registry: visionkit.Registry, cache: Path, images: list[np.ndarray]
) -> None:
    ref = visionkit.load("tiny-det", weights=None, registry=registry)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        be = _load(registry, cache, precision="bf16")
    rt = be.runtime
    assert rt["requested_precision"] == "bf16"
    if _cpu_has_bf16():
        assert rt["precision"] == rt["inference_precision"] == be.precision == "bf16"
    else:  # this CPU has no bf16: OpenVINO runs f32, and the backend says so
        assert rt["precision"] == rt["inference_precision"] == be.precision == "fp32"
        assert any("cannot run bf16" in str(w.message) for w in caught)
    x = ref.preprocess(images[:1], ref.options).inputs
    got, want = be.forward(x), ref.forward(x)
    assert (got[:, :4] - want[:, :4]).abs().max() < 0.5 and (got[:, 4:] - want[:, 4:]).abs().max() < 0.02


def test_cache_hit_corruption_and_no_files_in_cwd(
    registry: visionkit.Registry, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    first = _load(registry, cache)
    assert _load(registry, cache).runtime["cache_hit"] is True
    Path(first.runtime["model_path"]).with_suffix(".bin").write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="corrupt"):
        again = _load(registry, cache)
    assert again.runtime["cache_hit"] is False
    assert os.getcwd() == str(work) and list(work.iterdir()) == []
    # no cache: built in memory, nothing written
    fresh = tmp_path / "nocache"
    assert _load(registry, fresh, cache=False).runtime["model_path"] is None and not fresh.exists()


def test_int8_keeps_the_head_tail_float(
    registry: visionkit.Registry, cache: Path, calib_dir: Path, images: list[np.ndarray]
) -> None:
    ref = visionkit.load("tiny-det", weights=None, registry=registry)
    int8 = _load(registry, cache, precision="int8", calib=calib_dir, calib_images=4)
    rt = int8.runtime
    assert rt["precision"] == int8.precision == "int8" and rt["inference_precision"] == "fp32"
    assert rt["calibration"]["source"] == str(calib_dir) and rt["calibration"]["images"] == 4
    # found by walking the graph: softmax, the DFL conv and the sigmoid stay float; backbone is INT8
    ignored = " ".join(rt["ignored"])
    assert "Sigmoid" in ignored and "Softmax" in ignored
    assert rt["compute_ops"] == 5 and len(rt["float_ops"]) == 1 and "dfl" in rt["float_ops"][0]
    x = ref.preprocess(images[:2], ref.options).inputs
    got, want = int8.forward(x), ref.forward(x)
    assert got.shape == want.shape and got[:, 4:].std() > 0.5 * want[:, 4:].std(), "scores collapsed"
    assert (got[:, :4] - want[:, :4]).abs().max() < 3.0
    assert (got[:, 4:] - want[:, 4:]).abs().max() < 0.1


def test_int8_without_calib_says_it_is_synthetic(registry: visionkit.Registry, cache: Path) -> None:
    with pytest.warns(RuntimeWarning, match="synthetic images"):
        be = _load(registry, cache, name="tiny-cls", precision="int8", calib_images=2)
    assert be.runtime["calibration"]["source"] == "synthetic-v1"


def test_accuracy_aware_int8_reports_the_search(
    registry: visionkit.Registry, cache: Path, calib_dir: Path
) -> None:
    be = _load(registry, cache, name="tiny-cls", precision="int8", calib=calib_dir, calib_images=4,
               max_drop=100.0, val_images=4)  # fmt: skip
    rt = be.runtime
    assert rt["accuracy_control"]["max_drop"] == 100.0
    gate = rt["gate"]
    assert gate["passed"] and gate["metric"] == "top-1" and gate["images"] == 4
    assert gate["reference_ms"] > 0 and gate["candidate_ms"] > 0
    assert isinstance(rt["float_ops"], list) and rt["compute_ops"] == 2


def test_gate_refuses_a_worse_model(
    registry: visionkit.Registry, cache: Path, calib_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from visionkit_openvino import _gate, _runtime

    be = _load(registry, cache, name="tiny-cls", max_drop=0.5, val=calib_dir, val_images=3)
    assert be.runtime["gate"]["passed"] and be.runtime["gate"]["drop"] == 0
    real = _gate.GateData.evaluate
    monkeypatch.setattr(_gate.GateData, "evaluate", lambda self, c, r: {**real(self, c, r), "drop": 2.0})
    with pytest.raises(_runtime.AccuracyGateError, match=r"more than max_drop=0\.5"):
        _load(registry, cache / "other", name="tiny-cls", max_drop=0.5, val=calib_dir, val_images=3)


def test_bad_input_is_refused_clearly(registry: visionkit.Registry, cache: Path) -> None:
    with pytest.raises(visionkit.InvalidOptionError, match="treads"):
        _load(registry, cache, treads=2)
    with pytest.raises(visionkit.InvalidOptionError, match="does not offer precision 'fp16'"):
        visionkit.load("tiny-det", weights=None, registry=registry, precision="fp16", runtime="openvino")
    with pytest.raises(visionkit.InvalidOptionError, match="device='cuda'"):
        visionkit.load("tiny-det", weights=None, registry=registry, device="cuda", runtime="openvino")


def test_not_exportable_is_refused(cache: Path) -> None:
    import visionkit_openvino

    from visionkit.testing.fakes import fake_plugin

    reg = visionkit.Registry(
        entry_points=[], plugins=[fake_plugin(), visionkit_openvino], use_environment=False
    )
    with pytest.raises(ExportNotSupportedError, match="export_spec"):
        visionkit.load(
            "fake-detector",
            weights=None,
            registry=reg,
            runtime="openvino",
            runtime_options={"cache_dir": cache},
        )


def test_missing_openvino_names_the_install(
    registry: visionkit.Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    with pytest.raises(visionkit.BackendUnavailableError, match="pip install visionkit-openvino"):
        visionkit.load("tiny-det", weights=None, registry=registry, runtime="openvino")


class _OtherRuntime:
    """A runtime registered after openvino whose name sorts first, offering int8."""

    @visionkit.hookimpl
    def register_runtimes(self, register: Any) -> None:
        def wrap(backend: Any, precision: str = "fp32", **_: Any) -> Any:
            backend.runtime = {"name": "aaa-other", "precision": precision}
            return backend

        register("aaa-other", wrap, precisions=("fp32", "int8"))


def test_installing_openvino_does_not_change_which_runtime_serves_a_precision(tiny_plugin: Any) -> None:
    import visionkit_openvino

    # plugin order is entry-point order, which is filesystem order: openvino may come first
    reg = visionkit.Registry(
        entry_points=[], plugins=[tiny_plugin, visionkit_openvino, _OtherRuntime()], use_environment=False
    )
    assert list(reg.runtimes) == ["openvino", "aaa-other"]
    be = visionkit.load("tiny-det", weights=None, registry=reg, precision="int8")
    assert be.runtime["name"] == "aaa-other"  # picked by name, not by registration order
