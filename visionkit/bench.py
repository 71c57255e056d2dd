"""Latency, throughput and memory of any backend, per precision × input size × batch size.

::

    report = visionkit.benchmark("yolo", imgsz=[320, 640], precision=["fp32", "int8"], batch=[1, 8])
    print(report.table())
    report.to_json()

Each configuration runs ``warmup`` discarded calls then ``runs`` timed calls of the backend's task
verb, and reports the median, p90 and p99 latency, jitter (p99 / p50: how stable frame times are),
images/s, and the per-stage split (preprocess / forward / postprocess, from the backend's
``last_timing``). By default every configuration runs in a **fresh subprocess**, so its peak memory
(``ru_maxrss``) belongs to that configuration alone, and torch / OpenMP / ONNX Runtime thread counts are
pinned to the same number (``threads``, default: physical cores) for a fair float vs INT8 comparison.
The thread count, CPU ISA flags and library versions are recorded with the result.

Memory: ``peak_rss_mb`` is the process's peak resident memory; ``loaded_rss_mb`` is its resident memory
right after loading, so ``activation_mb`` (peak − loaded) is what running the model added. On a CUDA
device with a torch backend the torch allocator's own counters are read too (``device_peak_mb``:
``torch.cuda.max_memory_allocated`` over warm-up and timed runs; ``device_loaded_mb``: allocated after
loading), and ``device_name`` names the GPU (else the CPU model). torch is never imported for this:
only when the backend runs on CUDA and has already loaded it.

Precisions other than a backend's native ones come from a runtime plugin (``pip install visionkit-onnx``
for ``int8``); when it is missing, that configuration reports the error and the others still run.
Ctrl-C returns the configurations finished so far (``interrupted=True``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from visionkit._tools import SCHEMA_VERSION, option_fields, progress, synthetic_image, version
from visionkit.devices import cpu_flags
from visionkit.errors import InvalidOptionError
from visionkit.images import load_image
from visionkit.loading import DEFAULT, LoadRecipe, registry_with, resolve, resolve_task
from visionkit.protocols import Task
from visionkit.registry import Registry

__all__ = [
    "BenchReport",
    "BenchResult",
    "DeviceMemory",
    "Environment",
    "LatencyStats",
    "StageTimes",
    "benchmark",
    "environment",
]

# Option names backends use for the model input size.
IMGSZ_OPTIONS = ("imgsz", "image_size", "input_size", "size")
# Verb to time for each task, most typical use first.
VERBS = {
    Task.DETECT: "detect",
    Task.SEGMENT_INSTANCES: "segment_instances",
    Task.SEGMENT_SEMANTIC: "segment_semantic",
    Task.CLASSIFY: "classify",
    Task.SEGMENT_PROMPT: "segment_prompt",
}
# ISA extensions that decide which kernels torch / ONNX Runtime use (INT8 speed depends on VNNI/AMX).
ISA_FLAGS = frozenset(
    [
        "sse4_1",
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "avx_vnni",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
        "neon",
        "asimd",
        "asimdhp",
        "asimddp",
        "sve",
        "sve2",
        "i8mm",
        "bf16",
    ]
)
# Environment variables that pin the thread pools of OpenMP/MKL/OpenBLAS (torch) in the worker.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VISIONKIT_NUM_THREADS")


# -- reports --------------------------------------------------------------------------------------
class LatencyStats(BaseModel):
    """Wall-clock milliseconds of one call (one batch), over the timed runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    jitter: float = Field(description="p99 / p50: 1.0 is perfectly stable frame times.")

    @classmethod
    def from_samples(cls, ms: Sequence[float]) -> LatencyStats:
        """Statistics of ``ms`` (at least one sample)."""
        a = np.asarray(ms, np.float64)
        p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
        return cls(
            median_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            mean_ms=float(a.mean()),
            min_ms=float(a.min()),
            max_ms=float(a.max()),
            jitter=p99 / p50 if p50 > 0 else float("nan"),
        )


