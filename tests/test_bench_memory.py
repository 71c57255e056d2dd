"""Memory in bench/compare reports: RSS after loading, activation growth, device memory (fake CUDA allocator),
and fp32 / bf16 / int8 rows through the same accuracy report (fake backends and a fake runtime)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from visionkit.backend import Batch
from visionkit.bench import BenchResult, DeviceMemory, benchmark
from visionkit.hookspecs import hookimpl
from visionkit.protocols import Task
from visionkit.registry import Registry
from visionkit.testing.fakes import COLORS, FakeDetector, FakeOptions, fake_plugin

FAKES = "visionkit.testing.fakes:fake_plugin"
MIB = 2**20


# -- a fake CUDA allocator with torch.cuda's semantics ---------------------------------------------------
class FakeCuda:
    """``torch.cuda``'s allocator counters: allocated now, peak since the last reset, reserved."""

    def __init__(self) -> None:
        self.allocated = 0
        self.peak = 0
        self.resets = 0

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def synchronize(self, device: Any = None) -> None:
        pass

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        self.resets += 1
        self.peak = self.allocated

    def memory_allocated(self, device: Any = None) -> int:
        return self.allocated

    def max_memory_allocated(self, device: Any = None) -> int:
        return self.peak

    def max_memory_reserved(self, device: Any = None) -> int:
        return self.peak + 2 * MIB  # the caching allocator keeps a little more

    def get_device_name(self, device: Any = None) -> str:
        return "Fake H200"

    def alloc(self, nbytes: int) -> None:
        self.allocated += nbytes
        self.peak = max(self.peak, self.allocated)

    def free(self, nbytes: int) -> None:
        self.allocated -= nbytes


def fake_torch(cuda: FakeCuda) -> types.ModuleType:
    mod = types.ModuleType("torch")
    mod.cuda = cuda  # type: ignore[attr-defined]
    mod.device = lambda spec: spec  # type: ignore[attr-defined]
    mod.get_num_threads = lambda: 1  # type: ignore[attr-defined]
    mod.set_num_threads = lambda n: None  # type: ignore[attr-defined]
    return mod


class GpuFake(FakeDetector):
    """The fake detector "on CUDA": 40 MiB of weights, and float32 activations of 8 channels per pixel."""

    def __init__(self, cuda: FakeCuda, **kw: Any) -> None:
        super().__init__(device="cuda", **kw)
        self.cuda = cuda
        cuda.alloc(40 * MIB)

    def forward(self, inputs: Any) -> Any:
        act = sum(m.shape[-2] * m.shape[-1] * 8 * 4 for m in inputs)
        self.cuda.alloc(act)
        self.cuda.free(act)
        return inputs


def test_gpu_path_reads_the_allocator_after_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda()
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda))
    backend = GpuFake(cuda)
    report = benchmark(backend, imgsz=[256, 512], runs=2, warmup=1)
    small, big = report.results
    for r, side in ((small, 256), (big, 512)):
        assert r.error is None, r.error
        assert r.device == "cuda" and r.device_name == "Fake H200"
        assert r.device_loaded_mb == pytest.approx(40.0)  # weights, before any call
        assert r.device_peak_mb == pytest.approx(40.0 + side * side * 32 / MIB)
        assert r.device_reserved_mb == pytest.approx(r.device_peak_mb + 2)
        assert r.activation_mb == pytest.approx(side * side * 32 / MIB)  # 2 MiB vs 8 MiB: x4 for x2 side
    assert big.activation_mb == pytest.approx(4 * small.activation_mb)  # type: ignore[operator]
    assert cuda.resets == 2  # one reset per configuration, after loading
    table = report.table()
    assert "dev peak" in table and "dev act" in table and "device memory on Fake H200" in table
    assert BenchResult.model_validate_json(big.model_dump_json()) == big


def test_no_torch_no_device_memory_and_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert not DeviceMemory("cuda").active  # never imports torch itself
    assert "torch" not in sys.modules
    report = benchmark(FakeDetector(device="cuda"), runs=1, warmup=0)
    (r,) = report.results
    assert r.device_peak_mb is None and r.device_name is None
    assert any("device memory not measured" in n for n in r.notes)
    assert "dev peak" not in report.table()


def test_cpu_device_is_named_and_not_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda()
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda))
    assert not DeviceMemory("cpu").active and DeviceMemory("cuda:1").active
    (r,) = benchmark(FakeDetector(), runs=1, warmup=0).results
    assert r.device == "cpu" and r.device_peak_mb is None and cuda.resets == 0
    assert r.device_name  # the CPU model (or the platform's processor)
    assert r.loaded_rss_mb is not None and r.peak_rss_mb is not None and r.activation_mb is not None


def test_isolated_activation_memory_grows_with_image_size() -> None:
    report = benchmark("fake-detector", plugins=[FAKES], imgsz=[128, 1536], runs=1, warmup=0, threads=1)
    small, big = report.results
    assert small.error is None and big.error is None, (small.error, big.error)
    assert small.isolated and small.loaded_rss_mb is not None and small.activation_mb is not None
    assert big.activation_mb is not None
    # the fakes hold int16 copies and boolean masks of the image: tens of MB at 1536², almost nothing at 128²
    assert big.activation_mb > small.activation_mb + 15, (small.activation_mb, big.activation_mb)


