"""Test plugin for ``visionkit tune`` in worker processes: importable by name (``vk_test_tune:plugin``).

``tune-slow`` is the fake detector with a 40 ms forward. Runtimes: ``bloat`` (8 ms, exact, holds
120 MiB after using 200 MiB to load, and reports 3 threads: its memory and thread
count must show in its own row only),
``sloppy`` (2 ms, loses every green object) and, from ``crash_plugin``, ``crash``
(its process dies while loading).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

import visionkit
from visionkit.testing.fakes import FakeDetector

NATIVE_S, BLOAT_S, SLOPPY_S = 0.040, 0.008, 0.002
BLOAT_MB, SCRATCH_MB = 120, 200


class TuneSlowDetector(FakeDetector):
    """The fake detector with a forward that takes 40 ms."""

    name = "tune-slow"
    built = 0  # in this process

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        type(self).built += 1

    def forward(self, inputs: Any) -> Any:
        time.sleep(NATIVE_S)
        return inputs


def _bloat(backend: Any, precision: str = "fp32", **runtime_options: Any) -> Any:
    scratch = np.ones(SCRATCH_MB * 2**20, np.uint8)  # what an export needs, then frees
    del scratch
    ballast = np.ones(BLOAT_MB * 2**20, np.uint8)  # touched pages: resident memory of this process

    def forward(inputs: Any) -> Any:
        time.sleep(BLOAT_S)
        return inputs if ballast[0] == 1 else None

    backend.install_runtime({"name": "bloat", "precision": precision, "threads": 3}, {"forward": forward})
    return backend


def _sloppy(backend: Any, precision: str = "int8", **runtime_options: Any) -> Any:
    def forward(inputs: Any) -> Any:
        time.sleep(SLOPPY_S)
        out = []
        for m in inputs:
            m = np.array(m)
            m[1] = False  # the green channel's objects are lost
            out.append(m)
        return out

    backend.install_runtime({"name": "sloppy", "precision": precision}, {"forward": forward})
    return backend


def _crash(backend: Any, precision: str = "int8", **runtime_options: Any) -> Any:
    if os.environ.get("VK_TEST_TUNE_PARENT") == str(os.getpid()):  # never end the test run itself
        raise RuntimeError("crash runtime loaded in the test process: the candidate was not isolated")
    os._exit(3)  # a native library aborting the process: only its own worker may die


class _Plugin:
    @visionkit.hookimpl
    def register_backends(self, register: Any) -> None:
        register(
            TuneSlowDetector.name,
            TuneSlowDetector,
            tasks=TuneSlowDetector.tasks,
            options="visionkit.testing.fakes:FakeOptions",
        )

    @visionkit.hookimpl
    def register_runtimes(self, register: Any) -> None:
        register("bloat", _bloat, precisions=("fp32",))
        register("sloppy", _sloppy, precisions=("int8",))


class _CrashPlugin:
    """Only for isolated workers: in-process, its load would end the test run."""

    @visionkit.hookimpl
    def register_runtimes(self, register: Any) -> None:
        register("crash", _crash, precisions=("int8",))


plugin = _Plugin()
crash_plugin = _CrashPlugin()