class StageTimes(BaseModel):
    """Median milliseconds per call spent in each backend stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preprocess_ms: float
    forward_ms: float
    postprocess_ms: float


class BenchResult(BaseModel):
    """One configuration (backend × precision × imgsz × batch). ``error`` is set when it could not run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str
    precision: str
    imgsz: int | None = Field(None, description="Requested model input size (None: the backend's default).")
    batch: int
    task: str | None = None
    runs: int = Field(0, description="Timed calls, over all rounds.")
    rounds: int = Field(1, description="Interleaved rounds merged into this result (fresh process each).")
    warmup: int = 0
    input_shape: tuple[int, int] | None = Field(None, description="(height, width) of the timed images.")
    imgsz_option: str | None = Field(None, description="Backend option that received imgsz, if any.")
    latency: LatencyStats | None = None
    stages: StageTimes | None = None
    images_per_s: float | None = None
    peak_rss_mb: float | None = Field(None, description="Peak resident memory of the process running it.")
    baseline_rss_mb: float | None = Field(None, description="Resident memory before the backend was loaded.")
    loaded_rss_mb: float | None = Field(
        None, description="Resident memory after loading, before the first call (weights, libraries)."
    )
    device: str | None = Field(None, description="Device the backend ran on (its ``device``).")
    device_name: str | None = Field(None, description="GPU name on CUDA, else the CPU model.")
    device_peak_mb: float | None = Field(
        None, description="Peak device memory allocated over warm-up and timed runs (torch allocator)."
    )
    device_loaded_mb: float | None = Field(
        None, description="Device memory allocated after loading (weights), before the first call."
    )
    device_reserved_mb: float | None = Field(
        None, description="Peak device memory the allocator reserved (its cache included)."
    )
    model_size_mb: float | None = Field(
        None, description="Size on disk of the weights / exported model file."
    )
    model_file: str | None = None
    threads: int | None = None
    torch_threads: int | None = None
    runtime: dict[str, Any] | None = Field(
        None,
        description="What a runtime plugin reports (name, model_path, intra_op_threads ...), if one ran it.",
    )
    isolated: bool = Field(False, description="Ran in a fresh subprocess (peak memory is its own).")
    error: str | None = None
    notes: list[str] = Field(default_factory=list)
    samples_ms: list[float] = Field(default_factory=list, description="Every timed call's latency, in order.")

    @property
    def label(self) -> str:
        """``backend:precision@imgsz×batch``."""
        size = f"@{self.imgsz}" if self.imgsz else ""
        return f"{self.backend}:{self.precision}{size} b{self.batch}"

    @property
    def activation_mb(self) -> float | None:
        """Memory that running the model added on top of the loaded model.

        Device allocator peak − allocated after loading when the device was measured, else peak RSS −
        RSS after loading (on CPU this also counts one-off runtime buffers; compare sizes, not absolutes).
        """
        if self.device_peak_mb is not None and self.device_loaded_mb is not None:
            return self.device_peak_mb - self.device_loaded_mb
        if self.peak_rss_mb is not None and self.loaded_rss_mb is not None:
            return self.peak_rss_mb - self.loaded_rss_mb
        return None


