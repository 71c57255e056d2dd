"""SAM's prompt encoder + mask decoder as one traceable network, shared by torch and ONNX Runtime.

``SamDecoderNet`` reuses the model's own modules and weights and computes what
``PromptEncoder`` + ``MaskDecoder.predict_masks`` compute (the segment-anything ONNX formulation of
the prompts: box corners are points labelled 2 and 3, padding points -1, a ``has_mask_input`` flag
blends the mask embedding), so one module is both the torch ``decoder_forward`` and the graph the
ONNX runtime exports. Outputs equal ``SamPredictor``'s within float rounding (tested to 1e-5).

Why not call ``MaskDecoder`` directly: its transformer receives the image embedding and positional
encoding as ``(b, c, h, w)`` and flattens them to ``(b, h*w, c)`` *views*, so every add and
projection over the 4096 image tokens walks memory transposed (about a fifth of the decoder's time on
CPU), and ``get_dense_pe()`` is recomputed on every call. Here the positional encoding is computed
once and both are handed over in token-contiguous layout; the arithmetic is unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["PAD_LABEL", "SamDecoderNet"]

#: Label of a padding point (SAM pads point-only prompts with one "not a point").
PAD_LABEL = -1.0


class SamDecoderNet(nn.Module):
    """``(image_embeddings, point_coords, point_labels, mask_input, has_mask_input) → (low_res, iou)``.

    Inputs:
        image_embeddings: ``(1, 256, s, s)`` from the image encoder.
        point_coords: ``(b, n, 2)`` float, in the resized encoder input's pixels (``ResizeLongestSide``).
        point_labels: ``(b, n)`` float: 1 foreground, 0 background, 2/3 box corners, -1 padding.
        mask_input: ``(1 or b, 1, 4s, 4s)`` low-resolution logits (zeros when unused).
        has_mask_input: ``(1,)`` float, 1 to use ``mask_input``, 0 to ignore it.

    Outputs: ``low_res_masks (b, 4, 4s, 4s)`` and ``iou_predictions (b, 4)`` for all four mask tokens
    (token 0 is the single-mask output, 1-3 the multimask ones), as ``MaskDecoder.predict_masks``.
    """

    def __init__(self, sam: Any) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.input_size = float(sam.image_encoder.img_size)
        with torch.no_grad():
            pe = self.prompt_encoder.get_dense_pe()  # (1, c, s, s)
        self.grid = tuple(pe.shape[-2:])
        self.register_buffer("image_pe_tokens", pe.flatten(2).transpose(1, 2).contiguous(), persistent=False)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sparse prompt tokens ``(b, n, c)``, as ``PromptEncoder._embed_points``/``_embed_boxes``."""
        pe = self.prompt_encoder
        emb = pe.pe_layer._pe_encoding((coords + 0.5) / self.input_size)
        labels = labels.unsqueeze(-1)
        emb = emb * (labels != PAD_LABEL) + pe.not_a_point_embed.weight * (labels == PAD_LABEL)
        for i, point_embedding in enumerate(pe.point_embeddings):
            emb = emb + point_embedding.weight * (labels == i)
        return emb

    def embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """Dense prompt embedding: the downscaled mask, or ``no_mask_embed`` when ``has_mask_input`` is 0."""
        pe = self.prompt_encoder
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        if (
            not torch.jit.is_tracing()
            and not torch.onnx.is_in_onnx_export()
            and not bool(has_mask_input.any())
        ):
            return no_mask  # same value as the blend below, without running the mask convolutions
        has = has_mask_input.reshape(-1, 1, 1, 1)
        return has * pe.mask_downscaling(mask_input) + (1 - has) * no_mask

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution mask logits and predicted IoU of every mask token."""
        md = self.mask_decoder
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_mask(mask_input, has_mask_input)
        b = sparse.shape[0]
        c = image_embeddings.shape[1]
        h, w = self.grid

        output_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(b, -1, -1), sparse), dim=1)
        # (b, h*w, c) contiguous tokens; the (b, c, h, w) views below flatten back to them for free.
        src = image_embeddings.flatten(2).transpose(1, 2) + dense.flatten(2).transpose(1, 2)
        src = src.expand(b, -1, -1)
        pos = self.image_pe_tokens.expand(b, -1, -1)
        hs, src = md.transformer(
            src.transpose(1, 2).reshape(b, c, h, w), pos.transpose(1, 2).reshape(b, c, h, w), tokens
        )
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + md.num_mask_tokens, :]

        upscaled = md.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(md.output_hypernetworks_mlps)], dim=1
        )
        b, c2, h2, w2 = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c2, h2 * w2)).reshape(b, -1, h2, w2)
        return masks, md.iou_prediction_head(iou_token_out)
