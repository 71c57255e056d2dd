"""Building SAM / MobileSAM networks: official configs, tiny test configs, and checkpoint loading.

Every network is a ``segment_anything.modeling.Sam`` (SAM's own prompt encoder and mask decoder) with
either SAM's ``ImageEncoderViT`` or, for MobileSAM, the TinyViT encoder shipped in ultralytics
(``ultralytics.models.sam.modules.tiny_encoder.TinyViT``, the same module and parameter layout as the
MobileSAM repository). Checkpoints are plain state dicts in the official layouts; the architecture is
read off the state dict so vit_b / vit_l / vit_h / MobileSAM files (and the tiny test models) load
without being told what they are.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from visionkit import BackendError, InvalidOptionError, UnsafeWeightsError, resolve_weights

__all__ = [
    "OFFICIAL_WEIGHTS",
    "ModelConfig",
    "build_model",
    "config_from_state_dict",
    "load_model",
    "preset",
]

PROMPT_DIM = 256  # fixed by every released SAM / MobileSAM checkpoint
PATCH = 16  # the image embedding is image_size / 16 for both encoders

#: Released checkpoints: file name -> (model type, official download URL).
OFFICIAL_WEIGHTS: dict[str, tuple[str, str]] = {
    "sam_vit_h_4b8939.pth": ("vit_h", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"),
    "sam_vit_l_0b3195.pth": ("vit_l", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth"),
    "sam_vit_b_01ec64.pth": ("vit_b", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"),
    "mobile_sam.pt": ("vit_t", "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"),
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one SAM-family network.

    Attributes:
        model_type: ``vit_b`` / ``vit_l`` / ``vit_h`` (SAM), ``vit_t`` (MobileSAM), ``tiny`` (small
            random test ViT), ``tiny_vit_t`` (small random test TinyViT) or ``custom``.
        encoder: ``"vit"`` (SAM's ImageEncoderViT) or ``"tinyvit"`` (MobileSAM's TinyViT).
        image_size: side of the square encoder input; the image embedding is ``image_size // 16``
            and the low-resolution mask logits are ``image_size // 4``.
        encoder_kwargs: constructor arguments of the encoder (besides ``img_size``).
    """

    model_type: str
    encoder: str
    image_size: int
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid."""
        return self.image_size // PATCH

    @property
    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits (what ``mask_input`` must match)."""
        return 4 * self.embedding_size


def _vit(
    embed_dim: int, depth: int, heads: int, global_idx: tuple[int, ...], window: int = 14
) -> dict[str, Any]:
    return {
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": heads,
        "global_attn_indexes": global_idx,
        "window_size": window,
        "mlp_ratio": 4.0,
    }


def _tinyvit(dims: list[int], depths: list[int], heads: list[int], windows: list[int]) -> dict[str, Any]:
    return {
        "embed_dims": dims,
        "depths": depths,
        "num_heads": heads,
        "window_sizes": windows,
        "mlp_ratio": 4.0,
        "mbconv_expand_ratio": 4.0,
        "num_classes": 1000,
    }


# The official configurations (segment_anything.build_sam, MobileSAM's build_sam_vit_t) plus two tiny
# random-init ones for tests and offline use: same prompt encoder and decoder, a 2-block encoder, and a
# 256-pixel input so a forward pass takes milliseconds.
_PRESETS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "vit_h": ("vit", 1024, _vit(1280, 32, 16, (7, 15, 23, 31))),
    "vit_l": ("vit", 1024, _vit(1024, 24, 16, (5, 11, 17, 23))),
    "vit_b": ("vit", 1024, _vit(768, 12, 12, (2, 5, 8, 11))),
    "vit_t": ("tinyvit", 1024, _tinyvit([64, 128, 160, 320], [2, 2, 6, 2], [2, 4, 5, 10], [7, 7, 14, 7])),
    "tiny": ("vit", 256, _vit(64, 2, 2, (1,), window=8)),
    # TinyViT's last patch merging keeps the resolution only when its output has 320/448/576 channels.
    "tiny_vit_t": ("tinyvit", 256, _tinyvit([32, 64, 96, 320], [1, 1, 1, 1], [1, 2, 3, 5], [7, 7, 14, 7])),
}