# -- fp32 / bf16 / int8 rows through compare, with fakes ----------------------------------------------------
class PrecisionFake(FakeDetector):
    """The fake detector with a native bf16 that snaps box corners to 4 px (it loses localisation)."""

    name = "fake-prec"

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        out = super().postprocess(outputs, batch, task)
        if self.precision != "bf16":
            return out
        return [r.model_copy(update={"xyxy": (np.round(r.xyxy / 4) * 4).astype(np.float32)}) for r in out]


class FakeInt8:
    """A runtime wrapper (as visionkit-onnx's): same pre/post, boxes shifted by one pixel."""

    def __init__(self, backend: Any, *, precision: str = "int8", **_: Any) -> None:
        self.backend, self.precision = backend, precision
        self.name, self.tasks, self.options = backend.name, backend.tasks, backend.options
        self.spec = getattr(backend, "spec", None)
        self.device = backend.device
        self.last_timing: dict[str, float] = {}

    def with_options(self, overrides: dict[str, Any]) -> Any:
        return self.backend.with_options(overrides)

    def detect(self, images: Any, **options: Any) -> Any:
        out = self.backend.detect(images, **options)
        self.last_timing = dict(self.backend.last_timing)
        many = out if isinstance(out, list) else [out]
        moved = [r.model_copy(update={"xyxy": r.xyxy + np.float32(1)}) for r in many]
        return moved if isinstance(out, list) else moved[0]


class _PrecisionPlugin:
    @hookimpl
    def register_backends(self, register: Any) -> None:
        register(
            "fake-prec", PrecisionFake, tasks=[Task.DETECT], categories=COLORS, precisions=("fp32", "bf16")
        )

    @hookimpl
    def register_runtimes(self, register: Any) -> None:
        register("fake-int8", FakeInt8, precisions=("int8",))


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    (tmp_path / "images").mkdir()
    images, anns = [], []
    for i in range(4):
        img = rng.integers(70, 110, size=(96, 128, 3), dtype=np.uint8)
        for cat, colour in ((1, (220, 30, 30)), (2, (30, 210, 40))):
            x, y, s = int(rng.integers(0, 90)), int(rng.integers(0, 60)), int(rng.integers(9, 30))
            img[y : y + s, x : x + s] = colour
            box = {"bbox": [x, y, s, s], "area": s * s, "iscrowd": 0}
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, **box})
        Image.fromarray(img).save(tmp_path / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 96, "width": 128})
    cats = [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]
    (tmp_path / "instances.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    return tmp_path / "instances.json"


def test_compare_fp32_bf16_int8_rows_share_one_accuracy_report(coco: Path) -> None:
    pytest.importorskip("pycocotools", reason="compare evaluates COCO mAP with pycocotools")
    from visionkit.compare import compare

    reg = Registry(entry_points=[], plugins=[fake_plugin(), _PrecisionPlugin()])
    report = compare(
        ["fake-prec", "fake-prec:bf16", "fake-prec:int8", "fake-prec:fp16"],
        coco=coco,
        images=coco.parent / "images",
        registry=reg,
        runs=2,
        warmup=0,
    )
    fp32, bf16, int8, fp16 = report.entries
    assert [e.precision for e in (fp32, bf16, int8)] == ["fp32", "bf16", "int8"]
    assert [e.evaluation.precision for e in (fp32, bf16, int8) if e.evaluation] == ["fp32", "bf16", "int8"]
    assert fp32.ap is not None and bf16.ap is not None and int8.ap is not None
    assert bf16.ap < fp32.ap and int8.ap < fp32.ap  # both lose localisation, each its own way
    for e in (bf16, int8):
        assert e.delta is not None
        assert e.delta.startswith(f"{100 * (e.ap - fp32.ap):+.1f} AP, ")  # type: ignore[operator]
        assert "faster" in e.delta or "slower" in e.delta
        assert "x memory" in e.delta
        assert e.peak_rss_mb is not None and e.device_name
    assert fp16.error is not None and "does not support precision 'fp16'" in fp16.error
    assert report.notes == []  # every row ran the precision it asked for
    table = report.table()
    assert all(s in table for s in ("fake-prec:bf16", "fake-prec:int8", "vs first"))


def test_compare_rows_on_a_gpu_compare_device_memory() -> None:
    from visionkit.bench import environment
    from visionkit.compare import CompareEntry, CompareReport, delta_text

    common = {"backend": "yolo", "device_name": "NVIDIA H200", "peak_rss_mb": 1300.0}
    fp32 = CompareEntry(
        spec="yolo", precision="fp32", ap=0.4217, latency_ms=68.2, device_peak_mb=260.2, **common
    )
    fp16 = CompareEntry(
        spec="yolo:fp16", precision="fp16", ap=0.4205, latency_ms=63.3, device_peak_mb=145.8, **common
    )
    assert delta_text(fp16, fp32) == "-0.1 AP, 1.1x faster, 1.00x memory, 0.56x device memory"
    report = CompareReport(
        annotations="instances.json",
        images_dir="val",
        batch=32,
        entries=[fp32, fp16.model_copy(update={"delta": delta_text(fp16, fp32)})],
        environment=environment(1),
    )
    table = report.table()
    assert "dev peak" in table and "260.2 MB" in table and "on NVIDIA H200" in table
    cpu_only = report.model_copy(
        update={"entries": [e.model_copy(update={"device_peak_mb": None}) for e in report.entries]}
    )
    assert "dev peak" not in cpu_only.table()