class Environment(BaseModel):
    """Where the numbers were measured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    python: str
    platform: str
    machine: str
    processor: str
    cpu_count: int | None
    physical_cores: int | None
    cpu_flags: list[str]
    threads: int | None = Field(description="Thread count pinned for torch, OpenMP and ONNX Runtime.")
    versions: dict[str, str] = Field(default_factory=dict)


class BenchReport(BaseModel):
    """Every configuration measured, with the environment; ``table()`` prints it, ``to_json()`` stores it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    environment: Environment
    results: list[BenchResult]
    interrupted: bool = False
    notes: list[str] = Field(default_factory=list)

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (stable schema, ``schema_version`` tells which)."""
        return self.model_dump_json(indent=indent)

    def table(self) -> str:
        """One row per configuration: latency percentiles, jitter, throughput, stage split, memory, size."""
        device_cols = any(r.device_peak_mb is not None for r in self.results)
        head = (
            f"{'backend':<18}{'prec':<6}{'imgsz':>6}{'batch':>6}{'median':>9}{'p90':>9}{'p99':>9}{'jitter':>7}"
            f"{'img/s':>8}  {'pre/fwd/post ms':<20}{'peak RSS':>10}{'size':>9}"
            + (f"{'dev peak':>11}{'dev act':>10}" if device_cols else "")
        )
        lines = [head, "-" * len(head)]
        for r in self.results:
            if r.error or r.latency is None:
                lines.append(
                    f"{r.backend:<18}{r.precision:<6}{r.imgsz or '-':>6}{r.batch:>6}  error: {r.error}"
                )
                continue
            lat = r.latency
            st = r.stages
            split = f"{st.preprocess_ms:.1f}/{st.forward_ms:.1f}/{st.postprocess_ms:.1f}" if st else "-"
            lines.append(
                f"{r.backend:<18}{r.precision:<6}{r.imgsz or '-':>6}{r.batch:>6}{lat.median_ms:>9.2f}"
                f"{lat.p90_ms:>9.2f}{lat.p99_ms:>9.2f}{lat.jitter:>7.2f}{r.images_per_s or 0:>8.1f}  {split:<20}"
                f"{_mb(r.peak_rss_mb):>10}{_mb(r.model_size_mb):>9}"
                + (
                    f"{_mb(r.device_peak_mb):>11}{_mb(r.activation_mb if r.device_peak_mb else None):>10}"
                    if device_cols
                    else ""
                )
            )
        env = self.environment
        lines.append(
            f"latency in ms per call (one batch), median of {self.results[0].runs if self.results else 0} runs "
            f"after warm-up; threads={env.threads}; CPU {env.processor or env.machine} "
            f"[{' '.join(env.cpu_flags) or 'flags unknown'}]"
        )
        gpus = sorted({r.device_name for r in self.results if r.device_peak_mb is not None and r.device_name})
        if gpus:
            lines.append(
                f"device memory on {', '.join(gpus)}: dev peak = torch.cuda.max_memory_allocated over warm-up and "
                "timed runs, dev act = that minus what was allocated after loading"
            )
        if self.interrupted:
            lines.append("INTERRUPTED: only the configurations above finished.")
        lines += [f"note: {n}" for n in self.notes]
        by_note: dict[str, list[str]] = {}
        for r in self.results:
            for n in r.notes:
                by_note.setdefault(n, []).append(r.label)
        for n, labels in by_note.items():
            where = "all configurations" if len(labels) == len(self.results) else ", ".join(labels)
            lines.append(f"note ({where}): {n}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} MB"


# -- environment ------------------------------------------------------------------------------------
def _cpu_flags() -> list[str]:
    return sorted(cpu_flags() & ISA_FLAGS)


def physical_cores() -> int | None:
    try:
        import psutil
    except ModuleNotFoundError:
        return os.cpu_count()
    return psutil.cpu_count(logical=False) or os.cpu_count()


def _versions() -> dict[str, str]:
    out = {"visionkit": version(), "numpy": np.__version__}
    for dist in ("torch", "onnxruntime", "ultralytics", "transformers"):
        # Installed versions, read from metadata: importing torch just to print its version is slow.
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def environment(threads: int | None = None) -> Environment:
    """Describe this machine: CPU, ISA flags, thread count and library versions."""
    return Environment(
        python=platform.python_version(),
        platform=platform.platform(),
        machine=platform.machine(),
        processor=_cpu_model() or platform.processor(),
        cpu_count=os.cpu_count(),
        physical_cores=physical_cores(),
        cpu_flags=_cpu_flags(),
        threads=threads,
        versions=_versions(),
    )


def _device_name(device: str) -> str | None:
    """The CPU model for CPU devices (GPU names come from the allocator probe, which has torch at hand)."""
    if str(device).startswith(("cuda", "mps")):
        return None
    return _cpu_model() or platform.processor() or platform.machine() or None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return ""


# -- memory and size ----------------------------------------------------------------------------------
def _rss_mb() -> float | None:
    """Current resident memory of this process."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    try:
        import psutil
    except ModuleNotFoundError:
        return None
    return float(psutil.Process().memory_info().rss) / 2**20


def _peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far.

    Linux: ``VmHWM`` of the current address space. Not ``ru_maxrss``: the kernel carries it across
    fork + exec, so a fresh worker would report its parent's footprint when that was larger.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    try:
        import resource
    except ModuleNotFoundError:  # Windows
        try:
            import psutil
        except ModuleNotFoundError:
            return None
        return float(getattr(psutil.Process().memory_info(), "peak_wset", 0)) / 2**20 or None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


