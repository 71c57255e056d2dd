"""The CPU thread policy: one count for torch, ONNX Runtime and OpenVINO, from what the process may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import visionkit
from visionkit.devices import THREADS_ENV, apply_torch_threads, cpu_threads, thread_policy


def _affinity() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def test_default_is_the_affinity_mask(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    unlimited = tmp_path / "cpu.max"
    unlimited.write_text("max 100000\n")
    policy = thread_policy(unlimited)
    assert policy["threads"] == _affinity() and policy["source"] == "affinity"
    assert policy["visible_cpus"] == os.cpu_count()


def test_a_cgroup_quota_below_the_visible_cpus_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a container limited to 1.5 CPUs on a bigger host: 2 threads, not one per host core
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert thread_policy(quota) == {"threads": 2, "source": "cgroup quota", "visible_cpus": os.cpu_count()}
    quota.write_text("garbage")  # unreadable quota: fall back to the affinity mask
    assert thread_policy(quota)["threads"] == 64


def test_the_environment_overrides_and_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "3")
    assert cpu_threads() == 3 and thread_policy()["source"] == THREADS_ENV
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(visionkit.InvalidOptionError, match=THREADS_ENV) as info:
            cpu_threads()
        assert info.value.key == "threads"


def test_torch_pool_is_capped_and_a_smaller_user_choice_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(THREADS_ENV, "1")
        torch.set_num_threads(2)
        report = apply_torch_threads()
        assert report == {"threads": 1, "source": THREADS_ENV, "changed_from": 2}
        assert torch.get_num_threads() == 1
        monkeypatch.delenv(THREADS_ENV)
        torch.set_num_threads(1)  # the user asked for fewer than the CPUs: kept
        assert apply_torch_threads() == {"threads": 1, "source": "affinity", "changed_from": None}
        torch.set_num_threads(_affinity() + 7)  # more than the process may use: lowered
        assert apply_torch_threads()["threads"] == _affinity()  # type: ignore[index]
    finally:
        torch.set_num_threads(before)


def test_load_applies_it_to_torch_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("visionkit_torchvision")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv(THREADS_ENV, "1")
        visionkit.load("mobilenet_v3", weights=None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