def preset(model_type: str, image_size: int | None = None) -> ModelConfig:
    """The named configuration (``vit_b``, ``vit_t``, ``tiny`` ...), optionally at another input size."""
    if model_type not in _PRESETS:
        raise InvalidOptionError(
            f"Unknown model_type {model_type!r}; expected one of: {', '.join(sorted(_PRESETS))}."
        )
    encoder, size, kwargs = _PRESETS[model_type]
    return ModelConfig(model_type, encoder, _check_size(image_size or size), dict(kwargs))


def _check_size(size: int) -> int:
    if size < 64 or size % 64:
        raise InvalidOptionError(f"image_size must be a multiple of 64 and at least 64, but got {size!r}.")
    return size


def build_model(config: ModelConfig) -> Sam:
    """A randomly initialised ``Sam`` for ``config`` (eval mode); seed torch for reproducibility."""
    size = config.image_size
    if config.encoder == "vit":
        kw = config.encoder_kwargs
        encoder: torch.nn.Module = ImageEncoderViT(
            img_size=size,
            patch_size=PATCH,
            embed_dim=kw["embed_dim"],
            depth=kw["depth"],
            num_heads=kw["num_heads"],
            mlp_ratio=kw["mlp_ratio"],
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(kw["global_attn_indexes"]),
            window_size=kw["window_size"],
            out_chans=PROMPT_DIM,
        )
    else:
        # MobileSAM's encoder; ultralytics ships the same module with the same parameter names.
        from ultralytics.models.sam.modules.tiny_encoder import TinyViT

        encoder = TinyViT(
            img_size=size, in_chans=3, drop_rate=0.0, drop_path_rate=0.0, **config.encoder_kwargs
        )
    grid = config.embedding_size
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_DIM,
            image_embedding_size=(grid, grid),
            input_image_size=(size, size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048, num_heads=8),
            transformer_dim=PROMPT_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


