"""The onnxruntime runtime on tiny exportable backends: parity, INT8, graph walk, cache, gate, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import visionkit_onnx._build as build_mod
from visionkit_onnx._export import export
from visionkit_onnx._graph import sensitive_nodes
from visionkit_onnx._runtime import AccuracyGateError, wrap

import visionkit
from visionkit import InvalidOptionError
from visionkit.export import ExportNotSupportedError


def _load(registry: visionkit.Registry, cache_dir: Path, name: str = "tiny-det", **kw: Any) -> Any:
    precision = kw.pop("precision", "fp32")
    runtime = kw.pop("runtime", None)
    return visionkit.load(
        name,
        weights=None,
        registry=registry,
        precision=precision,
        runtime=runtime,
        runtime_options={"cache_dir": cache_dir, **kw},
    )


@pytest.fixture
def export_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts real ONNX exports (a cache hit makes none)."""
    calls: list[str] = []
    real = build_mod.export_onnx

    def counting(spec: Any, path: Path, name: str) -> None:
        calls.append(name)
        real(spec, path, name)

    monkeypatch.setattr(build_mod, "export_onnx", counting)
    return calls


def test_runtime_is_registered_by_the_hook(registry: visionkit.Registry) -> None:
    rt = registry.runtimes["onnxruntime"]
    assert rt.precisions == ("fp32", "int8")
    assert rt.exporter == "visionkit_onnx._export:export"
    assert rt.install == "pip install visionkit-onnx"


def test_fp32_onnx_matches_torch(registry: visionkit.Registry, cache: Path, images: list[np.ndarray]) -> None:
    torch_be = _load(registry, cache)
    ort_be = _load(registry, cache, runtime="onnxruntime")
    assert ort_be.runtime["precision"] == "fp32" and ort_be.runtime["providers"] == ["CPUExecutionProvider"]
    x = torch_be.preprocess(images, torch_be.options).inputs  # a batch of 6 through a batch-1 graph
    ref, out = torch_be.forward(x), ort_be.forward(x)
    assert isinstance(out, torch.Tensor) and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    for a, b in zip(torch_be.detect(images), ort_be.detect(images), strict=True):
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a.class_id, b.class_id)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-2)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)


def test_int8_is_close_to_fp32_and_keeps_the_head_tail_float(
    registry: visionkit.Registry, cache: Path, images: list[np.ndarray], calib_dir: Path
) -> None:
    fp32 = _load(registry, cache)
    int8 = _load(registry, cache, precision="int8", calib=calib_dir)
    info = int8.runtime
    assert (info["precision"], info["quantization"], int8.precision) == ("int8", "static", "int8")
    assert info["calibration"]["source"] == str(calib_dir) and info["calibration"]["images"] == 8
    x = fp32.preprocess(images, fp32.options).inputs
    ref, out = fp32.forward(x), int8.forward(x)
    assert (out[:, 4:] - ref[:, 4:]).abs().max() < 0.01  # scores
    assert (out[:, :4] - ref[:, :4]).abs().max() < 0.5  # boxes, pixels of a 64-pixel input
    model = onnx.load(info["model_path"])
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # U8 activations, S8 per-channel weights by default
    q_out = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    zp = {i.name: i for i in model.graph.initializer}
    types = {
        onnx.helper.tensor_dtype_to_np_dtype(zp[n.input[2]].data_type) for n in q_out if n.input[2] in zp
    }
    assert np.dtype(np.uint8) in types


def test_quantizing_the_head_tail_destroys_scores(
    registry: visionkit.Registry, cache: Path, images: list[np.ndarray], calib_dir: Path
) -> None:
    fp32 = _load(registry, cache)
    x = fp32.preprocess(images, fp32.options).inputs
    ref = fp32.forward(x)
    err = {}
    for keep in (True, False):
        out = _load(registry, cache, precision="int8", calib=calib_dir, keep_sensitive=keep).forward(x)
        err[keep] = float((out[:, 4:] - ref[:, 4:]).abs().max())
    # one scale for pixel boxes (0..64) and 0-1 scores: a score step of 64/255 ~ 0.25
    assert err[False] > 0.05 > 10 * err[True]


