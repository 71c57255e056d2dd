"""Tiny random-init text-prompted detectors for ``weights=None``: offline, tokenizers built in memory.

The Hub is not needed for anything: the tokenizers are the real classes (``CLIPTokenizer``,
``BertTokenizer``) over a small vocabulary written here, one that still encodes any text: CLIP's
byte-level BPE with every byte as a token (no merges), BERT's WordPiece with every letter, digit and
punctuation mark. The models keep their real architectures with a few small layers, so the processors'
own tokenisation, pre- and post-processing run exactly as with real checkpoints.
"""

from __future__ import annotations

import string
from typing import Any

__all__ = ["OPEN_VOCAB_KINDS", "bert_tokenizer", "clip_tokenizer", "tiny_open_vocab"]

#: Backend kinds this module builds.
OPEN_VOCAB_KINDS = ("owlv2", "owlvit", "grounding-dino", "mm-grounding-dino", "omdet-turbo")


def clip_tokenizer(max_length: int = 16) -> Any:
    """A ``CLIPTokenizer`` whose vocabulary is the 256 byte-level symbols (alone and word-final), no merges.

    Special tokens come last so no real token has id 0: OWL models read a query whose first id is 0
    as padding.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({f"{s}</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    # OWL's tokenizers pad with "!" (id 0 here too), like google/owlv2-base-patch16-ensemble.
    return CLIPTokenizer(vocab=vocab, merges=[], pad_token="!", model_max_length=max_length)


def bert_tokenizer() -> Any:
    """A lower-casing ``BertTokenizer`` over single characters, with bert-base-uncased's special ids.

    Grounding DINO hard-codes the ids of ``[CLS]`` (101), ``[SEP]`` (102), ``.`` (1012) and ``?`` (1029) to
    split its prompt into phrases, so those ids (and ``[PAD]`` = 0) are kept; the rest is filler.
    """
    from transformers import BertTokenizer

    fixed = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}
    chars = [c for c in string.ascii_lowercase + string.digits + string.punctuation if c not in ".?"]
    chars += [f"##{c}" for c in string.ascii_lowercase + string.digits]
    free = (i for i in range(1, 1030) if i not in fixed)
    vocab = {t: i for i, t in fixed.items()}
    vocab.update({c: next(free) for c in chars})
    vocab.update({f"[unused{i}]": i for i in free})
    return BertTokenizer(vocab=dict(sorted(vocab.items(), key=lambda kv: kv[1])))


def _resnet(stages: list[str]) -> Any:
    import transformers as tf

    config_cls: Any = tf.ResNetConfig  # out_features comes from the backbone mixin, which stubs miss
    return config_cls(
        embedding_size=8,
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=stages,
    )


def _owl(overrides: dict[str, Any], v2: bool) -> tuple[Any, Any, Any]:
    import transformers as tf

    tok = clip_tokenizer()
    text = {
        "vocab_size": len(tok),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": tok.model_max_length,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    vision = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    kw: dict[str, Any] = {"text_config": text, "vision_config": vision, "projection_dim": 16, **overrides}
    size = {"height": 32, "width": 32}
    if v2:
        processor = tf.Owlv2Processor(image_processor=tf.Owlv2ImageProcessor(size=size), tokenizer=tok)
        return tf.Owlv2Config(**kw), tf.Owlv2ForObjectDetection, processor
    image = tf.OwlViTImageProcessor(size=size, crop_size=size)
    return (
        tf.OwlViTConfig(**kw),
        tf.OwlViTForObjectDetection,
        tf.OwlViTProcessor(image_processor=image, tokenizer=tok),
    )


def _grounding_dino(overrides: dict[str, Any], mm: bool) -> tuple[Any, Any, Any]:
    import transformers as tf

    tok = bert_tokenizer()
    kw: dict[str, Any] = {
        "backbone_config": _resnet(["stage2", "stage3", "stage4"]),
        "use_timm_backbone": False,
        "text_config": {
            "model_type": "bert",
            "vocab_size": len(tok),
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "max_position_embeddings": 128,
        },
        "num_queries": 12,
        "encoder_layers": 1,
        "decoder_layers": 2,  # one layer breaks the tied box heads' key pattern in transformers
        "encoder_ffn_dim": 32,
        "decoder_ffn_dim": 32,
        "d_model": 32,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_n_points": 2,
        "decoder_n_points": 2,
        "max_text_len": 128,
        **overrides,
    }
    config: Any
    model_cls: Any
    if mm:
        config, model_cls = tf.MMGroundingDinoConfig(**kw), tf.MMGroundingDinoForObjectDetection
    else:
        config, model_cls = tf.GroundingDinoConfig(**kw), tf.GroundingDinoForObjectDetection
    image = tf.GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    return config, model_cls, tf.GroundingDinoProcessor(image_processor=image, tokenizer=tok)


def _omdet_turbo(overrides: dict[str, Any]) -> tuple[Any, Any, Any]:
    import transformers as tf

    tok = clip_tokenizer(77)  # OmDet-Turbo's processor pads and truncates to 77 tokens
    kw: dict[str, Any] = {
        "backbone_config": {
            "model_type": "swin",
            "image_size": 64,
            "patch_size": 4,
            "embed_dim": 8,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 1, 1],
            "window_size": 2,
            "out_indices": [2, 3, 4],
        },
        # transformers' own Swin (no timm download); it returns channels-first maps, so the layer norms
        # written for timm's channels-last ones are left out
        "use_timm_backbone": False,
        "apply_layernorm_after_vision_backbone": False,
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        "image_size": 64,
        "text_projection_in_dim": 32,
        "text_projection_out_dim": 32,
        "class_embed_dim": 32,  # must differ from decoder_hidden_dim (transformers only then builds task_project)
        "task_encoder_hidden_dim": 32,
        "num_queries": 12,
        "encoder_hidden_dim": 16,
        "vision_features_channels": [16, 16, 16],
        "encoder_in_channels": [16, 32, 64],
        "encoder_attention_heads": 2,
        "encoder_dim_feedforward": 32,
        "decoder_hidden_dim": 16,
        "decoder_num_heads": 2,
        "decoder_num_layers": 1,
        "decoder_dim_feedforward": 32,
        "decoder_num_points": 2,
        **overrides,
    }
    image = tf.DetrImageProcessor(size={"height": 64, "width": 64}, do_pad=False)
    processor = tf.OmDetTurboProcessor(image_processor=image, tokenizer=tok)
    return tf.OmDetTurboConfig(**kw), tf.OmDetTurboForObjectDetection, processor


def tiny_open_vocab(kind: str, overrides: dict[str, Any]) -> tuple[Any, Any, Any]:
    """``(config, model class, processor)`` of the tiny random ``kind`` (see :data:`OPEN_VOCAB_KINDS`)."""
    if kind in ("owlv2", "owlvit"):
        return _owl(overrides, v2=kind == "owlv2")
    if kind in ("grounding-dino", "mm-grounding-dino"):
        return _grounding_dino(overrides, mm=kind == "mm-grounding-dino")
    if kind == "omdet-turbo":
        return _omdet_turbo(overrides)
    raise KeyError(kind)
