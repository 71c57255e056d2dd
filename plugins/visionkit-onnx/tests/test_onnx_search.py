"""Accuracy-aware static INT8 on ONNX Runtime (issue 19 item 2): with ``max_drop`` the build keeps the
nodes with the largest quantization error float, in growing steps, until the accuracy gate holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import visionkit_onnx._build as build_mod
from onnx import TensorProto, helper, numpy_helper
from visionkit_onnx._export import export
from visionkit_onnx._search import AccuracyGateError, rank_nodes, step_sizes, unround_inputs

import visionkit
from visionkit import InvalidOptionError

#: Four gate images keep each step's scoring cheap; the tiny detector's plain INT8 model fails 0.5 there.
GATE = {"val_images": 4, "max_drop": 0.5}


def _int8(registry: visionkit.Registry, cache: Path, calib: Path, **kw: Any) -> Any:
    return visionkit.load(
        "tiny-det",
        weights=None,
        registry=registry,
        precision="int8",
        runtime_options={"cache_dir": cache, "calib": calib, **kw},
    )


def test_step_sizes_double_up_to_the_candidates() -> None:
    assert step_sizes(20, 6) == [1, 2, 4, 8, 16, 20]
    assert step_sizes(5, 6) == [1, 2, 4, 5]
    assert step_sizes(100, 3) == [1, 2, 4]
    assert step_sizes(0, 6) == [] and step_sizes(9, 0) == []


def test_search_keeps_the_worst_nodes_float_until_the_gate_holds_and_the_cache_remembers(
    registry: visionkit.Registry,
    cache: Path,
    calib_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    be = _int8(registry, cache, calib_dir, **GATE)
    search = be.runtime["search"]
    steps = search["steps"]
    # the plain model (step 0) loses more than the budget; the search stops at the first step that holds
    assert steps[0]["float_nodes"] == 0 and steps[0]["drop"] > GATE["max_drop"] and not steps[0]["passed"]
    assert len(steps) >= 2 and steps[-1]["passed"] and not any(s["passed"] for s in steps[:-1])
    assert [s["float_nodes"] for s in steps] == [0, *step_sizes(search["ranked_nodes"], len(steps) - 1)]
    for s in steps:
        assert isinstance(s["candidate"], float) and s["latency_ms"] > 0
        assert s["drop"] == pytest.approx(search["reference"] - s["candidate"], abs=1e-2)
    # the nodes kept float are the head of the ranking, worst quantization error first
    errors = [r["error"] for r in search["ranking"]]
    assert errors == sorted(errors, reverse=True) and errors[0] > 0
    kept = search["kept_float"]
    assert kept == [r["node"] for r in search["ranking"][: len(kept)]]
    assert [n for s in steps for n in s["added"]] == kept
    gate = be.runtime["gate"]
    assert gate["passed"] and gate["drop"] == steps[-1]["drop"] <= GATE["max_drop"]
    model = onnx.load(be.runtime["model_path"])
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    for node in (n for n in model.graph.node if n.name in kept):
        # float means float: no quantized weight, no rounded activation read
        read = [producers[i].op_type for i in node.input if i in producers]
        assert "DequantizeLinear" not in read, f"{node.name} reads a DequantizeLinear output"
        if node.op_type == "Conv":
            assert node.input[1] in inits, f"{node.name}'s weights are not a float initializer"

    # a cache hit reports the same search without running it (nor the gate)
    def no_search(*a: Any, **k: Any) -> Any:
        raise AssertionError("searched again")

    monkeypatch.setattr(build_mod, "search_float_nodes", no_search)
    again = _int8(registry, cache, calib_dir, **GATE)
    assert again.runtime["cache_hit"] and again.runtime["search"] == search
    assert again.runtime["gate"]["drop"] == gate["drop"]
    report = export(
        visionkit.load("tiny-det", weights=None, registry=registry),
        precision="int8",
        output=tmp_path / "tiny.onnx",
        calib=calib_dir,
        cache_dir=cache,
        **GATE,
    )
    assert report["cache_hit"] and report["search"] == search
    assert set(kept) <= set(report["float_nodes"])
    # without max_drop: the plain recipe, no search; another budget is another cache entry (it searches)
    assert _int8(registry, cache, calib_dir).runtime["search"] is None
    with pytest.raises(AssertionError, match="searched again"):
        _int8(registry, cache, calib_dir, **{**GATE, "max_drop": 0.25})


def test_a_budget_no_step_holds_raises_naming_every_step(
    registry: visionkit.Registry, cache: Path, calib_dir: Path
) -> None:
    # the whole head tail quantized: one scale for pixel boxes and 0-1 scores; two steps cannot repair it
    with pytest.raises(AccuracyGateError) as info:
        _int8(
            registry,
            cache,
            calib_dir,
            keep_sensitive=False,
            accuracy_control_iterations=2,
            **GATE,
        )
    msg = str(info.value)
    assert "more than max_drop=0.5: fp32 scores" in msg and "in 3 steps" in msg
    for step in ("step 0 (0 float): drop", "step 1 (1 float): drop", "step 2 (2 float): drop"):
        assert step in msg
    assert "accuracy_control_iterations" in msg
    report = info.value.search  # the same steps, structured
    assert report is not None and [s["float_nodes"] for s in report["steps"]] == [0, 1, 2]
    assert not any(s["passed"] for s in report["steps"]) and len(report["ranking"]) >= 2
    assert isinstance(info.value, InvalidOptionError)
    assert not list(cache.glob("*.onnx")), "a model failing the gate must not be cached"
    with pytest.raises(InvalidOptionError, match="accuracy_control_iterations"):
        _int8(registry, cache, calib_dir, accuracy_control_iterations=-1, **GATE)


def _conv(name: str, x: str, y: str, w: np.ndarray, b: np.ndarray) -> tuple[Any, list[Any]]:
    pad = w.shape[-1] // 2
    node = helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [y], name=name, pads=[pad] * 4)
    return node, [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]


def test_rank_nodes_puts_a_damaged_conv_first(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32)
    w1[0] = 0  # conv1's channel 0 is silent after its ReLU ...
    b1 = np.full(8, 0.1, np.float32)
    b1[0] = -1.0
    w2 = rng.normal(0, 0.5, (8, 8, 1, 1)).astype(np.float32)
    # ... and conv2 reads it with a huge weight: harmless in float, but every output channel's int8
    # scale becomes 1000/127, so all its real weights round to zero
    w2[:, 0] = 1000.0
    w3 = rng.normal(0, 0.5, (8, 8, 1, 1)).astype(np.float32)
    nodes, inits = [], []
    for name, x, y, w, b in (
        ("conv1", "x", "c1", w1, b1),
        ("conv2", "r1", "c2", w2, np.zeros(8, np.float32)),
        ("conv3", "r2", "y", w3, np.zeros(8, np.float32)),
    ):
        node, params = _conv(name, x, y, w, b)
        nodes.append(node)
        inits += params
    nodes.insert(1, helper.make_node("Relu", ["c1"], ["r1"], name="relu1"))
    nodes.insert(3, helper.make_node("Relu", ["c2"], ["r2"], name="relu2"))
    graph = helper.make_graph(
        nodes,
        "damaged",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    onnx.save(model, str(fp32))
    feeds = [{"x": rng.uniform(0, 1, (1, 4, 8, 8)).astype(np.float32)} for _ in range(4)]

    class Reader:
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(
        str(fp32),
        str(int8),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    ranking = rank_nodes(fp32, int8, feeds, work=tmp_path)
    names = [r["node"] for r in ranking]
    assert names[0] == "conv2", ranking
    assert {"conv1", "conv3"} <= set(names)
    assert ranking[0]["error"] > 100 * max(r["error"] for r in ranking[1:]), ranking
    assert "conv2" not in [r["node"] for r in rank_nodes(fp32, int8, feeds, skip={"conv2"}, work=tmp_path)]

    # keeping it float (excluded, and reading its input before rounding) repairs the output
    import onnxruntime as ort

    def run(path: Path) -> np.ndarray:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.concatenate([sess.run(None, f)[0] for f in feeds])

    fixed = tmp_path / "m.fixed.onnx"
    quantize_static(str(fp32), str(fixed), Reader(), nodes_to_exclude=["conv2"], per_channel=True)
    assert unround_inputs(fixed, ["conv2"], fp32) == 1
    graph = onnx.load(str(fixed)).graph
    conv2 = next(n for n in graph.node if n.name == "conv2")
    # the quantizer folded relu1 into r1's uint8 range (r1 is conv1's raw output): it is put back
    relu = next(n for n in graph.node if n.output[0] == conv2.input[0])
    assert relu.op_type == "Relu" and relu.input[0] == "r1"
    ref = run(fp32)
    err = {p.name: float(np.abs(run(p) - ref).max() / np.abs(ref).max()) for p in (int8, fixed)}
    assert err[fixed.name] < 0.05 < err[int8.name], err
