"""``precision="bf16"``: autocast over the network, float32 heads, results close to fp32 on the same weights.

Each test loads the same tiny random model twice (same seed), fp32 and bf16, on the same images.
Tolerances (random heads score queries almost equally, so ranks among near-ties may swap):

* detectors (DETR, RT-DETR, D-FINE), query by query: normalised boxes within 0.01 (1 % of the image
  side), class probabilities within 0.03 (D-FINE measured 0.016), the same argmax class for >= 90 % of queries; and at least 4
  of fp32's 5 best detections have a bf16 detection with IoU >= 0.9;
* SegFormer: label maps agree on at least 97 % of pixels; ViT: same top-1, probabilities within 0.01.

The tail checks fail when the float32 heads are removed: plain autocast hands bf16 ``pred_boxes`` and
``logits`` to post-processing (a later ``.float()`` leaves every value on the bf16 grid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

import visionkit
from visionkit import InvalidOptionError, Task

from .conftest import hf_image, load, registry
from .test_detr_family import MODELS, _checkpoint


def _pair(name: str, weights: str | None = None, **options: Any) -> tuple[Any, Any]:
    """The backend in fp32 and in bf16 with the same weights (a tiny random model by default)."""
    out = []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        out.append(load(name, weights=weights, precision=precision, **options))
    return out[0], out[1]


def _on_bf16_grid(x: torch.Tensor) -> bool:
    """Every value exactly representable in bf16 (what a bf16 layer's output is, cast to float32)."""
    x = torch.as_tensor(x).float()
    return bool((x == x.bfloat16().float()).all())


def _run(backend: Any, images: list[np.ndarray], task: Task) -> tuple[Any, list[Any]]:
    """The raw network outputs and the results, from one forward."""
    batch = backend.preprocess(images, backend.options)
    raw = backend.forward(batch.inputs)
    return raw, backend.postprocess(raw, batch, task)


@pytest.fixture
def images() -> list[np.ndarray]:
    return [hf_image(60, 90, 0), hf_image(88, 48, 1)]


def _assert_close_detections(fp32: Any, bf16: Any, images: list[np.ndarray]) -> None:
    ref, expected = _run(fp32, images, Task.DETECT)
    raw, results = _run(bf16, images, Task.DETECT)
    # query by query (the same queries in both): boxes within 1 % of the image, same argmax class for
    # at least 90 % of the queries, class probabilities within 0.02
    logits, boxes = raw[0], raw[1]
    assert float((boxes - ref[1]).abs().max()) <= 0.01
    assert float((logits.argmax(-1) == ref[0].argmax(-1)).float().mean()) >= 0.9
    softmax = bf16.name == "detr"  # DETR: softmax with a no-object class; RT-DETR family: sigmoid
    probs = (lambda x: x.softmax(-1)) if softmax else torch.sigmoid
    assert float((probs(logits) - probs(ref[0])).abs().max()) <= 0.03
    # the results: fp32's best boxes are found again (ranks among near-tied random queries may swap)
    for a, b in zip(expected, results, strict=True):
        assert len(a) >= 5 and len(b) >= 5
        iou = box_iou(torch.tensor(a.xyxy[:5]), torch.tensor(b.xyxy)).max(dim=1).values
        assert int((iou >= 0.9).sum()) >= 4, iou
    # the tail: float32 boxes and logits straight from float32 heads, not bf16 ones cast up
    for tensor in raw:
        assert tensor.dtype == torch.float32 and not _on_bf16_grid(tensor)


def test_bf16_is_offered_where_validated() -> None:
    reg = registry()
    offered = {n for n in ("detr", "rtdetr", "segformer", "vit") if "bf16" in reg.get(n).precisions}  # type: ignore[attr-defined]
    refused = {n for n in ("detr-panoptic", "owlv2", "sam2") if "bf16" in reg.get(n).precisions}  # type: ignore[attr-defined]
    assert offered == {"detr", "rtdetr", "segformer", "vit"} and refused == set()
    from visionkit_transformers._backend import DetrPanopticBackend

    with pytest.raises(InvalidOptionError, match="does not offer precision 'bf16'"):
        DetrPanopticBackend(weights=None, precision="bf16")


def test_detr_bf16_matches_fp32(images: list[np.ndarray]) -> None:
    fp32, bf16 = _pair("detr", threshold=0.0)
    assert (bf16.precision, bf16.runtime, bf16.runtime_name) == ("bf16", None, "torch")
    assert bf16.float32_tail == ["class_labels_classifier", "bbox_predictor"]
    # a decisive class head (random heads tie every class): the same bias in both
    bias = torch.randn(
        fp32.model.class_labels_classifier.bias.shape, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        fp32.model.class_labels_classifier.bias.copy_(bias * 4)
        bf16.model.class_labels_classifier.module.bias.copy_(bias * 4)
    _assert_close_detections(fp32, bf16, images)


def test_rtdetr_bf16_matches_fp32(images: list[np.ndarray]) -> None:
    fp32, bf16 = _pair("rtdetr", threshold=0.0)
    _assert_close_detections(fp32, bf16, images)


@pytest.mark.skipif("d_fine" not in MODELS, reason="this transformers has no D-FINE")
def test_dfine_bf16_matches_fp32(images: list[np.ndarray], tmp_path: Path) -> None:
    path = str(_checkpoint("d_fine", tmp_path))
    fp32, bf16 = _pair("rtdetr", weights=path, threshold=0.0)
    assert "model.decoder.integral" in bf16.float32_tail
    _assert_close_detections(fp32, bf16, images)


def test_architecture_without_a_known_tail_is_refused(tmp_path: Path) -> None:
    if "conditional_detr" not in MODELS:
        pytest.skip("this transformers has no Conditional DETR")
    path = str(_checkpoint("conditional_detr", tmp_path))
    with pytest.raises(InvalidOptionError, match="no known float32 tail"):
        load("rtdetr", weights=path, precision="bf16")


def test_segformer_and_vit_bf16_match_fp32(images: list[np.ndarray]) -> None:
    fp32, bf16 = _pair("segformer")
    raw, results = _run(bf16, images, Task.SEGMENT_SEMANTIC)
    for a, b in zip(fp32.segment_semantic(images), results, strict=True):
        assert (a.label_map == b.label_map).mean() >= 0.97
    assert raw[0].dtype == torch.float32 and not _on_bf16_grid(raw[0])

    fp32, bf16 = _pair("vit")
    raw, results = _run(bf16, images, Task.CLASSIFY)
    for a, b in zip(fp32.classify(images), results, strict=True):
        assert a.class_id[0] == b.class_id[0]
        np.testing.assert_allclose(b.confidence, a.confidence, atol=0.01)
    assert raw[0].dtype == torch.float32 and not _on_bf16_grid(raw[0])


def test_fp16_stays_gpu_only() -> None:
    with pytest.raises(visionkit.VisionKitError, match="fp16"):
        load("detr", weights=None, precision="fp16")


# -- DETR: frozen BatchNorms folded into the convolutions (speed), same detections ----------------------
def test_detr_folds_frozen_batchnorm_and_keeps_its_outputs(tmp_path: Path) -> None:
    import transformers as tf

    torch.manual_seed(0)
    source = load("detr", weights=None, threshold=0.0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained checkpoint has
        for m in source.model.modules():
            if type(m).__name__ == "DetrFrozenBatchNorm2d":
                m.running_mean.normal_(0.0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
    source.model.save_pretrained(tmp_path)  # the original weights: folding leaves state_dict alone
    source.processor.save_pretrained(tmp_path)
    backend = load("detr", weights=str(tmp_path), threshold=0.0)
    folded = [m for m in backend.model.modules() if hasattr(m, "_folded_weight")]
    frozen = [m for m in backend.model.modules() if type(m).__name__ == "DetrFrozenBatchNorm2d"]
    assert len(folded) == len(frozen) == 12  # every one of the tiny ResNet's BatchNorms
    reference = tf.DetrForObjectDetection.from_pretrained(tmp_path).eval()
    assert reference.state_dict().keys() == backend.model.state_dict().keys()
    image = hf_image(60, 90, 0)
    with torch.inference_mode():
        ref = reference(**backend.processor(images=[image], return_tensors="pt"))
    raw, _ = _run(backend, [image], Task.DETECT)
    torch.testing.assert_close(raw[1], ref.pred_boxes, rtol=0, atol=1e-5)
    torch.testing.assert_close(raw[0], ref.logits, rtol=0, atol=1e-4)
