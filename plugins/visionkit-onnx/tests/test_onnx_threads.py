"""ONNX Runtime follows visionkit's thread policy when no ``threads`` option is given."""

from __future__ import annotations

from pathlib import Path

import pytest

import visionkit
from visionkit.devices import THREADS_ENV, cpu_threads


def test_default_threads_follow_the_policy_not_the_host(
    registry: visionkit.Registry, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(THREADS_ENV, "1")
    be = visionkit.load(
        "tiny-det",
        weights=None,
        registry=registry,
        runtime="onnxruntime",
        runtime_options={"cache_dir": cache},
    )
    assert be.runtime["intra_op_threads"] == 1 == cpu_threads()
    assert be.runtime["threads_source"] == THREADS_ENV
    assert be.forward.session.get_session_options().intra_op_num_threads == 1
    monkeypatch.delenv(THREADS_ENV)
    be = visionkit.load(
        "tiny-det",
        weights=None,
        registry=registry,
        runtime="onnxruntime",
        runtime_options={"cache_dir": cache},
    )
    assert be.runtime["intra_op_threads"] == cpu_threads() and be.runtime["threads_source"] == "affinity"
