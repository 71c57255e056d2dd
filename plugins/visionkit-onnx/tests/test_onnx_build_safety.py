"""INT8 builds touch no process-global state and serialise on the cache entry; real-photo calibration."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import visionkit_onnx._build as build_mod
from visionkit_onnx._calib import BUNDLED, bundled_files
from visionkit_onnx._runtime import wrap

import visionkit


def _int8(registry: visionkit.Registry, cache: Path, **kw: Any) -> Any:
    return visionkit.load(
        "tiny-det",
        weights=None,
        registry=registry,
        precision="int8",
        runtime_options={"cache_dir": cache, **kw},
    )


def test_concurrent_int8_builds_succeed_without_changing_the_working_directory(
    tiny: Any, tmp_path: Path, calib_dir: Path, images: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    exports: list[str] = []
    real = build_mod.export_onnx

    def counting(spec: Any, path: Path, name: str) -> None:
        exports.append(name)
        real(spec, path, name)

    monkeypatch.setattr(build_mod, "export_onnx", counting)
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:  # another thread of the same process, e.g. a server writing relative paths
        while not stop.is_set():
            seen.add(os.getcwd())

    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    caches = [tmp_path / "shared", tmp_path / "shared", tmp_path / "other"]
    # built here, not in the threads: the tiny backend seeds torch's global RNG in its constructor
    backends = [tiny.TinyDetector() for _ in caches]

    def build(i: int) -> None:
        try:
            results[i] = wrap(backends[i], "int8", cache_dir=caches[i], calib=calib_dir)
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=build, args=(i,)) for i in range(len(caches))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    watcher.join()
    assert not errors, errors
    assert seen == {str(cwd)}, f"the working directory changed during a build: {seen}"
    assert list(cwd.iterdir()) == [], "a build left files in the working directory"
    # the two builds of one cache entry were serialised: one exported, the other reused its file
    assert len(exports) == 2
    assert sorted(r.runtime["cache_hit"] for r in results.values()) == [False, False, True]
    assert results[0].runtime["model_path"] == results[1].runtime["model_path"]
    x = results[0].preprocess(images[:1], results[0].options).inputs
    np.testing.assert_array_equal(results[0].forward(x).numpy(), results[1].forward(x).numpy())


def test_default_calibration_uses_the_bundled_real_photos(
    registry: visionkit.Registry, tmp_path: Path
) -> None:
    files = bundled_files()
    assert len(files) >= 5 and sum(p.stat().st_size for p in files) < 1.5e6
    licences = (files[0].parent / "LICENSES.md").read_text()
    assert all(p.name in licences for p in files), "every bundled photo has its licence recorded"
    be = _int8(registry, tmp_path, max_drop=100)
    calib = be.runtime["calibration"]
    assert calib["source"] == BUNDLED and calib["images"] == len(files)
    # the accuracy report says which images calibrated the model and which scored it
    assert be.runtime["gate"]["calibration"] == calib
    assert be.runtime["gate"]["source"] == BUNDLED


def test_user_calibration_folder_is_reported(
    registry: visionkit.Registry, tmp_path: Path, calib_dir: Path
) -> None:
    be = _int8(registry, tmp_path, calib=calib_dir, calib_images=3)
    assert be.runtime["calibration"]["source"] == str(calib_dir) and be.runtime["calibration"]["images"] == 3
