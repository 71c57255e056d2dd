"""export_spec(): the network a runtime plugin traces reproduces ``forward`` and the backend's results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionkit.export import ExportSpec, export_spec_of

from .conftest import load


@pytest.mark.parametrize("name", ["detr", "rtdetr", "segformer", "detr-panoptic", "vit"])
def test_export_spec_matches_forward(name: str, two_images: list[np.ndarray]) -> None:
    torch.manual_seed(0)
    backend = load(name, weights=None)
    spec = export_spec_of(backend)
    assert isinstance(spec, ExportSpec) and spec.dynamic_quantization
    assert spec.input_names[0] == "pixel_values" and spec.output_names == list(backend.output_keys)
    with torch.no_grad():
        traced_out = spec.module(*spec.example_inputs)
    assert isinstance(traced_out, tuple) and len(traced_out) == len(spec.output_names)
    for a, b in zip(traced_out, backend.forward(spec.example_inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    calib = spec.calibration_inputs(two_images[:1])
    assert len(calib) == len(spec.example_inputs)
    assert spec.key == export_spec_of(backend).key and spec.key.startswith(name)


def test_export_key_changes_with_weights_and_size() -> None:
    torch.manual_seed(0)
    a = load("detr", weights=None)
    torch.manual_seed(1)
    b = load("detr", weights=None)
    assert export_spec_of(a).key != export_spec_of(b).key
    torch.manual_seed(0)
    c = load("rtdetr", weights=None)
    torch.manual_seed(0)
    d = load("rtdetr", weights=None, image_size=64)
    assert export_spec_of(c).key != export_spec_of(d).key


def test_postprocess_accepts_runtime_outputs(two_images: list[np.ndarray]) -> None:
    """A runtime hands back plain tensors in output order; results must equal the eager ones."""
    torch.manual_seed(0)
    backend = load("detr", weights=None, threshold=0.0)
    batch = backend.preprocess(two_images, backend.options)
    raw = [torch.from_numpy(t.numpy().copy()) for t in backend.forward(batch.inputs)]
    from visionkit import Task

    assert backend.postprocess(raw, batch, Task.DETECT) == backend.detect(two_images)
