"""OpenVINO IR export (``visionkit export NAME --runtime openvino``) and torch-free IR deploy (issue 19).

A tiny random YOLO (three stride levels of one conv each and a full ``Detect`` head: the same graph
kinds as yolov8n, ~5x quicker to export and quantize), its weights jittered so scores spread out.

Tolerances, deploy IR vs the SDK's own OpenVINO runtime on the same network (``load("yolo",
runtime="openvino")``, same cache entry, same compile settings), rect letterbox shapes: classes equal,
boxes within 1e-3 px, scores within 1e-5 (measured on 90 detections: fp32 1.4e-4 px and 1.8e-7, INT8
identical; the IR adds only the NMS tail, which the SDK runs in torch). ONNX artifact run by OpenVINO vs
by ONNX Runtime: boxes within 1e-2 px, scores within 1e-4 (fp32, different kernels). torchvision
classifier IR vs the SDK's OpenVINO runtime: probabilities within 5e-4 (the ONNX deploy's bound: torch's
antialiased resize reproduced in numpy to one level of 255).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import visionkit
from visionkit import BackendError, InvalidOptionError

pytestmark = [
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("visionkit_yolo", "ultralytics", "visionkit_onnx")),
        reason="visionkit-yolo (and ultralytics) and visionkit-onnx not installed",
    ),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),  # synthetic calibration images; bf16 on AVX2
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

HEAVY = ("torch", "torchvision", "ultralytics", "transformers", "segment_anything")
TINY_YOLO = """\
nc: 3
backbone:
  - [-1, 1, Conv, [8, 3, 2]]
  - [-1, 1, Conv, [8, 3, 2]]
  - [-1, 1, Conv, [8, 3, 2]]
  - [-1, 1, Conv, [8, 3, 2]]
  - [-1, 1, Conv, [8, 3, 2]]
head:
  - [[2, 3, 4], 1, Detect, [nc]]