# -- reading the architecture off a state dict ----------------------------------------------------
def _indices(sd: dict[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def _vit_config(sd: dict[str, torch.Tensor]) -> ModelConfig:
    p = "image_encoder."
    embed_dim, _, patch, _ = sd[p + "patch_embed.proj.weight"].shape
    if patch != PATCH:
        raise BackendError(f"SAM checkpoint has patch size {patch}; only {PATCH} is supported.")
    grid = int(sd[p + "pos_embed"].shape[1])
    blocks = _indices(sd, r"image_encoder\.blocks\.(\d+)\.")
    if f"{p}blocks.0.attn.rel_pos_h" not in sd:
        raise BackendError(
            "SAM checkpoint has no relative position tables; cannot infer the number of heads."
        )
    head_dim = int(sd[f"{p}blocks.0.attn.rel_pos_h"].shape[1])
    global_idx, window = [], 0
    for i in blocks:
        span = (int(sd[f"{p}blocks.{i}.attn.rel_pos_h"].shape[0]) + 1) // 2
        if span == grid:
            global_idx.append(i)
        else:
            window = span
    kwargs = _vit(int(embed_dim), len(blocks), int(embed_dim) // head_dim, tuple(global_idx), window)
    kwargs["mlp_ratio"] = sd[f"{p}blocks.0.mlp.lin1.weight"].shape[0] / embed_dim
    model_type = "custom"
    for name, (enc, size, kw) in _PRESETS.items():
        if enc == "vit" and size == grid * PATCH and kw == kwargs:
            model_type = name
    return ModelConfig(model_type, "vit", grid * PATCH, kwargs)


def _tinyvit_config(sd: dict[str, torch.Tensor], image_size: int) -> ModelConfig:
    p = "image_encoder."
    layers = _indices(sd, r"image_encoder\.layers\.(\d+)\.")
    depths = [len(_indices(sd, rf"image_encoder\.layers\.{i}\.blocks\.(\d+)\.")) for i in layers]
    dims = [int(sd[f"{p}patch_embed.seq.2.c.weight"].shape[0])]
    heads, windows = [1], [7]  # layer 0 is convolutional: its heads/window are unused
    for i in layers[1:]:
        dims.append(int(sd[f"{p}layers.{i}.blocks.0.mlp.norm.weight"].shape[0]))
        biases = sd[f"{p}layers.{i}.blocks.0.attn.attention_biases"]
        heads.append(int(biases.shape[0]))
        windows.append(round(int(biases.shape[1]) ** 0.5))  # one bias per offset in a w x w window
    kwargs = _tinyvit(dims, depths, heads, windows)
    kwargs["mlp_ratio"] = sd[f"{p}layers.1.blocks.0.mlp.fc1.weight"].shape[0] / dims[1]
    kwargs["mbconv_expand_ratio"] = sd[f"{p}layers.0.blocks.0.conv1.c.weight"].shape[0] / dims[0]
    kwargs["num_classes"] = int(sd[f"{p}head.weight"].shape[0]) if f"{p}head.weight" in sd else 0
    model_type = "custom"
    for name, (enc, _, kw) in _PRESETS.items():
        same = {k: v for k, v in kw.items() if k != "num_heads"} == {
            k: v for k, v in kwargs.items() if k != "num_heads"
        }
        if enc == "tinyvit" and same and kw["num_heads"][1:] == heads[1:]:
            model_type, heads = name, list(kw["num_heads"])
    kwargs["num_heads"] = heads
    return ModelConfig(model_type, "tinyvit", _check_size(image_size), kwargs)


def config_from_state_dict(sd: dict[str, torch.Tensor], image_size: int | None = None) -> ModelConfig:
    """Infer the architecture of a SAM / MobileSAM state dict in the official layout.

    Args:
        sd: the state dict (keys ``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``).
        image_size: input size for TinyViT checkpoints, whose weights do not record it (default 1024);
            ViT checkpoints record it in their position embedding.
    """
    if not any(k.startswith("mask_decoder.") for k in sd) or not any(
        k.startswith("image_encoder.") for k in sd
    ):
        sample = ", ".join(sorted(sd)[:3]) or "(no keys)"
        raise BackendError(
            "The checkpoint does not look like a SAM / MobileSAM state dict: expected keys 'image_encoder.*', "
            f"'prompt_encoder.*' and 'mask_decoder.*', but got keys like {sample}."
        )
    if "image_encoder.patch_embed.proj.weight" in sd:
        cfg = _vit_config(sd)
        if image_size is not None and image_size != cfg.image_size:
            raise InvalidOptionError(
                f"image_size={image_size!r} does not match the checkpoint, whose position embedding is for "
                f"{cfg.image_size}-pixel inputs; leave image_size unset."
            )
        return cfg
    if "image_encoder.patch_embed.seq.0.c.weight" in sd:
        return _tinyvit_config(sd, image_size or 1024)
    raise BackendError("The checkpoint's image encoder is neither SAM's ViT nor MobileSAM's TinyViT.")


# -- weights --------------------------------------------------------------------------------------
def _download(name: str) -> str:
    entry = OFFICIAL_WEIGHTS.get(Path(name).name)
    if entry is None:
        raise FileNotFoundError(f"no official download for {name!r}")
    dest = Path(torch.hub.get_dir()) / "checkpoints" / Path(name).name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(entry[1], os.fspath(dest), progress=False)
    return os.fspath(dest)


def read_state_dict(
    weights: str | os.PathLike[str], *, trust_pickle: bool = False
) -> tuple[dict[str, torch.Tensor], Path]:
    """Resolve ``weights`` (path, VISIONKIT_WEIGHTS, official URL) and read it with ``weights_only=True``.

    Args:
        weights: path or file name.
        trust_pickle: read with ``weights_only=False`` (full unpickling, which can run code) and accept
            a pickled ``nn.Module`` (its ``state_dict()`` is used). Only for files you trust.

    Raises:
        UnsafeWeightsError: the file needs full unpickling and ``trust_pickle`` is False.
        BackendError: the file is corrupt or holds no state dict.
    """
    known = ", ".join(f"{n} ({url})" for n, (_, url) in OFFICIAL_WEIGHTS.items())
    path = resolve_weights(
        weights,
        download=_download,
        download_from="the official SAM / MobileSAM download URL (torch.hub cache)",
        hint=f"Official checkpoints: {known}.",
    )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if trust_pickle or "Unsupported global" not in str(exc):  # corrupt, or not a torch file at all
            raise BackendError(
                f"Cannot read SAM checkpoint {os.fspath(path)!r} as a state dict ({_first_line(exc)})."
            ) from exc
        # weights_only met a class or function it does not allow: unpickling it could run code.
        raise UnsafeWeightsError(
            f"SAM checkpoint {os.fspath(path)!r} is not a plain state dict: loading it would unpickle "
            f"arbitrary objects, which can run code ({_unsafe_global(exc)}). If you trust "
            "the file, load it with trust_pickle=True (CLI: --trust-pickle); better, re-save it as "
            "torch.save(model.state_dict(), path)."
        ) from exc
    except Exception as exc:  # corrupt file, not a torch file, ...
        raise BackendError(
            f"Cannot read SAM checkpoint {os.fspath(path)!r} as a state dict "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})."
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), (dict, torch.nn.Module)):  # wrapper dicts
        obj = obj["model"]
    if trust_pickle and isinstance(obj, torch.nn.Module):  # a whole pickled model, trusted by the user
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise BackendError(
            f"SAM checkpoint {os.fspath(path)!r} holds a {type(obj).__name__}, not a state dict."
        )
    return obj, path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _unsafe_global(exc: BaseException) -> str:
    """The global torch's weights-only unpickler refused, e.g. ``GLOBAL builtins.open``."""
    for line in str(exc).splitlines():
        if "Unsupported global" in line:
            return line.strip().split(" was not")[0].removeprefix("WeightsUnpickler error: ")
    return _first_line(exc)