def test_sensitive_nodes_found_by_walking_the_graph(
    registry: visionkit.Registry, tmp_path: Path, tiny: Any
) -> None:
    be = tiny.TinyDetector()
    spec = be.export_spec()
    path = tmp_path / "m.onnx"
    build_mod.export_onnx(spec, path, be.name)
    model = onnx.load(str(path))
    names = sensitive_nodes(model, ["output0"])
    by_name = {n.name: n for n in model.graph.node}
    ops = sorted(by_name[n].op_type for n in names)
    # the tail after the branches' last convs: concat/split, DFL softmax + its fixed 1x1 conv, decode, sigmoid
    assert {"Concat", "Split", "Softmax", "Sigmoid", "Sub", "Add", "Mul"} <= set(ops)
    convs = [n for n in names if by_name[n].op_type == "Conv"]
    assert convs == ["/dfl/Conv"]
    producers = {o: n for n in model.graph.node for o in n.output}
    final = producers["output0"]
    assert final.name in names
    with pytest.raises(KeyError, match="not outputs of the graph"):
        sensitive_nodes(model, ["nope"])


def test_second_load_hits_the_cache(
    registry: visionkit.Registry, cache: Path, calib_dir: Path, export_calls: list[str]
) -> None:
    first = _load(registry, cache, precision="int8", calib=calib_dir)
    assert export_calls == ["tiny-det"] and first.runtime["cache_hit"] is False
    second = _load(registry, cache, precision="int8", calib=calib_dir)
    assert export_calls == ["tiny-det"], "the second load exported again"
    assert second.runtime["cache_hit"] is True
    assert second.runtime["model_path"] == first.runtime["model_path"]
    # anything that shapes the model makes a new entry: precision, calibration images, quantization options
    _load(registry, cache, precision="int8", calib=calib_dir, per_channel=False)
    _load(registry, cache, runtime="onnxruntime")
    assert len(export_calls) == 3
    assert len(list(cache.glob("*.onnx"))) == 3 and not list(cache.glob("vk-onnx-*"))


def test_cache_key_follows_the_weights(registry: visionkit.Registry, cache: Path, tiny: Any) -> None:
    a = wrap(tiny.TinyDetector(weights=1), "fp32", cache_dir=cache)
    b = wrap(tiny.TinyDetector(weights=2), "fp32", cache_dir=cache)
    assert a.runtime["model_path"] != b.runtime["model_path"]