"""
#: rect letterbox shapes at imgsz 64: 32x64, 64x64, 64x32
SHAPES = [(30, 100, 3), (64, 64, 3), (100, 40, 3)]


def _registry() -> visionkit.Registry:
    import visionkit_onnx
    import visionkit_openvino
    import visionkit_yolo

    return visionkit.Registry(
        entry_points=[], plugins=[visionkit_yolo, visionkit_onnx, visionkit_openvino], use_environment=False
    )


def _backend(yaml: Path) -> Any:
    """The tiny YOLO with deterministically jittered weights and class biases at 0 (a random head scores
    every anchor alike, near ultralytics' ~1e-4 class prior)."""
    import torch

    be = visionkit.load("yolo", weights=str(yaml), imgsz=64, conf=0.05, max_det=30, registry=_registry())
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in be.model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
        for branch in be.model.model[-1].cv3:  # no prior of ~1e-4 per class: scores spread over 0-1
            branch[-1].bias.zero_()
    return be


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """fp32, INT8 and bf16 IRs of one network, and the SDK's OpenVINO runtime on the same cache entries."""
    from visionkit_openvino._export import export
    from visionkit_openvino._runtime import wrap

    tmp = tmp_path_factory.mktemp("ov-deploy")
    yaml = tmp / "tiny-yolo.yaml"
    yaml.write_text(TINY_YOLO)
    out: dict[str, Any] = {"dir": tmp, "yaml": yaml}
    ro = {"cache_dir": tmp / "cache", "calib_images": 4, "threads": 2}
    backends = {"fp32": _backend(yaml), "int8": _backend(yaml)}
    for precision in ("fp32", "int8", "bf16"):  # bf16: the fp32 network, a compile hint
        be = backends["fp32" if precision == "bf16" else precision]
        out[precision] = export(be, precision=precision, output=tmp / f"tiny-{precision}.xml", **ro)
    for precision, be in backends.items():  # export left the float backends unchanged: now swap them
        out[f"sdk-{precision}"] = wrap(be, precision=precision, **ro)
        assert out[f"sdk-{precision}"].runtime["cache_hit"], "the SDK path and the IR share one network"
    return out


def _meta(xml: Path) -> dict[str, Any]:
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    return {
        "schema": model.get_rt_info(["visionkit", "schema"]).astype(str),
        "meta": json.loads(model.get_rt_info(["visionkit", "meta"]).astype(str)),
        "hint": model.get_rt_info(["runtime_options", "INFERENCE_PRECISION_HINT"]).astype(str),
    }


def test_ir_carries_the_deploy_metadata(exported: dict[str, Any]) -> None:
    report = exported["int8"]
    assert report["deploy"] == {"artifact": True, "reason": None}
    assert report["quantization"] == "nncf" and report["float_nodes"], "the head's tail stays float"
    xml = Path(report["output"])
    assert xml.suffix == ".xml" and xml.with_suffix(".bin").is_file()
    got = _meta(xml)
    meta = got["meta"]
    assert got["schema"] == "1" and got["hint"] == "f32"
    assert meta["kind"] == "yolo-detect" and meta["class_names"] == ["0", "1", "2"]
    assert meta["input"]["rect"] is True and meta["input"]["stride"] == 32 and meta["input"]["imgsz"] == 64
    assert meta["defaults"] == {"conf": 0.05, "iou": 0.7, "max_det": 30}
    assert meta["precision"] == "int8" and meta["inference_precision"] == "f32"
    assert meta["format"] == "openvino-ir" and meta["quantization"]["scheme"] == "nncf"
    assert meta["source"]["backend"] == "yolo" and meta["calibration"]["images"] == 4
    import openvino as ov

    inputs = {p.get_any_name(): p.get_partial_shape() for p in ov.Core().read_model(str(xml)).inputs}
    assert str(inputs["images"]) == "[?,3,?,?]", "dynamic H/W kept (rect inputs)"
    assert {"conf", "iou", "max_det", "class_offset"} <= set(inputs), "NMS thresholds are graph inputs"


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_ir_matches_the_sdk_openvino_runtime(exported: dict[str, Any], precision: str) -> None:
    report, sdk = exported[precision], exported[f"sdk-{precision}"]
    dep = visionkit.load(report["output"], registry=_registry(), threads=2)
    assert dep.runtime["name"] == "openvino" and dep.runtime["deployed"] is True
    assert dep.runtime["threads"] == 2 and dep.runtime["precision"] == precision
    rng = np.random.default_rng(1)
    shapes = set()
    for shape in SHAPES:
        img = rng.integers(0, 255, shape, np.uint8)
        a, b = sdk.detect(img), dep.detect(img)
        assert len(a) == len(b) > 0
        ka = np.lexsort((a.xyxy[:, 0], a.class_id, -a.confidence))
        kb = np.lexsort((b.xyxy[:, 0], b.class_id, -b.confidence))
        np.testing.assert_array_equal(a.class_id[ka], b.class_id[kb])
        np.testing.assert_allclose(b.xyxy[kb], a.xyxy[ka], atol=1e-3)
        np.testing.assert_allclose(b.confidence[kb], a.confidence[ka], atol=1e-5)
        assert a.metadata.input_shape == b.metadata.input_shape
        shapes.add(b.metadata.input_shape)
    assert len(shapes) == 3, "each image ran at its own rect shape"
    img = rng.integers(0, 255, (64, 64, 3), np.uint8)  # per-call thresholds reach the in-graph NMS
    for kw in ({"conf": 0.6}, {"conf": 0.85}, {"iou": 0.3}, {"max_det": 2}, {"agnostic_nms": True}):
        a, b = sdk.detect(img, **kw), dep.detect(img, **kw)
        assert len(a) == len(b) and (b.confidence >= kw.get("conf", 0.05)).all(), kw
        np.testing.assert_allclose(np.sort(b.confidence), np.sort(a.confidence), atol=1e-5)
    explicit = visionkit.load("openvino-ir", weights=report["output"], registry=_registry())
    assert len(explicit.detect(img)) == len(dep.detect(img))


def test_ir_deploy_process_imports_no_torch(exported: dict[str, Any]) -> None:
    fp32, int8 = exported["fp32"]["output"], exported["int8"]["output"]
    code = f"""
import sys, numpy as np, visionkit
d = visionkit.load({fp32!r}).detect(np.zeros((60, 80, 3), np.uint8))
q = visionkit.load("openvino-ir", weights={int8!r}, threads=1)
q.detect(np.zeros((60, 80, 3), np.uint8))
print("HEAVY", [m for m in {HEAVY!r} if m in sys.modules], type(d).__name__, q.runtime["threads"])
"""
    env = {**os.environ, "VISIONKIT_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY [] Detections 1" in out.stdout, out.stdout + out.stderr[-2000:]


def test_bf16_export_records_its_compile_hint(exported: dict[str, Any]) -> None:
    import openvino as ov

    xml = Path(exported["bf16"]["output"])
    assert exported["bf16"]["inference_precision"] == "bf16" and exported["bf16"]["cache_hit"]
    got = _meta(xml)
    assert got["hint"] == "bf16" and got["meta"]["inference_precision"] == "bf16"
    assert got["meta"]["precision"] == "bf16"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dep = visionkit.load(str(xml), registry=_registry())
    bf16_cpu = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert dep.runtime["requested_inference_precision"] == "bf16"
    assert dep.runtime["inference_precision"] == ("bf16" if bf16_cpu else "fp32")
    assert bf16_cpu or any("cannot run in OpenVINO" in str(w.message) for w in caught)
    assert isinstance(dep.detect(np.zeros((40, 64, 3), np.uint8)), visionkit.Detections)


def test_cli_export_routes_to_the_openvino_exporter(
    exported: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--runtime openvino`` reaches this exporter (it writes .xml); without ``--runtime`` the output's
    suffix picks the exporter: ``.onnx`` stays with ONNX Runtime's whichever plugin loaded first, ``.xml``
    goes to OpenVINO's."""
    import onnx

    from visionkit.cli import main

    argv = ["export", "yolo", "--weights", str(exported["yaml"]), "-O", "imgsz=64", "--precision", "fp32"]
    assert main([*argv, "--runtime", "openvino", "-o", str(tmp_path / "m.onnx")]) != 0
    assert "the exporter writes .xml (openvino)" in capsys.readouterr().err
    assert main([*argv, "-o", str(tmp_path / "ir.xml"), "-R", f"cache_dir={tmp_path / 'c'}"]) == 0
    capsys.readouterr()
    assert _meta(tmp_path / "ir.xml")["meta"]["format"] == "openvino-ir"
    assert main([*argv, "-o", str(tmp_path / "d.onnx"), "-R", f"cache_dir={tmp_path / 'c'}"]) == 0
    assert json.loads(capsys.readouterr().out)["deploy"]["artifact"] is True
    assert "visionkit" in {p.key for p in onnx.load(str(tmp_path / "d.onnx")).metadata_props}


def test_files_that_are_not_ir_artifacts_get_a_clear_error(exported: dict[str, Any], tmp_path: Path) -> None:
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([1, 3, 8, 8], np.float32, name="x")
    ov.save_model(ov.Model([ops.relu(x)], [x], "plain"), str(tmp_path / "plain.xml"))
    with pytest.raises(InvalidOptionError, match=r"not a visionkit deploy artifact: its OpenVINO rt_info"):
        visionkit.load(str(tmp_path / "plain.xml"), registry=_registry())
    model = ov.Core().read_model(exported["fp32"]["output"])
    model.set_rt_info("99", ["visionkit", "schema"])
    ov.save_model(model, str(tmp_path / "future.xml"), compress_to_fp16=False)
    with pytest.raises(InvalidOptionError, match="schema 99"):
        visionkit.load("openvino-ir", weights=str(tmp_path / "future.xml"), registry=_registry())
    (tmp_path / "junk.xml").write_text("<not-a-model/>")
    with pytest.raises(BackendError, match="OpenVINO could not read"):
        visionkit.load(str(tmp_path / "junk.xml"), registry=_registry())
    with pytest.raises(InvalidOptionError, match="engine must be one of openvino"):
        visionkit.load(exported["fp32"]["output"], engine="onnxruntime", registry=_registry())


def test_onnx_artifact_runs_in_openvino_too(exported: dict[str, Any], tmp_path: Path) -> None:
    from visionkit_onnx._export import export

    export(_backend(exported["yaml"]), precision="fp32", output=tmp_path / "t.onnx", cache_dir=tmp_path / "c")
    ort = visionkit.load(str(tmp_path / "t.onnx"), registry=_registry())
    ov_ = visionkit.load(str(tmp_path / "t.onnx"), engine="openvino", threads=2, registry=_registry())
    assert ort.runtime["engine"] == "onnxruntime" and ov_.runtime["engine"] == "openvino"
    rng = np.random.default_rng(2)
    for shape in SHAPES:
        img = rng.integers(0, 255, shape, np.uint8)
        a, b = ort.detect(img), ov_.detect(img)
        assert len(a) == len(b) > 0
        ka = np.lexsort((a.xyxy[:, 0], a.class_id, -a.confidence))
        kb = np.lexsort((b.xyxy[:, 0], b.class_id, -b.confidence))
        np.testing.assert_array_equal(a.class_id[ka], b.class_id[kb])
        np.testing.assert_allclose(b.xyxy[kb], a.xyxy[ka], atol=1e-2)
        np.testing.assert_allclose(b.confidence[kb], a.confidence[ka], atol=1e-4)
    with pytest.raises(InvalidOptionError, match="engine must be one of"):
        visionkit.load(str(tmp_path / "t.onnx"), engine="tensorrt", registry=_registry())


@pytest.mark.skipif(importlib.util.find_spec("visionkit_torchvision") is None, reason="visionkit-torchvision")
def test_torchvision_classifier_through_the_ir(tmp_path: Path) -> None:
    """A non-YOLO kind through the same seam: torchvision's preset transforms in numpy, logits in OpenVINO."""
    import torch
    import visionkit_onnx
    import visionkit_openvino
    import visionkit_torchvision
    from visionkit_openvino._export import export
    from visionkit_openvino._runtime import wrap

    reg = visionkit.Registry(
        entry_points=[],
        plugins=[visionkit_torchvision, visionkit_onnx, visionkit_openvino],
        use_environment=False,
    )
    opts = {"arch": "resnet18", "crop_size": 64, "resize_size": 72, "top_k": 3}
    torch.manual_seed(0)
    be = visionkit.load("tv-classifier", weights=None, registry=reg, **opts)
    with torch.no_grad():  # a random head ties every class; jitter it so the top-k order means something
        be.model.fc.weight.add_(
            torch.randn(be.model.fc.weight.shape, generator=torch.Generator().manual_seed(1))
        )
    report = export(be, precision="fp32", output=tmp_path / "cls.xml", cache_dir=tmp_path / "c", threads=2)
    assert report["deploy"]["artifact"] is True
    sdk = wrap(be, precision="fp32", cache_dir=tmp_path / "c", threads=2)
    dep = visionkit.load(str(tmp_path / "cls.xml"), registry=reg)
    assert dep.runtime["kind"] == "image-classify" and dep.runtime["engine"] == "openvino"
    rng = np.random.default_rng(2)
    for shape in SHAPES:
        img = rng.integers(0, 255, shape, np.uint8)
        a, b = sdk.classify(img), dep.classify(img)
        np.testing.assert_array_equal(a.class_id, b.class_id)
        # as the ONNX deploy: torch's antialiased resize reproduced in numpy to one level of 255
        np.testing.assert_allclose(a.confidence, b.confidence, atol=5e-4)