# -- device memory (CUDA through torch's allocator; nothing here imports torch) ------------------------
class DeviceMemory:
    """Peak device memory of one configuration, from torch's CUDA caching allocator.

    Active only when the backend's device is CUDA (``"cuda"``, ``"cuda:N"``, or ``"auto"`` that CUDA
    backs) **and** torch is already imported (the backend loaded it): the core never imports torch.
    ONNX Runtime's CUDA arena has no public statistics, so a non-torch runtime on CUDA reports none
    (a note says so); on CPU every runtime's arena is part of the peak RSS.
    """

    def __init__(self, device: str) -> None:
        self.device = str(device or "cpu").lower()
        self.torch: Any = None
        self.index: Any = None
        torch = sys.modules.get("torch")
        if torch is None or not (self.device.startswith("cuda") or self.device == "auto"):
            return
        with contextlib.suppress(Exception):  # a broken CUDA setup must not fail the benchmark
            if not torch.cuda.is_available():
                return
            if self.device == "auto" and not torch.cuda.is_initialized():
                return  # "auto" resolved to something else: nothing was put on the GPU
            self.index = torch.device(self.device if self.device.startswith("cuda") else "cuda")
            self.torch = torch

    @property
    def active(self) -> bool:
        """True when allocator counters will be read."""
        return self.torch is not None

    def start(self) -> float | None:
        """Reset the peak counter; return MB allocated now (the loaded model)."""
        if not self.active:
            return None
        cuda = self.torch.cuda
        cuda.synchronize(self.index)
        cuda.reset_peak_memory_stats(self.index)
        return float(cuda.memory_allocated(self.index)) / 2**20

    def stop(self) -> dict[str, Any]:
        """``device_peak_mb``, ``device_reserved_mb`` and ``device_name`` since :meth:`start`."""
        if not self.active:
            return {}
        cuda = self.torch.cuda
        cuda.synchronize(self.index)
        return {
            "device_peak_mb": float(cuda.max_memory_allocated(self.index)) / 2**20,
            "device_reserved_mb": float(cuda.max_memory_reserved(self.index)) / 2**20,
            "device_name": str(cuda.get_device_name(self.index)),
        }


def _model_file(backend: Any, depth: int = 0) -> Path | None:
    """The model file a backend runs: exported ONNX for runtime wrappers, else its weights file."""
    runtime = getattr(backend, "runtime", None)  # set by runtime plugins (visionkit-onnx: model_path)
    if isinstance(runtime, Mapping) and runtime.get("model_path") and Path(runtime["model_path"]).is_file():
        return Path(runtime["model_path"])
    for attr in ("model_path", "onnx_path", "weights_path", "weights", "path"):
        value = getattr(backend, attr, None)
        if isinstance(value, (str, os.PathLike)) and value and Path(value).is_file():
            return Path(value)
    if depth < 2:  # runtime wrappers keep the float backend they run for
        for attr in ("backend", "inner", "wrapped", "base"):
            inner = getattr(backend, attr, None)
            if inner is not None and inner is not backend:
                found = _model_file(inner, depth + 1)
                if found is not None:
                    return found
    return None


def _model_size_mb(path: Path | None) -> float | None:
    """Size of the model on disk; an OpenVINO ``.xml`` counts its ``.bin`` (the weights) too."""
    if path is None:
        return None
    files = [path] + ([path.with_suffix(".bin")] if path.suffix == ".xml" else [])
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20


# -- one configuration --------------------------------------------------------------------------------
def load_sized_config(cfg: Mapping[str, Any], registry: Registry | None) -> tuple[Any, str, str | None]:
    """Load the backend, handing ``imgsz`` to the first size option it accepts and ``threads`` to its runtime."""
    rt_opts = dict(cfg.get("runtime_options") or {})
    if cfg.get("threads") and "threads" not in rt_opts:
        # Pin the runtime's threads like torch's (load() ignores runtime_options for native precisions).
        try:
            return _load_sized(cfg, registry, {**rt_opts, "threads": int(cfg["threads"])})
        except InvalidOptionError as exc:
            if exc.key != "threads":  # a runtime that takes no thread count: load without one
                raise
    return _load_sized(cfg, registry, rt_opts)


