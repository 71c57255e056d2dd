"""YOLO on the backend contract: device rule, typed missing-library error, a side-effect-free export_spec."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import visionkit
from visionkit.testing import make_test_image


def test_missing_onnxruntime_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    from visionkit_yolo._backend import _OnnxNet

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails as if absent
    with pytest.raises(visionkit.BackendUnavailableError, match="needs 'onnxruntime'") as info:
        _OnnxNet(Path("yolov8n.onnx"), torch.device("cpu"), "yolo")
    assert not isinstance(info.value, visionkit.InvalidOptionError)
    assert info.value.missing == ["onnxruntime"] and "visionkit-yolo[onnx]" in str(info.value)


def test_auto_device_follows_the_core_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from visionkit_yolo import _backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert _backend.resolve_torch_device("auto").type == "mps"


def _state(backend: Any) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, (bool, int, float, str, type(None))) else id(v))
        for k, v in vars(backend).items()
    }


def test_export_spec_is_a_query(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for the export spec must not change how the backend letterboxes or runs (it once set
    ``_square_only``, so a torch backend that was merely asked switched to square inputs)."""
    det = visionkit.load("yolo", weights=None)
    image = make_test_image(120, 200)
    before_state = _state(det)
    before = det.preprocess([image], det.options)
    spec = det.export_spec()
    assert spec.stage == "forward" and det.runtime is None and det.runtime_name == "torch"
    assert _state(det) == before_state
    after = det.preprocess([image], det.options)
    assert (
        tuple(after.inputs.shape) == tuple(before.inputs.shape)
        and after.inputs.shape[2] != after.inputs.shape[3]
    )
    np.testing.assert_array_equal(after.inputs.numpy(), before.inputs.numpy())
