"""One rule for turning visionkit's device strings into torch devices, and one CPU thread policy.

``"auto"`` picks CUDA, then Apple's MPS, then the CPU. A device that is asked for by name but absent
fails here with an :class:`~visionkit.errors.InvalidOptionError` (``.key == "device"``), before any
weights are loaded, instead of as a torch error three libraries down. torch is imported on call only:
``import visionkit`` stays free of backend libraries.

Threads: every runtime defaults to :func:`cpu_threads`, the CPUs this process may really use (its
affinity mask and its cgroup CPU quota), not the host's core count. A container limited to 2 CPUs on a
64-core host would otherwise start 64 OpenMP threads per op; measured on 2 shared cores, torch eager's
median grows 12-19x under contention while ONNX Runtime and OpenVINO grow 2-3x, so oversubscription is
the case to avoid. ``VISIONKIT_THREADS=N`` overrides the count for torch, ONNX Runtime and OpenVINO alike
(a runtime's own ``threads`` option still wins for that runtime).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionkit.backend import parse_device
from visionkit.errors import InvalidOptionError

if TYPE_CHECKING:
    import torch

__all__ = [
    "THREADS_ENV",
    "apply_torch_threads",
    "cpu_flags",
    "cpu_has_bf16",
    "cpu_threads",
    "resolve_torch_device",
    "thread_policy",
]

#: Environment variable that sets the thread count of every runtime.
THREADS_ENV = "VISIONKIT_THREADS"
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _mps_available(torch: object) -> bool:
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_torch_device(device: str | None) -> torch.device:
    """The ``torch.device`` for a visionkit device string (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"auto"``).

    Raises:
        InvalidOptionError: a malformed device, or a CUDA/MPS device torch does not see.
    """
    import torch

    dev = parse_device(device)
    if dev == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available(torch) else "cpu")
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidOptionError(
                f"Device {dev!r} was requested but torch sees no CUDA device; use device='cpu'.", key="device"
            )
        index = int(dev.split(":")[1]) if ":" in dev else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise InvalidOptionError(
                f"Device {dev!r} was requested but torch sees {count} CUDA device(s) "
                f"(cuda:0 to cuda:{count - 1}).",
                key="device",
            )
    elif dev == "mps" and not _mps_available(torch):
        raise InvalidOptionError(
            "Device 'mps' was requested but torch sees no MPS device (Apple silicon); use device='cpu'.",
            key="device",
        )
    return torch.device(dev)


def _cgroup_quota(path: Path = _CGROUP_CPU_MAX) -> int | None:
    """CPUs allowed by a cgroup v2 quota (``"200000 100000"`` → 2), ``None`` when unlimited or unknown."""
    try:
        quota, period = path.read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def thread_policy(cgroup_cpu_max: Path = _CGROUP_CPU_MAX) -> dict[str, Any]:
    """The thread count runtimes use by default and where it comes from.

    Returns:
        ``threads`` (the count), ``source`` (``"VISIONKIT_THREADS"``, ``"cgroup quota"``, ``"affinity"``
        or ``"cpu count"``) and ``visible_cpus`` (``os.cpu_count()``, the host's).

    Raises:
        InvalidOptionError: ``VISIONKIT_THREADS`` is set but not a positive integer.
    """
    visible = os.cpu_count() or 1
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise InvalidOptionError(
                f"{THREADS_ENV}={env!r} is not a positive integer; set it to a thread count such as 2, or unset it.",
                key="threads",
            )
        return {"threads": int(env), "source": THREADS_ENV, "visible_cpus": visible}
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    quota = _cgroup_quota(cgroup_cpu_max)
    if quota is not None and quota < (affinity or visible):
        return {"threads": quota, "source": "cgroup quota", "visible_cpus": visible}
    if affinity is not None:
        return {"threads": affinity, "source": "affinity", "visible_cpus": visible}
    return {"threads": visible, "source": "cpu count", "visible_cpus": visible}


def cpu_threads() -> int:
    """How many threads a CPU runtime should use by default (see :func:`thread_policy`)."""
    return int(thread_policy()["threads"])


def apply_torch_threads() -> dict[str, Any] | None:
    """Cap torch's intra-op threads at :func:`cpu_threads`, when torch is already imported.

    torch sizes its pool from the host's cores, which oversubscribes a container or a pinned process.
    The count is only lowered to the CPUs this process may use, or set when ``VISIONKIT_THREADS`` asks: a
    smaller count the user chose with ``torch.set_num_threads`` is kept.

    Returns:
        ``{"threads": n, "source": ..., "changed_from": old or None}``, or ``None`` when torch is not imported.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    policy = thread_policy()
    before = int(torch.get_num_threads())
    want = int(policy["threads"])
    changed = before != want and (before > want or policy["source"] == THREADS_ENV)
    if changed:
        torch.set_num_threads(want)
    return {
        "threads": int(torch.get_num_threads()),
        "source": policy["source"],
        "changed_from": before if changed else None,
    }


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


#: Flags of CPUs with bf16 arithmetic (x86 AVX512-BF16 / AMX, Arm BF16). Without them bf16 is emulated
#: and slower than fp32 (measured 2-10x on an AVX2 CPU), so tuning does not try it.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU computes in bf16 natively (see :data:`BF16_FLAGS`)."""
    return bool((cpu_flags() if flags is None else flags) & BF16_FLAGS)