def _load_sized(
    cfg: Mapping[str, Any], registry: Registry | None, rt_opts: dict[str, Any]
) -> tuple[Any, str, str | None]:
    options = dict(cfg.get("options") or {})
    kw: dict[str, Any] = {
        "registry": registry,
        "weights": cfg.get("weights", DEFAULT),
        "device": cfg.get("device", "cpu"),
        "precision": cfg["precision"],
        "runtime_options": rt_opts or None,
    }
    imgsz = cfg.get("imgsz")
    if imgsz is not None and not any(k in options for k in IMGSZ_OPTIONS):
        for key in IMGSZ_OPTIONS:
            try:
                bk, name, _ = resolve(cfg["backend"], options={**options, key: imgsz}, **kw)
            except InvalidOptionError as exc:
                if exc.key == key:  # not this backend's name for the input size: try the next
                    continue
                raise
            return bk, name, key
    bk, name, _ = resolve(cfg["backend"], options=options, **kw)
    return bk, name, None


def _run_config(
    cfg: Mapping[str, Any], *, registry: Registry | None = None, backend: Any = None
) -> BenchResult:
    """Measure one configuration in this process (the subprocess worker calls this too)."""
    base = {
        "backend": str(cfg["backend"]),
        "precision": cfg["precision"],
        "imgsz": cfg.get("imgsz"),
        "batch": cfg["batch"],
    }
    threads = cfg.get("threads")
    notes: list[str] = []
    baseline = _rss_mb()
    try:
        if backend is None:
            bk, name, imgsz_key = load_sized_config(cfg, registry)
        else:
            bk, name, _ = resolve(
                backend, registry=None, weights=None, device="cpu", precision="fp32", options=None
            )
            imgsz_key = None
            if cfg.get("imgsz") is not None:
                imgsz_key = next((k for k in IMGSZ_OPTIONS if k in option_fields(bk)), None)
        base["backend"] = name
        device = str(getattr(bk, "device", None) or cfg.get("device") or "cpu")
        probe = DeviceMemory(device)
        if device.startswith("cuda") and not probe.active:
            notes.append(
                "device memory not measured: only torch's CUDA allocator is read (ONNX Runtime has no arena stats)"
            )
        if cfg.get("imgsz") is not None and imgsz_key is None:
            notes.append("the backend has no input-size option; imgsz only sets the synthetic image size")
        runtime = getattr(bk, "runtime", None)
        runtime_info = {str(k): v for k, v in runtime.items()} if isinstance(runtime, Mapping) else None
        torch_threads = None
        if "torch" in sys.modules:
            torch = sys.modules["torch"]
            if threads:
                torch.set_num_threads(int(threads))
            torch_threads = int(torch.get_num_threads())
        task = resolve_task(bk, cfg.get("task"))
        if cfg.get("images"):
            pool = [load_image(p) for p in cfg["images"]]
        else:
            size = int(cfg.get("imgsz") or 0)
            pool = [synthetic_image(size or 480, size or 640)]
        batch = int(cfg["batch"])
        inputs = [pool[i % len(pool)] for i in range(batch)]
        call = _caller(bk, task, inputs)
        loaded = _rss_mb()  # model and inputs in memory, nothing run yet
        device_loaded = probe.start()
        for _ in range(int(cfg.get("warmup", 3))):
            call()
        samples: list[float] = []
        stages: list[dict[str, float]] = []
        for _ in range(int(cfg.get("runs", 20))):
            if hasattr(bk, "last_timing"):
                bk.last_timing = {}
            t0 = time.perf_counter()
            call()
            samples.append((time.perf_counter() - t0) * 1e3)
            timing = getattr(bk, "last_timing", None)
            if timing and all(k in timing for k in ("preprocess", "forward", "postprocess")):
                stages.append(dict(timing))
        device_stats = probe.stop()
    except Exception as exc:  # one failing configuration (e.g. int8 runtime missing) must not lose the others
        return BenchResult(**base, error=f"{type(exc).__name__}: {exc}", threads=threads, notes=notes)
    stage_times = None
    if stages and len(stages) == len(samples):
        stage_times = StageTimes(
            **{
                f"{k}_ms": float(np.median([s[k] for s in stages]))
                for k in ("preprocess", "forward", "postprocess")
            }
        )
    elif samples:
        notes.append("the backend does not record last_timing for this task; no per-stage split")
    lat = LatencyStats.from_samples(samples) if samples else None
    model_file = _model_file(bk)
    return BenchResult(
        **base,
        task=task.value,
        runs=len(samples),
        samples_ms=[round(x, 4) for x in samples],
        warmup=int(cfg.get("warmup", 3)),
        input_shape=(int(inputs[0].shape[0]), int(inputs[0].shape[1])),
        imgsz_option=imgsz_key,
        latency=lat,
        stages=stage_times,
        images_per_s=batch * 1e3 / lat.median_ms if lat and lat.median_ms > 0 else None,
        peak_rss_mb=_peak_rss_mb(),
        baseline_rss_mb=baseline,
        loaded_rss_mb=loaded,
        device=device,
        device_name=device_stats.pop("device_name", None) or (None if probe.active else _device_name(device)),
        device_loaded_mb=device_loaded,
        **device_stats,
        model_size_mb=_model_size_mb(model_file),
        model_file=str(model_file) if model_file else None,
        threads=threads,
        torch_threads=torch_threads,
        runtime=runtime_info,
        isolated=bool(cfg.get("isolated")),
        notes=notes,
    )


