"""The newest closed-set DETRs through the ``rtdetr`` (AutoModelForObjectDetection) backend: parity.

Each model is a tiny random config of the real architecture, saved in the official layout
(``save_pretrained`` of model and image processor) and loaded with ``visionkit.load("rtdetr",
weights=dir)``, as a Hub checkpoint would be. visionkit's detections must equal the image processor's
own ``post_process_object_detection`` on the same image (boxes within 1e-4 relative or 1e-3 px, scores
within 1e-6, labels exact; measured: identical). Only the models the installed transformers has run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers as tf

from .conftest import hf_image, load

LABELS = {i: f"class_{i}" for i in range(5)}


def _hgnet() -> dict[str, Any]:
    return {
        "model_type": "hgnet_v2",
        "embedding_size": 8,
        "depths": [1, 1, 1, 1],
        "hidden_sizes": [16, 32, 64, 64],
        "stem_channels": [3, 8, 8],
        "stage_in_channels": [8, 16, 32, 64],
        "stage_mid_channels": [8, 8, 16, 16],
        "stage_out_channels": [16, 32, 64, 64],
        "stage_num_blocks": [1, 1, 1, 1],
        "stage_numb_of_layers": [1, 1, 1, 1],
        "out_features": ["stage2", "stage3", "stage4"],
    }


def _resnet() -> dict[str, Any]:
    return {
        "model_type": "resnet",
        "embedding_size": 8,
        "hidden_sizes": [8, 16, 32, 64],
        "depths": [1, 1, 1, 1],
        "layer_type": "basic",
        "out_features": ["stage2", "stage3", "stage4"],
    }


def _rtdetr_like(**extra: Any) -> dict[str, Any]:
    """The RT-DETR family's hybrid encoder + deformable decoder, small (D-FINE, DEIMv2, RT-DETRv2)."""
    return {
        "encoder_in_channels": [32, 64, 64],
        "encoder_hidden_dim": 32,
        "encoder_ffn_dim": 32,
        "encoder_attention_heads": 2,
        "d_model": 32,
        "decoder_in_channels": [32, 32, 32],
        "decoder_ffn_dim": 32,
        "decoder_layers": 2,
        "decoder_attention_heads": 2,
        "decoder_n_points": 2,
        "num_queries": 12,
        "num_denoising": 0,
        **extra,
    }


def _deformable_like(**extra: Any) -> dict[str, Any]:
    """Deformable/Conditional/DAB-DETR: a ResNet from transformers (not timm), one small layer each."""
    return {
        "use_timm_backbone": False,
        "backbone_config": {**_resnet(), "out_features": ["stage2", "stage3", "stage4"]},
        "d_model": 32,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_ffn_dim": 32,
        "decoder_ffn_dim": 32,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "num_queries": 12,
        **extra,
    }


def _vit(model_type: str, **extra: Any) -> dict[str, Any]:
    """LW-DETR's / RF-DETR's windowed ViT backbones, two small layers."""
    return {
        "model_type": model_type,
        "image_size": 64,
        "patch_size": 16,
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "out_indices": [1, 2],
        "num_windows": 2,
        **extra,
    }


def _lw_like() -> dict[str, Any]:
    return {
        "projector_scale_factors": [1.0],
        "d_model": 32,
        "decoder_ffn_dim": 32,
        "decoder_layers": 1,
        "decoder_self_attention_heads": 2,
        "decoder_cross_attention_heads": 2,
        "decoder_n_points": 2,
        "num_queries": 12,
        "group_detr": 1,
    }


_AVAILABLE = {
    name
    for name, cls in {
        "d_fine": "DFineConfig",
        "deimv2": "Deimv2Config",
        "rt_detr_v2": "RTDetrV2Config",
        "deformable_detr": "DeformableDetrConfig",
        "conditional_detr": "ConditionalDetrConfig",
        "dab_detr": "DabDetrConfig",
        "lw_detr": "LwDetrConfig",
        "rf_detr": "RfDetrConfig",
    }.items()
    if hasattr(tf, cls)
}
FIXED = {"height": 64, "width": 64}
KEEP_ASPECT = {"shortest_edge": 64, "longest_edge": 96}