@pytest.mark.parametrize("damage", ["model", "meta", "stale"])
def test_corrupt_or_stale_cache_is_rebuilt(
    registry: visionkit.Registry, cache: Path, images: list[np.ndarray], export_calls: list[str], damage: str
) -> None:
    first = _load(registry, cache, runtime="onnxruntime")
    model_path = Path(first.runtime["model_path"])
    meta_path = model_path.with_suffix(".json")
    if damage == "model":
        data = bytearray(model_path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model_path.write_bytes(bytes(data))
        expected = "corrupt"
    elif damage == "meta":
        meta_path.write_text("{not json")
        expected = "metadata cannot be read"
    else:
        meta = json.loads(meta_path.read_text())
        meta["material"]["spec_key"] = "something-else"
        meta_path.write_text(json.dumps(meta))
        expected = "stale"
    with pytest.warns(RuntimeWarning, match=expected):
        again = _load(registry, cache, runtime="onnxruntime")
    assert len(export_calls) == 2 and again.runtime["cache_hit"] is False
    ref = _load(registry, cache)
    x = ref.preprocess(images[:1], ref.options).inputs
    torch.testing.assert_close(again.forward(x), ref.forward(x), atol=1e-4, rtol=1e-4)
    assert _load(registry, cache, runtime="onnxruntime").runtime["cache_hit"] is True


def test_cache_can_be_disabled(registry: visionkit.Registry, cache: Path, export_calls: list[str]) -> None:
    be = _load(registry, cache, runtime="onnxruntime", cache=False)
    _load(registry, cache, runtime="onnxruntime", cache=False)
    assert be.runtime["model_path"] is None and len(export_calls) == 2 and not cache.exists()


def test_cache_dir_from_environment(
    registry: visionkit.Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISIONKIT_CACHE", str(tmp_path / "vk"))
    be = visionkit.load("tiny-det", weights=None, registry=registry, runtime="onnxruntime")
    assert Path(be.runtime["model_path"]).parent == tmp_path / "vk" / "onnx"


def test_threads_are_settable_and_reported(registry: visionkit.Registry, cache: Path) -> None:
    be = _load(registry, cache, runtime="onnxruntime", threads=1, inter_op_threads=1)
    assert be.runtime["intra_op_threads"] == 1 and be.runtime["inter_op_threads"] == 1
    assert be.forward.session.get_session_options().intra_op_num_threads == 1
    spin = "session.intra_op.allow_spinning"
    assert be.runtime["spinning"] is True  # one network: ORT's default
    assert be.forward.session.get_session_options().get_session_config_entry(spin) == "1"
    quiet = _load(registry, cache, runtime="onnxruntime", spinning=False)
    assert quiet.runtime["spinning"] is False
    assert quiet.forward.session.get_session_options().get_session_config_entry(spin) == "0"


def test_dynamic_quantization_for_matmul_models(
    registry: visionkit.Registry, cache: Path, images: list[np.ndarray]
) -> None:
    fp32 = _load(registry, cache, name="tiny-cls")
    int8 = _load(registry, cache, name="tiny-cls", precision="int8")
    assert int8.runtime["quantization"] == "dynamic" and int8.runtime["calibration"] is None
    ops = {n.op_type for n in onnx.load(int8.runtime["model_path"]).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    x = fp32.preprocess(images, fp32.options).inputs
    ref, out = fp32.forward(x).softmax(-1), int8.forward(x).softmax(-1)
    assert (ref - out).abs().max() < 0.02
    assert [r.class_id[0] for r in fp32.classify(images)] == [r.class_id[0] for r in int8.classify(images)]
    # the classifier gate scores top-1 agreement
    gated = _load(registry, cache, name="tiny-cls", precision="int8", max_drop=50.0)
    assert gated.runtime["gate"]["metric"] == "top-1" and gated.runtime["gate"]["passed"] is True


def test_accuracy_gate_passes_and_is_remembered(
    registry: visionkit.Registry, cache: Path, calib_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    be = _load(registry, cache, runtime="onnxruntime", max_drop=0.5, val=calib_dir)
    gate = be.runtime["gate"]
    assert gate["metric"] == "mAP50-95" and gate["passed"] is True and gate["images"] == 8
    assert abs(gate["drop"]) <= 0.5 and gate["reference"] > 90
    import visionkit_onnx._runtime as runtime_mod

    monkeypatch.setattr(runtime_mod, "evaluate", lambda *a, **k: pytest.fail("gate re-evaluated"))
    again = _load(registry, cache, runtime="onnxruntime", max_drop=0.5, val=calib_dir)
    assert again.runtime["gate"]["drop"] == gate["drop"]


def test_accuracy_gate_refuses_a_broken_int8_model(
    registry: visionkit.Registry, cache: Path, calib_dir: Path
) -> None:
    with pytest.raises(
        AccuracyGateError, match=r"drops \d+\.\d\d mAP50-95 points, more than max_drop=1\.5: fp32 scores"
    ) as info:
        # accuracy_control_iterations=0: the gate only refuses (the search is tested in test_onnx_search.py)
        _load(
            registry,
            cache,
            precision="int8",
            calib=calib_dir,
            keep_sensitive=False,
            max_drop=1.5,
            accuracy_control_iterations=0,
        )
    assert isinstance(info.value, InvalidOptionError)
    assert "int8 scores" in str(info.value)


def test_accuracy_gate_with_coco_annotations(
    registry: visionkit.Registry, cache: Path, calib_dir: Path, tmp_path: Path
) -> None:
    # real-label mode: both runtimes are scored against the given boxes (here: a few hand-made ones)
    files = sorted(calib_dir.glob("*.png"))
    coco = {
        "images": [
            {"id": i + 1, "file_name": p.name, "width": 128, "height": 96} for i, p in enumerate(files)
        ],
        "annotations": [
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 7,
                "bbox": [10, 10, 40, 30],
                "area": 1200,
                "iscrowd": 0,
            }
            for i in range(len(files))
        ],
        "categories": [{"id": 7, "name": "square"}],
    }
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(coco))
    be = _load(registry, cache, runtime="onnxruntime", max_drop=1.0, val=calib_dir, annotations=ann)
    assert be.runtime["gate"]["against"] == "annotations" and be.runtime["gate"]["passed"]


def test_exporter_writes_the_file_and_reports(
    registry: visionkit.Registry, cache: Path, calib_dir: Path, tmp_path: Path
) -> None:
    backend = visionkit.load("tiny-det", weights=None, registry=registry)
    out = tmp_path / "out" / "tiny-int8.onnx"
    report = export(backend, precision="int8", output=out, calib=calib_dir, cache_dir=cache, max_drop=60.0)
    assert out.exists() and report["output"] == str(out) and report["size_bytes"] == out.stat().st_size
    assert report["quantization"] == "static" and "/dfl/Conv" in report["float_nodes"]
    assert report["gate"]["passed"] is True
    assert backend.precision == "fp32" and "forward" not in vars(backend), (
        "export must not change the backend"
    )
    bad = tmp_path / "bad.onnx"
    with pytest.raises(AccuracyGateError, match="more than max_drop"):
        export(
            backend,
            precision="int8",
            output=bad,
            calib=calib_dir,
            cache_dir=cache,
            keep_sensitive=False,
            max_drop=1.5,
            accuracy_control_iterations=0,  # refuse only, no search
        )
    assert not bad.exists(), "a model failing the gate must not be written"


def test_not_exportable_backend_says_so(registry: visionkit.Registry, cache: Path) -> None:
    with pytest.raises(
        ExportNotSupportedError, match=r"Backend 'fake-detector' cannot be exported .* `export_spec\(\)`"
    ):
        visionkit.load("fake-detector", registry=registry, precision="int8")


def test_unknown_runtime_precision_and_options(
    registry: visionkit.Registry, cache: Path, tiny: Any, tmp_path: Path
) -> None:
    with pytest.raises(
        InvalidOptionError, match=r"Unknown runtime 'tensorrt'; installed runtimes: onnxruntime"
    ):
        visionkit.load("tiny-det", weights=None, registry=registry, runtime="tensorrt")
    with pytest.raises(
        InvalidOptionError, match=r"'onnxruntime' does not offer precision 'fp16'; it offers: fp32, int8"
    ):
        visionkit.load("tiny-det", weights=None, registry=registry, runtime="onnxruntime", precision="fp16")
    with pytest.raises(InvalidOptionError, match=r"'onnxruntime' does not offer precision 'int4'"):
        wrap(tiny.TinyDetector(), "int4")
    with pytest.raises(InvalidOptionError, match=r"Unknown option 'treads' .*Did you mean 'threads'"):
        _load(registry, cache, runtime="onnxruntime", treads=2)
    with pytest.raises(InvalidOptionError, match=r"calib=.*nope.* must be a folder of images"):
        _load(registry, cache, precision="int8", calib=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidOptionError, match=r"holds no images"):
        _load(registry, cache, precision="int8", calib=tmp_path / "empty")
    with pytest.raises(InvalidOptionError, match=r"device='cuda' needs onnxruntime's CUDAExecutionProvider"):
        if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
            pytest.skip("CUDA EP present")
        visionkit.load(
            "tiny-det",
            weights=None,
            registry=registry,
            runtime="onnxruntime",
            device="cuda",
            runtime_options={"cache_dir": cache},
        )


def test_gate_rejects_tasks_it_cannot_score(cache: Path, tiny: Any) -> None:
    be = tiny.TinyDetector()
    type(be)  # a detector; pretend it only segments with prompts
    be.tasks = (visionkit.Task.SEGMENT_PROMPT,)
    with pytest.raises(InvalidOptionError, match="max_drop cannot be checked for backend 'tiny-det'"):
        wrap(be, "fp32", cache_dir=cache, max_drop=1.0)


def test_shape_mismatch_is_a_clear_error(registry: visionkit.Registry, cache: Path) -> None:
    be = _load(registry, cache, runtime="onnxruntime")
    with pytest.raises(
        visionkit.BackendError, match=r"inputs \{'images': \[1, 3, 32, 32\]\} \(the model expects"
    ):
        be.forward(torch.zeros(1, 3, 32, 32))