def _caller(bk: Any, task: Task, inputs: list[np.ndarray]) -> Any:
    verb = getattr(bk, VERBS[task])
    if task is Task.SEGMENT_PROMPT:
        if len(inputs) != 1:
            raise InvalidOptionError(
                "Prompt segmenters take one image per call; benchmark them with batch=1."
            )
        h, w = inputs[0].shape[:2]
        return lambda: verb(inputs[0], points=[[w / 2, h / 2]])
    return lambda: verb(inputs)


# -- subprocess isolation ------------------------------------------------------------------------------
def _worker_main(argv: Sequence[str]) -> int:
    """Subprocess entry: read a config JSON, measure it, write a BenchResult JSON."""
    cfg_path, out_path = argv
    cfg = json.loads(Path(cfg_path).read_text())
    result = _run_config(cfg, registry=registry_with(cfg.get("plugins") or ()))
    Path(out_path).write_text(result.model_dump_json())
    return 0


def merge_rounds(results: Sequence[BenchResult]) -> BenchResult:
    """One result from the rounds of one configuration: pooled samples, worst-case memory."""
    if len(results) == 1:
        return results[0]
    failed = next((r for r in results if r.error or r.latency is None), None)
    if failed is not None:
        return failed.model_copy(update={"rounds": len(results)})
    first = results[0]
    samples = [x for r in results for x in r.samples_ms]
    lat = LatencyStats.from_samples(samples)
    stages = None
    if all(r.stages is not None for r in results):
        stages = StageTimes(
            **{
                f: float(np.median([getattr(r.stages, f) for r in results]))
                for f in ("preprocess_ms", "forward_ms", "postprocess_ms")
            }
        )
    peaks = [r.peak_rss_mb for r in results if r.peak_rss_mb is not None]
    bases = [r.baseline_rss_mb for r in results if r.baseline_rss_mb is not None]
    # Memory of the round with the highest peak, so activation = peak - loaded stays one round's own.
    top = max(results, key=lambda r: (r.device_peak_mb or 0.0, r.peak_rss_mb or 0.0))
    worst = {
        f: getattr(top, f)
        for f in ("loaded_rss_mb", "device_peak_mb", "device_loaded_mb", "device_reserved_mb")
    }
    return first.model_copy(
        update={
            "runs": len(samples),
            "rounds": len(results),
            "samples_ms": samples,
            "latency": lat,
            "stages": stages,
            "images_per_s": first.batch * 1e3 / lat.median_ms if lat.median_ms > 0 else None,
            "peak_rss_mb": max(peaks) if peaks else None,
            "baseline_rss_mb": min(bases) if bases else None,
            **worst,
            "notes": list(dict.fromkeys(n for r in results for n in r.notes)),
        }
    )