#: name → (config class, model class, image processor) builders, for those the installed transformers has.
MODELS: dict[str, Callable[[], tuple[Any, Any, Any]]] = {
    "d_fine": lambda: (
        tf.DFineConfig(backbone_config=_hgnet(), **_rtdetr_like(encoder_in_channels=[32, 64, 64])),
        tf.DFineForObjectDetection,
        tf.RTDetrImageProcessor(size=FIXED),
    ),
    "deimv2": lambda: (
        tf.Deimv2Config(backbone_config=_hgnet(), **_rtdetr_like()),
        tf.Deimv2ForObjectDetection,
        tf.RTDetrImageProcessor(size=FIXED),
    ),
    "rt_detr_v2": lambda: (
        tf.RTDetrV2Config(backbone_config={**_resnet(), "model_type": "rt_detr_resnet"}, **_rtdetr_like()),
        tf.RTDetrV2ForObjectDetection,
        tf.RTDetrImageProcessor(size=FIXED),
    ),
    "deformable_detr": lambda: (
        # two decoder layers: with one, transformers' tied box-head key pattern matches nothing
        tf.DeformableDetrConfig(**_deformable_like(encoder_n_points=2, decoder_n_points=2, decoder_layers=2)),
        tf.DeformableDetrForObjectDetection,
        tf.DeformableDetrImageProcessor(size=KEEP_ASPECT),
    ),
    "conditional_detr": lambda: (
        tf.ConditionalDetrConfig(**_deformable_like()),
        tf.ConditionalDetrForObjectDetection,
        tf.ConditionalDetrImageProcessor(size=KEEP_ASPECT),
    ),
    "dab_detr": lambda: (
        tf.DabDetrConfig(**_deformable_like()),
        tf.DabDetrForObjectDetection,
        tf.ConditionalDetrImageProcessor(size=KEEP_ASPECT),
    ),
    "lw_detr": lambda: (
        tf.LwDetrConfig(
            backbone_config=_vit("lw_detr_vit", window_block_indices=[0], num_windows=4), **_lw_like()
        ),
        tf.LwDetrForObjectDetection,
        tf.DeformableDetrImageProcessor(size=FIXED),  # windowed ViT: fixed sizes, as the real checkpoints
    ),
    "rf_detr": lambda: (
        tf.RfDetrConfig(backbone_config=_vit("rf_detr_dinov2", num_register_tokens=0), **_lw_like()),
        tf.RfDetrForObjectDetection,
        tf.RfDetrImageProcessor(size=FIXED),
    ),
}
MODELS = {k: v for k, v in MODELS.items() if k in _AVAILABLE}


def _checkpoint(name: str, root: Path) -> Path:
    config, model_cls, processor = MODELS[name]()
    config.id2label, config.label2id = LABELS, {v: k for k, v in LABELS.items()}
    torch.manual_seed(0)
    path = root / name
    model_cls(config).eval().save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.mark.parametrize("name", list(MODELS))
def test_detr_family_parity(name: str, tmp_path: Path) -> None:
    path = _checkpoint(name, tmp_path)
    backend = load("rtdetr", weights=str(path), threshold=0.0, clip_boxes=False, max_detections=None)
    image = hf_image(60, 90, 0)
    got = backend.detect(image)

    model = tf.AutoModelForObjectDetection.from_pretrained(path).eval()
    proc = tf.AutoImageProcessor.from_pretrained(path)
    assert type(backend.model) is type(model) and type(backend.processor) is type(proc)
    with torch.no_grad():
        outputs = model(**proc(images=[image], return_tensors="pt"))
    ref = proc.post_process_object_detection(outputs, threshold=0.0, target_sizes=[image.shape[:2]])[0]
    order = torch.argsort(-ref["scores"], stable=True)
    assert len(got) == len(order) > 0
    np.testing.assert_allclose(got.xyxy, ref["boxes"][order].numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got.confidence, ref["scores"][order].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.class_id, ref["labels"][order].numpy())
    assert got.class_name == tuple(LABELS[int(i)] for i in got.class_id)
