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

import math
import weakref
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

    image_pe_tokens: torch.Tensor

    def __init__(self, sam: Any) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.input_size = float(sam.image_encoder.img_size)
        with torch.no_grad():
            pe = self.prompt_encoder.get_dense_pe()  # (1, c, s, s)
        self.grid = tuple(pe.shape[-2:])
        self.register_buffer("image_pe_tokens", pe.flatten(2).transpose(1, 2).contiguous(), persistent=False)
        # (embedding tensor, its version, first-block image-side projections): see _image_side
        self._image_cache: tuple[Any, int, tuple[torch.Tensor, ...]] | None = None

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
        """Low-resolution mask logits and predicted IoU of every mask token.

        Eager torch takes :meth:`forward_eager`; tracing and ONNX export take :meth:`forward_reference`
        (the exported graph, and so the ONNX Runtime / OpenVINO models and their INT8 recipes, stay as
        they were). The two agree within float rounding (tested).
        """
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self.forward_reference(
                image_embeddings, point_coords, point_labels, mask_input, has_mask_input
            )
        return self.forward_eager(image_embeddings, point_coords, point_labels, mask_input, has_mask_input)

    def forward_reference(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``MaskDecoder.predict_masks``'s arithmetic with SAM's own modules (the graph that is exported)."""
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

    # -- the eager fast path --------------------------------------------------------------------------
    def _image_side(self, image_embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """First-block projections that depend on the image alone (no mask prompt), cached per embedding.

        In the first two-way block the image tokens (embedding + no-mask embedding), their sum with
        the positional encoding and the image→token query projection (a (4096, 256)x(256, 128)
        product) do not depend on any prompt: they are computed once per embedding tensor and shared by
        every prompt of every call on it. Returns ``(tokens, tokens + pe, query projection)``, batch 1.
        """
        # Keyed by the tensor object (and its version counter: an in-place change invalidates;
        # inference-mode tensors, what the encoder returns, cannot be changed in place).
        version = -1 if image_embeddings.is_inference() else image_embeddings._version
        cached = self._image_cache
        if cached is not None and cached[0]() is image_embeddings and cached[1] == version:
            return cached[2]
        pe = self.prompt_encoder
        layer = self.mask_decoder.transformer.layers[0]
        src = image_embeddings.flatten(2).transpose(1, 2) + pe.no_mask_embed.weight  # (1, hw, c)
        k = src + self.image_pe_tokens
        value = (src.contiguous(), k, layer.cross_attn_image_to_token.q_proj(k))
        self._image_cache = (weakref.ref(image_embeddings), version, value)
        return value

    def forward_eager(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` for torch eager: same arithmetic, less memory traffic (see the module doc)."""
        md = self.mask_decoder
        tr = md.transformer
        sparse = self.embed_points(point_coords, point_labels)
        b = sparse.shape[0]
        output_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(b, -1, -1), sparse), dim=1)
        pos = self.image_pe_tokens
        pq: torch.Tensor | None = None
        if bool(has_mask_input.any()):
            dense = self.embed_mask(mask_input, has_mask_input)  # (1 or b, c, h, w)
            keys = image_embeddings.flatten(2).transpose(1, 2) + dense.flatten(2).transpose(1, 2)
            key_in = keys + pos
        else:
            keys, key_in, pq = self._image_side(image_embeddings)

        queries = tokens
        for i, layer in enumerate(tr.layers):
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(queries, queries, queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q, q, queries)
            queries = layer.norm1(queries)
            if i > 0:
                key_in = keys + pos
            attn = _token_to_image(layer.cross_attn_token_to_image, queries + tokens, key_in, keys)
            queries = layer.norm2(queries + attn)
            queries = layer.norm3(queries + layer.mlp(queries))
            attn = _image_to_token(
                layer.cross_attn_image_to_token, key_in, queries + tokens, queries, pq=pq if i == 0 else None
            )
            keys = layer.norm4(keys + attn)
        attn = _token_to_image(tr.final_attn_token_to_image, queries + tokens, keys + pos, keys)
        hs = tr.norm_final_attn(queries + attn)

        mask_tokens_out = hs[:, 1 : 1 + md.num_mask_tokens, :]
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(md.output_hypernetworks_mlps)], dim=1
        )
        return self._upscaled_masks(keys, hyper_in), md.iou_prediction_head(hs[:, 0, :])

    def _upscaled_masks(self, keys: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """``hyper_in @ output_upscaling(keys)`` with both 2x2-stride transposed convolutions as matrix
        products in channels-last layout (``ConvTranspose2d`` on CPU is several times slower), and the
        pixel shuffle done once, on the 4 mask channels instead of the 64/32 feature channels."""
        ct1, norm, act1, ct2, act2 = self.mask_decoder.output_upscaling
        b, n = keys.shape[:2]
        h, w = self.grid
        c1, c2 = ct1.out_channels, ct2.out_channels
        # rows (i, j, di, dj) of a channels-last map: output pixel (2i + di, 2j + dj)
        x = torch.nn.functional.linear(keys, *self._ct_weights(ct1)).reshape(b, n * 4, c1)
        x = act1(torch.nn.functional.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
        x = act2(torch.nn.functional.linear(x, *self._ct_weights(ct2)).reshape(b, n * 16, c2))
        k = hyper_in.shape[1]
        masks = torch.bmm(hyper_in, x.transpose(1, 2))  # (b, k, rows (i, j, di, dj, ei, ej))
        masks = masks.reshape(b, k, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return masks.reshape(b, k, 4 * h, 4 * w)

    @staticmethod
    def _ct_weights(conv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
        """A 2x2-stride-2 transposed convolution as ``linear``: weight ``(4 * out, in)`` with rows
        ``(di, dj, out)``, bias repeated for the four sub-pixels."""
        cin, cout, kh, kw = conv.weight.shape
        weight = conv.weight.permute(2, 3, 1, 0).reshape(kh * kw * cout, cin)
        assert conv.bias is not None
        return weight, conv.bias.repeat(kh * kw)


def _block_diagonal(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(b, t, heads * d)`` → ``(b, heads * t, heads * d)``: head h's ``(t, d)`` block at rows ``h*t``,
    columns ``h*d``, zeros elsewhere. With it all heads' attention over a few prompt tokens is one
    matrix product instead of ``heads`` small strided ones."""
    b, t, c = x.shape
    eye = torch.eye(heads, dtype=x.dtype, device=x.device)
    blocks = (
        x.reshape(b, t, heads, c // heads).transpose(1, 2)[:, :, :, None, :] * eye[None, :, None, :, None]
    )
    return blocks.reshape(b, heads * t, c)


def _token_to_image(attn: Any, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
    """segment-anything's ``Attention(q=tokens, k=image, v=image)``, with the projections of the 4096
    image tokens folded into the few prompt tokens' side (same value, a third of the work):

    scores_h = q_h (k_in W_k,h^T + b_k,h)^T = (q_h W_k,h) k_in^T + q_h b_k,h and
    out_h = P_h (v_in W_v,h^T + b_v,h) = (P_h v_in) W_v,h^T + b_v,h (softmax rows sum to 1).
    ``k_in``/``v_in`` may have batch 1 (the image side shared by every prompt).
    """
    heads = attn.num_heads
    q = _block_diagonal(attn.q_proj(q_in), heads)  # (b, H*t, ci)
    b, ht, ci = q.shape
    t, d = ht // heads, ci // heads
    qk = q @ attn.k_proj.weight  # (b, H*t, c)
    bias = (q @ attn.k_proj.bias).unsqueeze(-1) / math.sqrt(d)
    qk = qk / math.sqrt(d)
    if k_in.shape[0] == 1 and b > 1:  # one image side: all prompts in one product
        scores = (qk.reshape(b * ht, -1) @ k_in[0].T).reshape(b, ht, -1) + bias
    else:
        scores = qk @ k_in.transpose(1, 2) + bias
    p = torch.softmax(scores, dim=-1)
    one_image = v_in.shape[0] == 1 and b > 1
    pv = (p.reshape(b * ht, -1) @ v_in[0]).reshape(b, ht, -1) if one_image else p @ v_in  # (b, H*t, c)
    w_v = attn.v_proj.weight.reshape(heads, d, -1)  # (H, d, c)
    out = pv.reshape(b, heads, t, -1) @ w_v.transpose(1, 2)  # (b, H, t, d)
    out = out.transpose(1, 2).reshape(b, t, ci) + attn.v_proj.bias
    return attn.out_proj(out)


def _image_to_token(
    attn: Any, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, *, pq: torch.Tensor | None = None
) -> torch.Tensor:
    """segment-anything's ``Attention(q=image, k=tokens, v=tokens)``, with the 4096 image tokens' query
    and output projections folded into the prompt tokens' side (same value, less work):

    scores = q_in (W_q^T K) + b_q K with K the block-diagonal keys of all heads, one softmax per head,
    and out_proj(concat_h P_h V_h) = P (V W_o^T) + b_o with V the block-diagonal values.
    ``pq`` is ``q_proj(q_in)`` when already known (the first block's, cached per image).
    """
    heads = attn.num_heads
    k = _block_diagonal(attn.k_proj(k_in), heads)  # (b, H*t, ci)
    v = _block_diagonal(attn.v_proj(v_in), heads)
    b, ht, ci = k.shape
    scale = 1.0 / math.sqrt(ci // heads)
    if pq is not None:
        scores = pq @ (k.transpose(1, 2) * scale)
    else:
        wk = attn.q_proj.weight.T @ (k.transpose(1, 2) * scale)  # (b, c, H*t)
        scores = q_in @ wk + (k @ attn.q_proj.bias).unsqueeze(1) * scale
    n = scores.shape[1]
    # softmax over each head's few tokens; written out, as torch.softmax over a last dimension of ~7
    # is several times slower on CPU (same value within float rounding)
    grouped = scores.reshape(b, n, heads, ht // heads)
    e = (grouped - grouped.amax(-1, keepdim=True)).exp_()
    p = e.div_(e.sum(-1, keepdim=True)).reshape(b, n, ht)
    vo = v @ attn.out_proj.weight.T  # (b, H*t, c)
    return p @ vo + attn.out_proj.bias
