"""SAM and MobileSAM as visionkit backends: prompt segmentation with cached image embeddings.

Stages (the :class:`visionkit.Backend` contract, driven by :class:`visionkit.backend.SegmentsPrompts`),
with the heavy encoder separate from the light decoder::

    image  → preprocess  → resize longest side to image_size (PIL, as SamPredictor), normalise, pad
           → forward     → image encoder → (1, 256, image_size/16, image_size/16) embedding   [cached]
    prompt → decode      → prompt encoder + mask decoder, all prompts of a call in ONE batch
           → postprocess → masks at the original resolution, predicted IoU, low-res logits

``embed(image)`` runs the first two stages and returns a :class:`SamEmbedding` handle that
``segment_prompt`` accepts in place of the image. Without a handle, a small thread-safe LRU keyed by
a hash of the decoded pixels gives the same saving: repeated prompts on the same array or file run
the encoder once.

Threads: ``segment_prompt`` and ``embed`` do not go through :meth:`visionkit.Backend.predict`, so they
take the backend's :attr:`~visionkit.Backend.lock` themselves, around each encoder run and each
decode. A thread waiting for another thread's encoder run of the same image (the cache) holds no lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from copy import deepcopy as copy_module
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from visionkit import (
    Backend,
    BackendOptions,
    Batch,
    InstanceMasks,
    InvalidOptionError,
    InvalidPromptError,
    PromptMasks,
    ResultMeta,
    SegmentsInstances,
    Task,
    load_image,
)
from visionkit.autocast import autocast
from visionkit.backend import Encoded, SegmentsPrompts, check_limit
from visionkit.devices import resolve_torch_device
from visionkit.export import ExportSpec, tensors_fingerprint
from visionkit.images import as_batch
from visionkit.prompts import Prompts, parse_prompts
from visionkit_sam._decoder import PAD_LABEL, SamDecoderNet
from visionkit_sam._model import ModelConfig, load_model
from visionkit_sam._options import LOAD_TIME_OPTIONS, MobileSamOptions, SamAutoOptions, SamOptions

__all__ = [
    "EmbeddingCache",
    "MobileSamBackend",
    "SamAutoBackend",
    "SamBackend",
    "SamEmbedding",
]


class SafeResizeLongestSide(ResizeLongestSide):
    """segment-anything's resize, except that no side rounds down to 0 pixels.

    ``ResizeLongestSide`` rounds the short side of a 1x1000 or 3000x2 image to 0 and the resize then
    fails; here it is at least 1 pixel. Every other shape gets exactly SAM's own size.
    """

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """``(new_h, new_w)`` with the longest side ``long_side_length`` and no side below 1."""
        h, w = ResizeLongestSide.get_preprocess_shape(oldh, oldw, long_side_length)
        return max(1, h), max(1, w)


def image_key(image: np.ndarray) -> str:
    """Content hash of a decoded image: equal pixels (same array, same file) give the same key."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class SamEmbedding:
    """An image already run through the encoder; pass it to ``segment_prompt`` in place of the image.

    Attributes:
        features: ``(1, 256, s, s)`` image embedding (``s = image_size // 16``).
        original_size: ``(height, width)`` of the input image.
        input_size: ``(height, width)`` of the resized image inside the padded encoder input.
        key: content hash of the image pixels.
        owner: identifies the model that made it; another model's handle is refused.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    key: str
    owner: int

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the input image."""
        return self.original_size

    def __repr__(self) -> str:
        return f"SamEmbedding(image_shape={self.original_size}, features={tuple(self.features.shape)}, key={self.key[:8]})"