def _run_isolated(cfg: dict[str, Any], timeout: float | None) -> BenchResult:
    base = {
        "backend": str(cfg["backend"]),
        "precision": cfg["precision"],
        "imgsz": cfg.get("imgsz"),
        "batch": cfg["batch"],
    }
    env = dict(os.environ)
    if cfg.get("threads"):
        env.update({k: str(cfg["threads"]) for k in THREAD_ENV})
    with tempfile.TemporaryDirectory(prefix="visionkit-bench-") as tmp:
        cfg_path, out_path = Path(tmp, "config.json"), Path(tmp, "result.json")
        cfg_path.write_text(json.dumps({**cfg, "isolated": True}))
        code = "import sys; from visionkit.bench import _worker_main; sys.exit(_worker_main(sys.argv[1:]))"
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code, str(cfg_path), str(out_path)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return BenchResult(**base, error=f"timed out after {timeout} s", isolated=True)
        if proc.returncode == -2 or proc.returncode == 130:  # the worker got the Ctrl-C too
            raise KeyboardInterrupt
        if proc.returncode != 0 or not out_path.is_file():
            tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            why = tail[-1] if tail else f"exit code {proc.returncode}"
            return BenchResult(**base, error=f"benchmark worker failed: {why}", isolated=True)
        return BenchResult.model_validate_json(out_path.read_text())


# -- the entry point ------------------------------------------------------------------------------------
def _as_list(value: Any, default: Any) -> list[Any]:
    if value is None:
        return [default]
    if isinstance(value, (str, int)):
        return [value]
    return list(value) or [default]


def benchmark(
    backend: Any,
    *,
    imgsz: int | Sequence[int] | None = None,
    precision: str | Sequence[str] = "fp32",
    batch: int | Sequence[int] = 1,
    runs: int = 20,
    warmup: int = 3,
    images: Sequence[str | os.PathLike[str]] | None = None,
    task: Task | str | None = None,
    device: str = "cpu",
    weights: str | os.PathLike[str] | None = DEFAULT,
    options: Mapping[str, Any] | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    threads: int | None = None,
    registry: Registry | None = None,
    plugins: Sequence[str] = (),
    isolate: bool | None = None,
    timeout: float | None = None,
    rounds: int = 1,
    progress_bar: bool | None = None,
) -> BenchReport:
    """Measure a backend over every combination of ``precision`` × ``imgsz`` × ``batch``.

    Args:
        backend: a backend name or :class:`~visionkit.loading.LoadRecipe` (loaded per configuration), or
            a loaded backend (only its own precision).
        imgsz: model input size(s), passed to the backend's ``imgsz``-like option when it has one; the
            synthetic test image is ``imgsz × imgsz`` (480 × 640 when not given).
        precision: precision(s) for :func:`visionkit.load` (``"int8"`` needs a runtime plugin).
        batch: images per call.
        runs: timed calls per configuration (after ``warmup`` discarded ones).
        images: real image files to time on instead of the synthetic image (cycled to fill a batch).
        task: which task verb to time (default: the backend's first of detect, segment_instances,
            segment_semantic, classify, segment_prompt).
        device, weights, options, runtime_options: passed to :func:`visionkit.load`.
        threads: pin torch / OpenMP / ONNX Runtime to this many threads (default in a subprocess: the
            number of physical cores; in-process runs leave the process's setting unless given).
        registry: look the backend up here (forces in-process runs: a registry object cannot cross
            into a subprocess; use ``plugins`` to keep isolation).
        plugins: extra plugins as ``"module:attr"`` import strings, loaded in the worker too.
        isolate: run each configuration in a fresh subprocess (default: when ``backend`` is a name and
            no ``registry`` object is given).
        timeout: seconds allowed per isolated configuration.
        rounds: run the whole sweep this many times, interleaved (A B A B ...), and merge each
            configuration's samples; use 3+ on a shared or thermally throttling machine.
        progress_bar: progress bar over configurations (default: when stderr is a terminal).

    Returns:
        A :class:`BenchReport`; configurations that failed carry ``error`` instead of numbers.
    """
    if isinstance(backend, LoadRecipe):  # its fields stand for the load arguments
        recipe = backend
        backend, weights, device, precision = recipe.name, recipe.weights, recipe.device, recipe.precision
        options = {**recipe.options, **(options or {})}
        runtime_options = {**recipe.runtime_options, **(runtime_options or {})}
        task = task if task is not None else recipe.task
        if recipe.plugins and registry is None:
            registry = recipe.registry()
    if runs < 1 or warmup < 0:
        raise InvalidOptionError(f"runs must be >= 1 and warmup >= 0, but got runs={runs}, warmup={warmup}.")
    if rounds < 1:
        raise InvalidOptionError(f"rounds must be >= 1, but got {rounds}.")
    by_name = isinstance(backend, str)
    isolate = _isolation(isolate, by_name and registry is None)
    notes: list[str] = []
    precisions = [str(p) for p in _as_list(precision, "fp32")]
    if not by_name:
        own = str(getattr(backend, "precision", "fp32"))
        if precisions != [own]:
            notes.append(
                f"a loaded backend runs only at its own precision {own!r}; pass a name to compare precisions"
            )
        precisions = [own]
    if not isolate:
        notes.append(
            "ran in this process: peak RSS is the process's peak so far, not of each configuration alone"
        )
    if threads is None and isolate:
        threads = physical_cores()
    base = {
        "backend": backend if by_name else getattr(backend, "name", type(backend).__name__),
        "runs": runs,
        "warmup": warmup,
        "task": None if task is None else Task.parse(task).value,
        "images": [str(x) for x in images] if images else None,
        "device": device,
        "weights": None if weights is None else str(weights),
        "options": dict(options or {}),
        "runtime_options": dict(runtime_options or {}),
        "threads": threads,
        "plugins": list(plugins),
    }
    configs = _sweep(base, precisions, imgsz, batch)
    env = environment(threads)
    reg = registry if registry is not None else registry_with(plugins)

    def run_one(cfg: dict[str, Any]) -> BenchResult:
        if isolate:
            return _run_isolated(cfg, timeout)
        return _run_config(cfg, registry=reg, backend=None if by_name else backend)

    per_config, interrupted = _interleaved(configs, rounds, run_one, progress_bar)
    results = [merge_rounds(rs) for rs in per_config if rs]
    return BenchReport(environment=env, results=results, interrupted=interrupted, notes=notes)


