"""Tiny random-init models for ``weights=None``: offline, no timm, no pretrained backbone, < 0.5 M parameters.

They keep the real architectures (a ResNet backbone built by transformers itself, never timm) and the
label layouts of the default checkpoints where those are known offline (COCO-91 for DETR, COCO-80 for
RT-DETR), so pre/post-processing and label handling are exercised exactly as with real weights. The
paired image processors use small sizes to keep CPU tests fast; the ``*_size`` options override them.
"""

from __future__ import annotations

from typing import Any

from visionkit import InvalidOptionError
from visionkit_transformers._labels import coco80_id2label, coco91_id2label

__all__ = ["tiny_model"]


def _resnet(config_cls: Any, stages: list[str]) -> Any:
    return config_cls(
        embedding_size=8,
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=stages,
    )


def _detr(overrides: dict[str, Any], segmentation: bool) -> tuple[Any, Any, Any]:
    import transformers as tf

    kw: dict[str, Any] = {
        "use_timm_backbone": False,  # transformers' own ResNet: no timm import, no weight download
        "backbone_config": _resnet(tf.ResNetConfig, ["stage1", "stage2", "stage3", "stage4"]),
        "d_model": 64,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "encoder_attention_heads": 8,  # the mask head needs d_model + heads divisible by 8
        "decoder_attention_heads": 8,
        "num_queries": 12,
    }
    if segmentation:
        kw["id2label"] = {i: f"class_{i}" for i in range(8)}
    else:
        kw["id2label"] = coco91_id2label()
    kw.update(overrides)
    config = tf.DetrConfig(**kw)
    model_cls = tf.DetrForSegmentation if segmentation else tf.DetrForObjectDetection
    processor = tf.DetrImageProcessor(size={"shortest_edge": 96, "longest_edge": 160})
    return config, model_cls, processor


def _rtdetr(overrides: dict[str, Any]) -> tuple[Any, Any, Any]:
    import transformers as tf

    kw: dict[str, Any] = {
        "backbone_config": _resnet(tf.RTDetrResNetConfig, ["stage2", "stage3", "stage4"]),
        "encoder_in_channels": [16, 32, 64],
        "encoder_hidden_dim": 32,
        "encoder_ffn_dim": 32,
        "encoder_attention_heads": 2,
        "d_model": 32,
        "decoder_in_channels": [32, 32, 32],
        "decoder_ffn_dim": 32,
        "decoder_layers": 1,
        "decoder_attention_heads": 2,
        "decoder_n_points": 2,
        "num_queries": 12,
        "num_denoising": 0,
        "id2label": coco80_id2label(),
    }
    kw.update(overrides)
    config = tf.RTDetrConfig(**kw)
    return config, tf.RTDetrForObjectDetection, tf.RTDetrImageProcessor(size={"height": 96, "width": 96})


def _segformer(overrides: dict[str, Any]) -> tuple[Any, Any, Any]:
    import transformers as tf

    kw: dict[str, Any] = {
        "num_encoder_blocks": 4,
        "depths": [1, 1, 1, 1],
        "hidden_sizes": [8, 16, 32, 64],
        "num_attention_heads": [1, 1, 2, 2],
        "decoder_hidden_size": 16,
        "id2label": {i: f"class_{i}" for i in range(6)},
    }
    kw.update(overrides)
    processor = tf.SegformerImageProcessor(size={"height": 64, "width": 64})
    return tf.SegformerConfig(**kw), tf.SegformerForSemanticSegmentation, processor


def _vit(overrides: dict[str, Any]) -> tuple[Any, Any, Any]:
    import transformers as tf

    kw: dict[str, Any] = {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "id2label": {i: f"class_{i}" for i in range(10)},
    }
    kw.update(overrides)
    config = tf.ViTConfig(**kw)
    size: Any = config.image_size
    return config, tf.ViTForImageClassification, tf.ViTImageProcessor(size={"height": size, "width": size})


def tiny_model(kind: str, overrides: dict[str, Any] | None) -> tuple[Any, Any]:
    """``(model, processor)`` for backend ``kind`` with random weights (seed with ``torch.manual_seed``)."""
    overrides = dict(overrides or {})
    if "id2label" in overrides:  # JSON-style string keys are fine too
        overrides["id2label"] = {int(k): str(v) for k, v in overrides["id2label"].items()}
    if "num_labels" in overrides and "id2label" not in overrides:
        overrides["id2label"] = {i: f"class_{i}" for i in range(int(overrides.pop("num_labels")))}
    builders = {
        "detr": lambda: _detr(overrides, segmentation=False),
        "detr-panoptic": lambda: _detr(overrides, segmentation=True),
        "rtdetr": lambda: _rtdetr(overrides),
        "segformer": lambda: _segformer(overrides),
        "vit": lambda: _vit(overrides),
    }
    if kind not in builders:  # text-prompted detectors (OWL, Grounding DINO ...) bring their tokenizers
        from visionkit_transformers._tiny_openvocab import tiny_open_vocab

        builders[kind] = lambda: tiny_open_vocab(kind, overrides)
    try:
        config, model_cls, processor = builders[kind]()
        model = model_cls(config)
    except (TypeError, ValueError) as exc:  # strict configs reject unknown/invalid keys
        raise InvalidOptionError(
            f"Invalid config override {overrides!r} for the tiny random {kind!r} model: {exc}"
        ) from exc
    return model, processor