class EmbeddingCache:
    """A bounded, thread-safe LRU of image embeddings (:class:`visionkit.backend.Encoded`) keyed by image content.

    Concurrent requests for the same image wait for the first one's encoder run instead of
    running the encoder again. ``maxsize=0`` disables caching.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._inflight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """Return ``(embedding, was_cached)``, running ``compute`` only on a miss."""
        if self.maxsize == 0:
            with self._lock:
                self.misses += 1
            return compute(), False
        while True:
            with self._lock:
                if key in self._data:
                    self._data.move_to_end(key)
                    self.hits += 1
                    return self._data[key], True
                event = self._inflight.get(key)
                if event is None:
                    event = self._inflight[key] = threading.Event()
                    self.misses += 1
                    break
            # Another thread is encoding this image: wait, then look again (it may have failed).
            event.wait()
        try:
            value = compute()
            with self._lock:
                self._data[key] = value
                while len(self._data) > self.maxsize:
                    self._data.popitem(last=False)
            return value, False
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            event.set()

    def clear(self) -> None:
        """Drop every cached embedding and reset the counters."""
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def info(self) -> dict[str, int]:
        """``hits``, ``misses``, ``size`` and ``maxsize``."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "size": len(self._data),
                "maxsize": self.maxsize,
            }

    def __len__(self) -> int:
        return len(self._data)


# -- shared model holder --------------------------------------------------------------------------------
class _SamModelMixin:
    """Loads the network and runs the encoder stages; shared by the prompt and automatic backends."""

    random_default: ClassVar[str] = "tiny"
    native_runtime: ClassVar[str] = "torch"
    model: Any
    config: ModelConfig
    torch_device: torch.device

    #: Precisions the backend runs itself (others come from a runtime plugin).
    native_precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def _init_model(self, weights: Any, precision: str, options: Any) -> None:
        if precision not in self.native_precisions:
            raise InvalidOptionError(
                f"Backend {self.name!r} runs natively in {' or '.join(map(repr, self.native_precisions))}, "  # type: ignore[attr-defined]
                f"but got precision {precision!r}; other precisions come from a runtime plugin (e.g. "
                "visionkit-onnx, visionkit-openvino)."
            )
        check_limit("max_image_size", options.image_size or 0, options.max_image_size, what="image_size")
        model, cfg, fingerprint = load_model(
            weights,
            model_type=options.model_type,
            image_size=options.image_size,
            random_default=self.random_default,
            trust_pickle=options.trust_pickle,
        )
        # A checkpoint's own size (read from its position embedding) is held to the same limit.
        check_limit("max_image_size", cfg.image_size, options.max_image_size, what="encoder image_size")
        self.torch_device = resolve_torch_device(self.device)  # type: ignore[attr-defined]
        self.model = model.to(self.torch_device)
        self.config = cfg
        self.model_type = cfg.model_type
        self.fingerprint = fingerprint
        self.transform = SafeResizeLongestSide(cfg.image_size)
        self.decoder = SamDecoderNet(self.model).eval()