def _isolation(isolate: bool | None, can_isolate: bool) -> bool:
    """Whether configurations run in fresh subprocesses (default: whenever they can)."""
    if isolate is None:
        return can_isolate
    if isolate and not can_isolate:
        raise InvalidOptionError(
            "isolate=True needs a backend name and installed plugins (or plugins=['module:attr']); a loaded "
            "backend or a Registry object cannot be handed to a subprocess."
        )
    return isolate


def _sweep(
    base: Mapping[str, Any],
    precisions: Sequence[str],
    imgsz: int | Sequence[int] | None,
    batch: int | Sequence[int],
) -> list[dict[str, Any]]:
    """One configuration per precision x imgsz x batch, checked."""
    sizes = [None if s is None else int(s) for s in _as_list(imgsz, None)]
    batches = [int(b) for b in _as_list(batch, 1)]
    if any(b < 1 for b in batches) or any(s is not None and s < 1 for s in sizes):
        raise InvalidOptionError(f"batch and imgsz must be >= 1, but got batch={batches}, imgsz={sizes}.")
    return [
        {**base, "precision": p, "imgsz": s, "batch": b}
        for p, s, b in itertools.product(precisions, sizes, batches)
    ]


def _interleaved(
    configs: Sequence[dict[str, Any]],
    rounds: int,
    run_one: Callable[[dict[str, Any]], BenchResult],
    progress_bar: bool | None,
) -> tuple[list[list[BenchResult]], bool]:
    """Every configuration ``rounds`` times, round-robin; ``(results per configuration, interrupted)``.

    Round-robin, so slow drifts of a shared machine hit every configuration alike. Ctrl-C after the
    first result stops early with what was measured.
    """
    per_config: list[list[BenchResult]] = [[] for _ in configs]
    schedule = [i for _ in range(rounds) for i in range(len(configs))]
    try:
        for i in progress(schedule, total=len(schedule), desc="bench", enabled=progress_bar):
            per_config[i].append(run_one(configs[i]))
    except KeyboardInterrupt:
        if not any(per_config):
            raise
        return per_config, True
    return per_config, False