def load_model(
    weights: str | os.PathLike[str] | None,
    *,
    model_type: str | None,
    image_size: int | None,
    random_default: str,
    trust_pickle: bool = False,
) -> tuple[Sam, ModelConfig, str]:
    """Build the network for ``weights`` (``None``: random init of ``model_type or random_default``).

    Returns:
        ``(model, config, fingerprint)``; the fingerprint changes with the weights (used as export key).
    """
    if weights is None:
        cfg = preset(model_type or random_default, image_size)
        return build_model(cfg), cfg, f"random-{cfg.model_type}-{cfg.image_size}"
    sd, path = read_state_dict(weights, trust_pickle=trust_pickle)
    cfg = config_from_state_dict(sd, image_size)
    if model_type is not None and model_type != cfg.model_type:
        kw = cfg.encoder_kwargs
        shape = (
            f"embed_dim {kw['embed_dim']}, depth {kw['depth']}"
            if cfg.encoder == "vit"
            else f"TinyViT embed_dims {kw['embed_dims']}"
        )
        raise InvalidOptionError(
            f"model_type={model_type!r} does not match the checkpoint {os.fspath(path)!r}, which is a "
            f"{cfg.model_type!r} model ({shape}); pass model_type={cfg.model_type!r} or leave it unset."
        )
    model = build_model(cfg)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise BackendError(
            f"SAM checkpoint {os.fspath(path)!r} does not fit the {cfg.model_type!r} architecture read from it: "
            f"{str(exc).splitlines()[0][:300]}"
        ) from exc
    stat = path.stat()
    return model.eval(), cfg, f"{path.name}-{stat.st_size}-{int(stat.st_mtime)}-{cfg.image_size}"