class SamBackend(_SamModelMixin, Backend[SamOptions], SegmentsPrompts):
    """Promptable segmentation with SAM (vit_b / vit_l / vit_h checkpoints, or MobileSAM's)."""

    name = "sam"
    tasks = (Task.SEGMENT_PROMPT,)
    Options: ClassVar[type[BackendOptions]] = SamOptions
    native_precisions = ("fp32", "bf16")
    #: Most prompts per decoder forward. The torch decoder (:meth:`SamDecoderNet.forward_eager`)
    #: shares the image side between prompts, so one forward for all the prompts of a call is the
    #: fastest (measured, MobileSAM, 16 boxes: one forward 0.69x the time of runs of 4); the bound
    #: only caps memory (~25 MB of activations per prompt) when ``max_prompts`` is raised or None.
    decoder_chunk: ClassVar[int] = 64
    #: Prompts per runtime decoder forward (ONNX Runtime, OpenVINO: the exported reference graph, which
    #: carries each prompt's own (4096, 256) image tokens and slows beyond ~4 at once on CPU:
    #: 16 boxes took 1375 ms in one run, 900 ms in runs of 4).
    runtime_decoder_chunk: ClassVar[int] = 4
    #: Prompts whose masks are upscaled to the image at once (bounds the full-size float masks).
    upscale_chunk: ClassVar[int] = 4

    def __init__(
        self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any
    ) -> None:
        super().__init__(weights=weights, device=device, precision=precision, **options)
        self._init_model(weights, precision, self.options)
        self.cache = EmbeddingCache(self.options.cache_size)
        self._owner = id(self.model)
        self._row_maps: dict[tuple[int, int, int, str], torch.Tensor] = {}

    # -- encoder stages ---------------------------------------------------------------------------
    def preprocess(
        self, images: list[np.ndarray], options: SamOptions, keys: list[str] | None = None
    ) -> Batch[SamOptions]:
        """Resize (longest side, PIL, exactly as ``SamPredictor.set_image``), normalise, pad to a square.

        ``keys`` are the images' content hashes when the caller already has them.
        """
        tensors, metas = [], []
        for i, image in enumerate(images):
            resized = self.transform.apply_image(image)
            x = torch.as_tensor(resized, device=self.torch_device).permute(2, 0, 1).contiguous()[None]
            metas.append(
                {
                    "original_size": tuple(image.shape[:2]),
                    "input_size": tuple(x.shape[-2:]),
                    "key": keys[i] if keys else image_key(image),
                }
            )
            tensors.append(self.model.preprocess(x))
        return Batch(images, torch.cat(tensors), metas, options)

    def forward(self, inputs: Any) -> Any:
        """The image encoder: ``(B, 3, S, S)`` → ``(B, 256, S/16, S/16)`` float32.

        ``precision="bf16"`` runs it under bf16 autocast (fast on CPUs with AMX / AVX512-BF16 and on
        GPUs); the embedding comes back as float32 and the prompt decoder, mask upscaling, threshold
        and IoU predictions stay fp32.
        """
        with torch.inference_mode(), self._autocast():
            return self.model.image_encoder(inputs).float()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        # a runtime plugin runs the encoder in its own engine: nothing to autocast
        return autocast("fp32" if self.runtime else self.precision, self.torch_device)

    def postprocess(self, outputs: Any, batch: Batch[SamOptions], task: Task) -> list[Any]:
        """One :class:`SamEmbedding` per image (the decoder runs later, per prompt)."""
        out = torch.as_tensor(outputs, device=self.torch_device)
        return [
            SamEmbedding(out[i : i + 1], m["original_size"], m["input_size"], m["key"], self._owner)
            for i, m in enumerate(batch.metas)
        ]

    def _encode(self, image: np.ndarray, key: str) -> Encoded[SamEmbedding]:
        """The encoder stages on one image (under the backend's lock), with their milliseconds."""
        return self.encode_stages(image, keys=[key])

    def embed(self, images: Any) -> Any:
        """Run the encoder (or reuse the cache) and return a :class:`SamEmbedding` per image.

        Args:
            images: one image (path, PIL, array, tensor ...) or a list of them.

        Returns:
            One handle for one image, a list for a list. Pass a handle to :meth:`segment_prompt` in
            place of the image to decode any number of prompts without re-running the encoder.
        """
        inputs, single = as_batch(images)
        check_limit("max_images", len(inputs), self.options.max_images, what="images in one call")
        out = [self.encode_image(x).embedding for x in inputs]
        return out[0] if single else out

    def encode_image(self, image: Any) -> Encoded[SamEmbedding]:
        """The image's embedding: a handle from :meth:`embed`, the cache, or the encoder (timed)."""
        if isinstance(image, SamEmbedding):
            if image.owner != self._owner:
                raise InvalidPromptError(
                    "The SamEmbedding was made by another model; embed the image with this backend's embed()."
                )
            return Encoded(image, image.original_size, cached=True)
        array = load_image(image)
        key = image_key(array)
        # Not under the lock: a thread waiting here for another's encoder run must not block it.
        encoded, cached = self.cache.get_or_compute(key, lambda: self._encode(array, key))
        return encoded.reused() if cached else encoded

    def cache_info(self) -> dict[str, int]:
        """Embedding cache counters: ``hits``, ``misses``, ``size``, ``maxsize``."""
        return self.cache.info()

    def clear_cache(self) -> None:
        """Forget every cached image embedding."""
        self.cache.clear()

    # -- decoder --------------------------------------------------------------------------------------
    def decoder_inputs(self, embedding: SamEmbedding, prompts: Prompts) -> tuple[torch.Tensor, ...]:
        """The decoder network's inputs for ``prompts`` (see :class:`visionkit_sam._decoder.SamDecoderNet`).

        Points and box corners are mapped into the resized encoder input, as ``SamPredictor`` does;
        a point-only prompt gets SAM's padding point.
        """
        size = embedding.original_size
        parts, labels = [], []
        if prompts.points is not None:
            parts.append(self.transform.apply_coords(prompts.points, size))
            labels.append(prompts.labels.astype(np.float32))
        if prompts.boxes is not None:
            corners = self.transform.apply_boxes(prompts.boxes, size).reshape(-1, 2, 2)
            parts.append(corners)
            labels.append(np.broadcast_to(np.array([2.0, 3.0], np.float32), (len(corners), 2)))
        else:
            parts.append(np.zeros((prompts.count, 1, 2)))
            labels.append(np.full((prompts.count, 1), PAD_LABEL, np.float32))
        dev = self.torch_device
        coords = torch.as_tensor(np.concatenate(parts, axis=1), dtype=torch.float, device=dev)
        point_labels = torch.as_tensor(np.concatenate(labels, axis=1), dtype=torch.float, device=dev)
        s = self.config.low_res_size
        if prompts.mask_input is not None:
            mask = torch.as_tensor(prompts.mask_input, dtype=torch.float, device=dev)
            has_mask = torch.ones(1, device=dev)
        else:
            mask = torch.zeros(1, 1, s, s, device=dev)
            has_mask = torch.zeros(1, device=dev)
        features = torch.as_tensor(embedding.features, dtype=torch.float, device=dev)
        return features, coords, point_labels, mask, has_mask

    def decoder_forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder (torch): ``(low_res (b, 4, s, s), iou (b, 4))`` for all mask tokens.

        The replaceable network stage of the decoder, like ``forward`` is the encoder's: a runtime
        plugin (ONNX Runtime) swaps it for its own session; :meth:`decoder_inputs` and the result
        conversion stay.
        """
        with torch.inference_mode():
            return self.decoder(*inputs)

    def decode(self, embedding: SamEmbedding, prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder for all prompts: ``(low_res (b,k,s,s), iou (b,k))``.

        Mirrors ``SamPredictor.predict_torch`` (same outputs). In torch all the prompts go through one
        batched forward (up to ``decoder_chunk``); a runtime's decoder runs ``runtime_decoder_chunk``
        at a time. ``k`` is 3 (the multimask tokens) or 1 (the single-mask token).
        """
        inputs = self.decoder_inputs(embedding, prompts)
        chunk = self.runtime_decoder_chunk if self.runtime else self.decoder_chunk
        parts = [self.decoder_forward(part) for part in _chunks(inputs, chunk)]
        low_res = torch.cat([torch.as_tensor(p[0], device=self.torch_device) for p in parts])
        iou = torch.cat([torch.as_tensor(p[1], device=self.torch_device) for p in parts])
        keep = slice(1, None) if prompts.multimask else slice(0, 1)
        return low_res[:, keep], iou[:, keep]

    def segment_prompt(
        self,
        image: Any,
        *,
        points: Any = None,
        labels: Any = None,
        boxes: Any = None,
        mask_input: Any = None,
        multimask_output: bool | None = None,
    ) -> PromptMasks:
        """Segment what points, boxes and/or a previous mask point at.

        Args:
            image: an image (path, PIL, array, tensor ...) or a :class:`SamEmbedding` from :meth:`embed`.
            points: ``(n, 2)`` clicks forming ONE prompt, or ``(b, n, 2)`` for b prompts; pixels ``x, y``.
            labels: 1 (foreground) / 0 (background) per point; default all 1.
            boxes: ``(b, 4)`` ``x1, y1, x2, y2``: one prompt per box, decoded in one batch.
                ``(n, 2)`` points are shared by every box; ``(b, n, 2)`` points pair with the boxes.
            mask_input: low-resolution logits from a previous result (``result.logits[i]``) to refine.
            multimask_output: 3 ranked masks per prompt. Default (None, or the load-time option):
                True only for one prompt made of points only (ambiguous); False otherwise.

        Returns:
            :class:`visionkit.PromptMasks`: boolean masks at the image's resolution, ``score`` = SAM's
            predicted IoU (best first within each prompt), ``prompt_index``, ``logits`` (n, S/4, S/4).

        Raises:
            InvalidPromptError: see :func:`visionkit.prompts.parse_prompts`.
            InvalidImageError: the image cannot be read.
        """
        return super().segment_prompt(
            image,
            points=points,
            labels=labels,
            boxes=boxes,
            mask_input=mask_input,
            multimask_output=multimask_output,
        )

    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution mask logits (what ``mask_input`` must match)."""
        return self.config.low_res_size

    def prompt_result(
        self, encoded: Encoded[SamEmbedding], prompts: Prompts, raw: tuple[torch.Tensor, torch.Tensor]
    ) -> PromptMasks:
        """Masks upscaled to the image, best first within each prompt, with scores and logits."""
        low_res, iou = raw
        return self._to_result(encoded.embedding, prompts, low_res, iou)

    def _to_result(
        self, emb: SamEmbedding, prompts: Prompts, low_res: torch.Tensor, iou: torch.Tensor
    ) -> PromptMasks:
        # Best first within each prompt (SamPredictor returns the decoder's token order); sort the
        # low-res logits, not the full-size masks.
        low_res = low_res.float()
        order = torch.argsort(iou, dim=1, descending=True, stable=True)
        logits = torch.gather(low_res, 1, order[..., None, None].expand(-1, -1, *low_res.shape[-2:]))
        rows = self._row_map(low_res.shape[-2], emb.input_size[0], emb.original_size[0], low_res.device)
        # Upscale a few prompts at a time and threshold at once: the float masks at full resolution
        # would otherwise all exist together (64 prompts x 3 masks of a 12 MP photo: 9 GB).
        parts = []
        with torch.inference_mode():
            for i in range(0, logits.shape[0], self.upscale_chunk):
                parts.append(
                    self._upscale(logits[i : i + self.upscale_chunk], rows, emb) > self.options.mask_threshold
                )
        masks = torch.cat(parts)
        scores = torch.gather(iou, 1, order)
        b, k = scores.shape
        h, w = emb.original_size
        return PromptMasks(
            mask=masks.reshape(b * k, h, w).cpu().numpy(),
            score=scores.reshape(-1).float().cpu().numpy(),
            prompt_index=np.repeat(np.arange(b, dtype=np.int64), k),
            logits=logits.reshape(b * k, *low_res.shape[-2:]).float().cpu().numpy(),
            metadata=ResultMeta(
                image_shape=(h, w),
                backend=self.name,
                model_type=self.model_type,
                multimask_output=prompts.multimask,
                **_prompt_record(prompts),
            ),
        )

    def _row_map(self, low: int, input_h: int, original_h: int, device: torch.device) -> torch.Tensor:
        """``(original_h, low)``: SAM's row resampling (bilinear to the encoder input, crop to the
        resized image, bilinear to the original size) as one matrix, built by resampling the identity
        with the same ``F.interpolate`` calls, so the weights are torch's own. Cached per size."""
        key = (low, input_h, original_h, str(device))
        cached = self._row_maps.get(key)
        if cached is None:
            eye = torch.eye(low, device=device)[None]
            cached = _resample_rows(eye, self.config.image_size, input_h, original_h)[0].T.contiguous()
            self._row_maps[key] = cached
            while len(self._row_maps) > 8:
                self._row_maps.pop(next(iter(self._row_maps)))
        return cached

    def _upscale(self, logits: torch.Tensor, rows: torch.Tensor, emb: SamEmbedding) -> torch.Tensor:
        """``Sam.postprocess_masks`` (``(b, k, s, s)`` → ``(b, k, H, W)``), separably: rows by one matrix
        product, columns by two 1-D linear resamplings. Same weights, same value within float rounding;
        0.42x the time of the two 2-D bilinear passes through the 1024x1024 intermediate with 1 thread,
        about the same with 2 (3 masks at 480x640, measured side by side)."""
        b, k, s, _ = logits.shape
        h, w = emb.original_size
        x = rows @ logits  # (b, k, H, s)
        x = _resample_rows(x.reshape(b * k * h, 1, s), self.config.image_size, emb.input_size[1], w)
        return x.reshape(b, k, h, w)

    def export_spec(self) -> ExportSpec:
        """The image encoder (the heavy, cacheable part): ``images (B,3,S,S) → image_embeddings``."""
        s = self.config.image_size
        return ExportSpec(
            module=_traceable_encoder(self.model.image_encoder).eval(),
            example_inputs=(torch.zeros(1, 3, s, s, device=self.torch_device),),
            input_names=["images"],
            output_names=["image_embeddings"],
            key=f"{self.name}-encoder-{self.weights_key()}",
            dynamic_axes={"images": {0: "batch"}, "image_embeddings": {0: "batch"}},
        )

    def weights_key(self) -> str:
        """Export cache key of the weights: the checkpoint's name/size/mtime, or for a random init a
        hash of the parameters (two random inits must not share a cached ONNX file)."""
        if not self.fingerprint.startswith("random-"):
            return self.fingerprint
        if getattr(self, "_random_key", None) is None:
            self._random_key = f"{self.fingerprint}-{tensors_fingerprint(self.model)}"
        return self._random_key

    def export_specs(self) -> list[ExportSpec]:
        """Both networks: the encoder (stage ``forward``) and the prompt decoder (``decoder_forward``)."""
        return [self.export_spec(), self.decoder_export_spec()]

    def decoder_export_spec(self) -> ExportSpec:
        """Prompt encoder + mask decoder, any number of prompts and points (dynamic INT8 by default:
        a MatMul-heavy two-way transformer)."""
        grid = self.config.image_size // 16
        example = self.decoder_inputs(
            SamEmbedding(
                torch.zeros(1, self.model.prompt_encoder.embed_dim, grid, grid, device=self.torch_device),
                (self.config.image_size, self.config.image_size),
                (self.config.image_size, self.config.image_size),
                "",
                self._owner,
            ),
            parse_prompts(
                points=[(8.0, 8.0)],
                labels=[1],
                boxes=None,
                mask_input=None,
                multimask_output=True,
                image_shape=(self.config.image_size, self.config.image_size),
                low_res_size=self.config.low_res_size,
            ),
        )
        prompts = {0: "prompts", 1: "points"}
        return ExportSpec(
            module=self.decoder,
            example_inputs=example,
            input_names=["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"],
            output_names=["low_res_masks", "iou_predictions"],
            key=f"{self.name}-decoder-{self.weights_key()}-{self.config.image_size}",
            dynamic_axes={
                "point_coords": prompts,
                "point_labels": prompts,
                "mask_input": {0: "mask_batch"},
                "low_res_masks": {0: "prompts"},
                "iou_predictions": {0: "prompts"},
            },
            calibration_inputs=self._decoder_calibration_inputs,
            dynamic_quantization=True,
            stage="decoder_forward",
        )

    def _decoder_calibration_inputs(self, images: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
        """Decoder inputs for static-INT8 calibration: the image's embedding, a 3x3 grid of clicks."""
        image = images[0]
        h, w = image.shape[:2]
        embedding = self._encode(image, image_key(image)).embedding
        xs, ys = np.meshgrid(np.linspace(0.2, 0.8, 3) * w, np.linspace(0.2, 0.8, 3) * h)
        clicks = np.stack([xs.ravel(), ys.ravel()], axis=1)[:, None, :]
        prompts = parse_prompts(
            points=clicks,
            labels=np.ones((9, 1)),
            boxes=None,
            mask_input=None,
            multimask_output=False,
            image_shape=(h, w),
            low_res_size=self.config.low_res_size,
        )
        return self.decoder_inputs(embedding, prompts)


def _resample_rows(x: torch.Tensor, padded: int, valid: int, out: int) -> torch.Tensor:
    """``(n, 1, s)`` signals: linear (half-pixel, as bilinear) to ``padded``, crop ``valid``, to ``out``."""
    import torch.nn.functional as F

    x = F.interpolate(x, size=padded, mode="linear", align_corners=False)[..., :valid]
    return F.interpolate(x, size=out, mode="linear", align_corners=False)


def _chunks(inputs: tuple[torch.Tensor, ...], size: int) -> list[tuple[torch.Tensor, ...]]:
    """Split decoder inputs into runs of at most ``size`` prompts (the image embedding is shared, and
    so are a single mask and the has-mask flag)."""
    features, coords, labels, mask, has_mask = inputs
    b = coords.shape[0]
    per_prompt_mask = mask.shape[0] == b and b > 1
    return [
        (
            features,
            coords[i : i + size],
            labels[i : i + size],
            mask[i : i + size] if per_prompt_mask else mask,
            has_mask,
        )
        for i in range(0, b, size)
    ]


def _prompt_record(prompts: Prompts) -> dict[str, Any]:
    """The prompts in image pixels, kept in the result's metadata (``visionkit.draw`` marks them)."""
    record: dict[str, Any] = {}
    if prompts.points is not None:
        record["points"] = prompts.points.reshape(-1, 2).tolist()
        record["labels"] = prompts.labels.reshape(-1).tolist()
    if prompts.boxes is not None:
        record["boxes"] = prompts.boxes.tolist()
    return record


def _traceable_encoder(encoder: torch.nn.Module) -> torch.nn.Module:
    """``encoder``, or a copy whose ultralytics ``LayerNorm2d`` are segment-anything's equivalent.

    ultralytics' TinyViT neck normalises with ``F.layer_norm(..., x.shape[1:2])``: the ONNX tracer
    records that shape as a runtime value and refuses to export it. segment-anything's LayerNorm2d
    (same parameters, explicit mean/variance) exports; the two agree to float rounding.
    """
    from segment_anything.modeling.common import LayerNorm2d

    names = [
        name
        for name, m in encoder.named_modules()
        if type(m).__name__ == "LayerNorm2d" and type(m).__module__.startswith("ultralytics")
    ]
    if not names:
        return encoder
    copy = copy_module(encoder)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = copy.get_submodule(parent_name) if parent_name else copy
        old = getattr(parent, child)
        new = LayerNorm2d(old.weight.shape[0], eps=old.eps).to(old.weight.device)
        new.load_state_dict({"weight": old.weight, "bias": old.bias})
        setattr(parent, child, new)
    return copy


class MobileSamBackend(SamBackend):
    """Promptable segmentation with MobileSAM: TinyViT encoder, SAM's prompt encoder and mask decoder."""

    name = "mobile-sam"
    Options: ClassVar[type[BackendOptions]] = MobileSamOptions
    random_default = "tiny_vit_t"


class SamAutoBackend(_SamModelMixin, Backend[SamAutoOptions], SegmentsInstances):
    """'Segment everything': SAM prompted by a grid of points (``SamAutomaticMaskGenerator``)."""

    name = "sam-auto"
    tasks = (Task.SEGMENT_INSTANCES,)
    Options: ClassVar[type[BackendOptions]] = SamAutoOptions

    def __init__(
        self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any
    ) -> None:
        super().__init__(weights=weights, device=device, precision=precision, **options)
        self._init_model(weights, precision, self.options)

    def with_options(self, overrides: dict[str, Any]) -> Any:
        """Load-time options with per-call ``overrides``; options that build the network are refused."""
        fixed = sorted(k for k in overrides if k in LOAD_TIME_OPTIONS)
        if fixed:
            raise InvalidOptionError(
                f"Option {fixed[0]!r} of backend {self.name!r} applies when the model is loaded: "
                f"visionkit.load({self.name!r}, {fixed[0]}=...)."
            )
        return super().with_options(overrides)

    def preprocess(self, images: list[np.ndarray], options: SamAutoOptions) -> Batch[SamAutoOptions]:
        """The generator resizes and crops itself; pass the images through.

        Raises:
            LimitExceededError: ``points_per_side``, ``points_per_batch`` or ``crop_n_layers`` above
                their ``max_*`` limit.
        """
        from segment_anything import SamAutomaticMaskGenerator

        for option in ("points_per_side", "points_per_batch", "crop_n_layers"):
            check_limit(
                f"max_{option}", getattr(options, option), getattr(options, f"max_{option}"), what=option
            )
        generator = SamAutomaticMaskGenerator(
            self.model,
            points_per_side=options.points_per_side,
            points_per_batch=options.points_per_batch,
            pred_iou_thresh=options.pred_iou_thresh,
            stability_score_thresh=options.stability_score_thresh,
            stability_score_offset=options.stability_score_offset,
            box_nms_thresh=options.box_nms_thresh,
            crop_n_layers=options.crop_n_layers,
            min_mask_region_area=options.min_mask_region_area,
            output_mode="binary_mask",
        )
        generator.predictor.model.mask_threshold = options.mask_threshold
        generator.predictor.transform = self.transform  # no side resized to 0 (1x1000 images)
        return Batch(images, {"generator": generator, "images": images}, [{} for _ in images], options)

    def forward(self, inputs: Any) -> Any:
        """Run the generator (encoder, then the point grid through the decoder) on each image."""
        with torch.inference_mode():
            return [inputs["generator"].generate(image) for image in inputs["images"]]

    def postprocess(self, outputs: Any, batch: Batch[SamAutoOptions], task: Task) -> list[Any]:
        """Convert the generator's records to :class:`visionkit.InstanceMasks`, best first."""
        return [
            self._to_instances(records, image, batch.options.max_detections)
            for records, image in zip(outputs, batch.images, strict=True)
        ]

    def _to_instances(
        self, records: Sequence[dict[str, Any]], image: np.ndarray, max_detections: int | None = None
    ) -> InstanceMasks:
        h, w = image.shape[:2]
        meta = {"model_type": self.model_type, "label_space": "class-agnostic"}
        if not records:
            return InstanceMasks.empty((h, w), backend=self.name, **meta)
        records = sorted(records, key=lambda r: -float(r["predicted_iou"]))[:max_detections]
        # bbox is XYWH of the mask's extreme pixels; +1 makes x2/y2 the exclusive pixel edge.
        xywh = np.asarray([r["bbox"] for r in records], np.float32)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:] + 1], axis=1)
        xyxy = np.minimum(xyxy, np.array([w, h, w, h], np.float32))
        iou = np.asarray([r["predicted_iou"] for r in records], np.float32)
        return InstanceMasks(
            xyxy=xyxy,
            confidence=np.clip(iou, 0.0, 1.0),
            class_id=np.zeros(len(records), np.int64),
            class_name=("object",) * len(records),
            mask=np.asarray([r["segmentation"] for r in records], bool).reshape(-1, h, w),
            data={
                "predicted_iou": iou,
                "stability_score": np.asarray([r["stability_score"] for r in records], np.float32),
                "area": np.asarray([r["area"] for r in records], np.int64),
            },
            metadata=ResultMeta(image_shape=(h, w), backend=self.name, **meta),
        )


def load_sam(**kwargs: Any) -> SamBackend:
    """Factory of the ``sam`` backend."""
    return SamBackend(**kwargs)


def load_mobile_sam(**kwargs: Any) -> MobileSamBackend:
    """Factory of the ``mobile-sam`` backend."""
    return MobileSamBackend(**kwargs)


def load_sam_auto(**kwargs: Any) -> SamAutoBackend:
    """Factory of the ``sam-auto`` backend."""
    return SamAutoBackend(**kwargs)
