"""Options, errors, batching, export and registration of the YOLO backends (tiny random models)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import visionkit
from visionkit.export import ExportSpec, export_spec_of
from visionkit.testing import (
    ClassifierConformance,
    DetectorConformance,
    InstanceSegmenterConformance,
    make_test_image,
)

SMALL = {"imgsz": 64, "conf": 0.01}


@pytest.fixture(scope="module")
def det(random_ckpts: dict[str, Path]) -> object:
    return visionkit.load("yolo", weights=random_ckpts["detect"], imgsz=96, conf=0.05)


@pytest.fixture(scope="module")
def seg(random_ckpts: dict[str, Path]) -> object:
    return visionkit.load("yolo-seg", weights=random_ckpts["segment"], imgsz=96, conf=0.05)


# -- conformance kit, tiny random models ---------------------------------------------------------------
class TestYoloDetectorConformance(DetectorConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> object:
        return visionkit.load("yolo", weights=None, **SMALL)


class TestYoloSegmenterConformance(InstanceSegmenterConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> object:
        return visionkit.load("yolo-seg", weights=None, **SMALL)


class TestYoloSegmenterDetectsConformance(DetectorConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> object:
        return visionkit.load("yolo-seg", weights=None, **SMALL)


class TestYoloClassifierConformance(ClassifierConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> object:
        return visionkit.load("yolo-cls", weights=None, imgsz=64)


# -- batching ----------------------------------------------------------------------------------------
def test_mixed_size_batch_equals_one_at_a_time(det: object, seg: object, bus: np.ndarray) -> None:
    small = np.ascontiguousarray(bus[::3, ::3])  # 360 x 270 keeps full-resolution masks cheap
    images = [small, make_test_image(120, 200, seed=3), np.ascontiguousarray(small[:200])]
    for backend, verb in ((det, "detect"), (seg, "segment_instances")):
        batched = getattr(backend, verb)(images)
        assert len({r.metadata.input_shape for r in batched}) > 1, "need distinct letterbox shapes"
        assert sum(len(r) for r in batched) > 0
        for b, im in zip(batched, images, strict=True):
            single = getattr(backend, verb)(im)
            assert b.class_name == single.class_name
            np.testing.assert_allclose(b.xyxy, single.xyxy, atol=1e-3)
            np.testing.assert_allclose(b.confidence, single.confidence, atol=1e-5)
            if verb == "segment_instances":
                assert np.mean(b.mask != single.mask) < 1e-3


def test_square_letterbox_when_rect_off(det: object, bus: np.ndarray) -> None:
    wide = make_test_image(60, 120)  # 48 x 96 after resizing to 96: rect pads 48 -> 64
    assert det.detect(wide).metadata.input_shape == (64, 96)
    assert det.detect(wide, rect=False).metadata.input_shape == (96, 96)


# -- options ---------------------------------------------------------------------------------------------
def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(
        visionkit.InvalidOptionError, match=r"Unknown option 'treshold'.*Valid options: .*conf"
    ):
        visionkit.load("yolo", weights=None, treshold=0.5)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"conf": 1.5}, "conf=1.5"),
        ({"iou": -0.1}, "iou=-0.1"),
        ({"max_det": 0}, "max_det=0"),
        ({"classes": [-1]}, "class ids must be >= 0"),
        ({"imgsz": 100}, "multiple of the model stride 32, but got 100"),
    ],
)
def test_invalid_option_values(options: dict, fragment: str) -> None:
    with pytest.raises(visionkit.InvalidOptionError, match=fragment):
        visionkit.load("yolo", weights=None, **options)


def test_top_k_is_a_classifier_option_only() -> None:
    with pytest.raises(visionkit.InvalidOptionError, match="Unknown option 'top_k' for backend 'yolo'"):
        visionkit.load("yolo", weights=None, top_k=3)


def test_per_call_imgsz_is_checked(det: object, bus: np.ndarray) -> None:
    with pytest.raises(visionkit.InvalidOptionError, match="but got 70"):
        det.detect(bus, imgsz=70)


def test_filters_conf_classes_max_det(det: object, bus: np.ndarray) -> None:
    everything = det.detect(bus, conf=0.01)
    assert len(everything) > 5
    top = int(everything.class_id[0])
    only = det.detect(bus, conf=0.01, classes=top)
    assert len(only) > 0 and set(only.class_id.tolist()) == {top}
    assert len(det.detect(bus, conf=0.01, max_det=2)) == 2
    strict = det.detect(bus, conf=float(everything.confidence[2]) + 1e-6)
    assert len(strict) <= 2 and np.all(strict.confidence > everything.confidence[2])
    agnostic = det.detect(bus, conf=0.01, agnostic_nms=True)
    assert len(agnostic) <= len(everything)


def test_class_names_come_from_the_checkpoint(tmp_path: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    model.names = {0: "cat", 1: "dog"}
    torch.save({"model": model, "train_args": {"task": "detect", "imgsz": 64}}, tmp_path / "best.pt")
    backend = visionkit.load("yolo", weights=tmp_path / "best.pt", conf=0.0001)
    assert backend.names == {0: "cat", 1: "dog"} and backend.default_imgsz == 64
    assert set(backend.detect(make_test_image()).class_name) <= {"cat", "dog"}


# -- weights and load errors ---------------------------------------------------------------------------
def test_missing_weights_offline_lists_every_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VISIONKIT_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("VISIONKIT_OFFLINE", "1")
    with pytest.raises(visionkit.WeightsNotFoundError) as err:
        visionkit.load("yolo", weights="yolov8s.pt")
    msg = str(err.value)
    assert str(tmp_path / "yolov8s.pt") in msg
    assert "ultralytics release assets (github.com/ultralytics/assets) (skipped: offline mode is on)" in msg
    assert "github.com/ultralytics/assets/releases" in msg


def test_unknown_asset_name_is_not_downloaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VISIONKIT_WEIGHTS", str(tmp_path))
    monkeypatch.delenv("VISIONKIT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(
        visionkit.WeightsNotFoundError, match=r"'my-best\.pt' is not an ultralytics release asset"
    ):
        visionkit.load("yolo", weights="my-best.pt")


@pytest.mark.parametrize(
    ("weights", "error", "fragment"),
    [
        ("model.h5", visionkit.InvalidOptionError, r"\(\.pt\), a model yaml \(\.yaml\).*got suffix '\.h5'"),
        ("no-such-model.yaml", visionkit.InvalidOptionError, "Model yaml 'no-such-model.yaml' not found"),
        (
            "yolov8n-cls.yaml",
            visionkit.InvalidOptionError,
            "hold an ultralytics 'classify' model.*'yolo-cls'",
        ),
    ],
)
def test_bad_weights(weights: str, error: type, fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        visionkit.load("yolo", weights=weights)


def test_detect_checkpoint_is_not_a_segmenter() -> None:
    with pytest.raises(
        visionkit.InvalidOptionError, match=r"hold an ultralytics 'detect' model.*visionkit\.load\('yolo'"
    ):
        visionkit.load("yolo-seg", weights="yolov8n.yaml")


def test_corrupt_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(visionkit.BackendError, match=r"ultralytics could not load checkpoint .*broken\.pt"):
        visionkit.load("yolo", weights=bad)


def test_fp16_needs_a_gpu() -> None:
    with pytest.raises(visionkit.InvalidOptionError, match="'fp16' needs a CUDA or MPS device"):
        visionkit.load("yolo", weights=None, precision="fp16")


def test_bf16_runs_on_cpu(bus: np.ndarray, random_ckpts: dict[str, Path]) -> None:
    fp32 = visionkit.load("yolo", weights=random_ckpts["detect"], imgsz=96, conf=0.05)
    bf16 = visionkit.load("yolo", weights=random_ckpts["detect"], imgsz=96, conf=0.05, precision="bf16")
    a, b = fp32.detect(bus), bf16.detect(bus)
    assert len(b) > 0 and set(b.class_name) & set(a.class_name)


def test_random_init_is_reproducible(bus: np.ndarray) -> None:
    a = visionkit.load("yolo", weights=None, **SMALL).detect(bus)
    b = visionkit.load("yolo", weights="yolov8n.yaml", **SMALL).detect(bus)
    assert a == b


# -- export ----------------------------------------------------------------------------------------------
def test_export_spec_matches_forward(det: object, seg: object, bus: np.ndarray) -> None:
    for backend, n_out in ((det, 1), (seg, 2)):
        backend = visionkit.load(backend.spec.name, weights=backend.weights, imgsz=96, conf=0.05)
        spec = export_spec_of(backend)
        assert isinstance(spec, ExportSpec) and len(spec.output_names) == n_out
        assert spec.example_inputs[0].shape == (1, 3, 96, 96)
        assert "imgsz96" in spec.key and backend.model_task in spec.key and len(spec.key) > 64
        assert spec.sensitive_outputs == ["output0"]
        (x,) = spec.calibration_inputs([bus, make_test_image()])
        assert x.shape == (2, 3, 96, 96) and x.is_contiguous()
        with torch.inference_mode():
            exported = spec.module(x)
        native = backend.forward(backend.preprocess([bus, make_test_image()], backend.options).inputs)
        pairs = zip(exported, native, strict=True) if n_out == 2 else [(exported, native)]
        for e, n in pairs:
            torch.testing.assert_close(e, n, atol=1e-3, rtol=1e-4)
        # export_spec pins the square letterbox the fixed-shape graph needs.
        assert backend.detect(bus).metadata.input_shape == (96, 96)


def test_postprocess_accepts_numpy_outputs(seg: object, bus: np.ndarray) -> None:
    """A runtime (onnxruntime) hands back numpy arrays; results must not change."""
    batch = seg.preprocess([bus], seg.options)
    raw = seg.forward(batch.inputs)
    as_numpy = tuple(t.numpy() for t in raw)
    task = visionkit.Task.SEGMENT_INSTANCES
    assert seg.postprocess(as_numpy, batch, task) == seg.postprocess(raw, batch, task)


def test_random_export_key_names_the_seed_and_follows_the_tensors() -> None:
    backend = visionkit.load("yolo", weights=None, imgsz=64)
    key = backend.export_spec().key
    assert key.startswith("yolo-detect-random-yolov8n-seed0-") and key.endswith("-imgsz64")
    assert visionkit.load("yolo", weights=None, imgsz=64).export_spec().key == key  # same seed, same key
    with torch.no_grad():
        next(backend.model.parameters()).add_(1.0)  # weights edited in place: never the old export
    assert backend.export_spec().key != key


# -- registration --------------------------------------------------------------------------------------
def test_registered_lazily_without_importing_ultralytics() -> None:
    code = (
        "import sys, visionkit\n"
        "names = {s.name for s in visionkit.list_backends()}\n"
        "assert {'yolo', 'yolo-seg', 'yolo-cls', 'yolo-rtdetr'} <= names, names\n"
        "spec = visionkit.get_registry().get('ultralytics')\n"
        "assert spec.name == 'yolo' and spec.default_weights == 'yolov8n.pt'\n"
        "assert 'ultralytics' not in sys.modules and 'torch' not in sys.modules\n"
    )
    env = {**os.environ, "VISIONKIT_PLUGINS": "yolo"}  # only this plugin: others may import torch
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
