"""INT8 builds leave nothing in the working directory, even when onnxruntime's shape inference fails."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from visionkit_onnx._build import _no_debris


def _model() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])],
        [weight],
    )
    return helper.make_model(graph)


def test_a_failed_symbolic_shape_inference_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    keep = tmp_path / "mine.data"
    keep.write_text("the user's")
    with pytest.raises(RuntimeError), _no_debris():
        # what SymbolicShapeInference.infer_shapes does before raising "Incomplete symbolic shape inference"
        onnx.save_model(_model(), "sym_shape_infer_temp.onnx", save_as_external_data=True, size_threshold=0)
        assert len(os.listdir(tmp_path)) == 3  # the dump, its <uuid>.data and the user's file
        raise RuntimeError("Incomplete symbolic shape inference")
    assert os.listdir(tmp_path) == ["mine.data"]


def test_a_dump_that_was_already_there_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sym_shape_infer_temp.onnx").write_bytes(b"someone else's")
    with _no_debris():
        pass
    assert (tmp_path / "sym_shape_infer_temp.onnx").read_bytes() == b"someone else's"
