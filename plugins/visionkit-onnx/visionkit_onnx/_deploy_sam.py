"""SAM / MobileSAM deploy artifacts: the image encoder and the prompt decoder in ONNX Runtime (or
OpenVINO), no torch.

The artifact is the encoder file; its metadata names the prompt-decoder file written beside it
(``output.decoder_file``, checked against ``output.decoder_sha256`` when loaded). The stages mirror the
``sam`` backend's (``SamPredictor``'s), in numpy and Pillow:

    image  → longest side to ``imgsz`` (Pillow bilinear), normalise (0-255 mean/std), zero-pad → encoder
           → embedding, kept in an LRU keyed by the image's pixels (``embed`` returns a handle)
    prompt → points/boxes scaled into the resized image → decoder (all prompts of a call, in chunks)
           → low-res logits resized (OpenCV bilinear = torch ``align_corners=False``) to ``imgsz``,
             cropped to the resized image, resized to the image, thresholded; best predicted IoU first
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from visionkit import (
    Backend,
    BackendError,
    BackendOptions,
    Batch,
    InvalidOptionError,
    InvalidPromptError,
    PromptMasks,
    ResultMeta,
    Task,
    load_image,
)
from visionkit.backend import Encoded, SegmentsPrompts
from visionkit.images import as_batch
from visionkit.prompts import Prompts, parse_prompts
from visionkit_onnx._deploy import _describe, _engine_name, _FileSpec, _resize, _resize_stack

__all__ = ["DeployedSam", "DeployedSamEmbedding", "SamDeployOptions"]

PAD_LABEL = -1.0  # SAM's label of the padding point a points-only prompt gets


class SamDeployOptions(BackendOptions):
    """Options of a deployed SAM; ``None`` means the file's default (the exporting backend's)."""

    mask_threshold: float | None = Field(None, description="Logit above which a pixel is in the mask.")
    multimask_output: bool | None = Field(
        None, description="3 ranked masks per prompt; None: only for a single points-only prompt."
    )
    cache_size: int | None = Field(None, ge=0, description="Image embeddings kept in the LRU (0 disables).")
    threads: int | None = Field(
        None,
        ge=1,
        description="Engine threads: ONNX Runtime intra-op, or OpenVINO INFERENCE_NUM_THREADS "
        "(default: one per core).",
    )


@dataclass(frozen=True, eq=False)
class DeployedSamEmbedding:
    """An image already run through the encoder; pass it to ``segment_prompt`` in place of the image."""

    features: np.ndarray
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    key: str
    owner: int

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the input image."""
        return self.original_size


def _image_key(image: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


def _longest_side(h: int, w: int, side: int) -> tuple[int, int]:
    """segment-anything's ``get_preprocess_shape``, at least 1 pixel a side (as the backend)."""
    scale = side * 1.0 / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


class DeployedSam(_FileSpec, Backend[SamDeployOptions], SegmentsPrompts):
    """A SAM / MobileSAM artifact: encoder and prompt decoder sessions, an embedding cache."""

    name: ClassVar[str] = "onnx"
    tasks: ClassVar[tuple[Task, ...]] = (Task.SEGMENT_PROMPT,)
    Options = SamDeployOptions

    def __init__(self, path: Path, session: Any, meta: dict[str, Any], **options: Any) -> None:
        super().__init__(weights=str(path), device="cpu", precision=str(meta["precision"]), **options)
        from visionkit_onnx._deploy import OvEngine, open_engine

        out, inp, norm = meta["output"], meta["input"], meta["normalize"]
        decoder = path.with_name(str(out.get("decoder_file", "")))
        if not out.get("decoder_file") or not decoder.is_file():
            raise InvalidOptionError(
                f"{path.name!r} is a SAM encoder whose prompt decoder {decoder.name!r} is missing: keep the "
                "two files `visionkit export` wrote side by side."
            )
        want = out.get("decoder_sha256")
        if want and hashlib.sha256(decoder.read_bytes()).hexdigest() != want:
            raise InvalidOptionError(
                f"{decoder.name!r} is not the prompt decoder exported with {path.name!r} (sha256 differs); "
                "re-export both files together."
            )
        self.session, self.artifact = session, meta
        # the decoder runs in the encoder's engine (an IR's decoder is an IR beside it)
        engine = "openvino" if isinstance(session, OvEngine) else "onnxruntime"
        self.decoder_session = open_engine(decoder, engine, self.options.threads)
        if isinstance(self.decoder_session, OvEngine):
            self.decoder_session.compile(meta)
        self.input_name, self.raw_name = inp["name"], out["raw"]
        self.imgsz, self.low_res = int(inp["imgsz"]), int(out["low_res_size"])
        self.decoder_inputs_names = list(out["decoder_inputs"])
        self.decoder_outputs_names = list(out["decoder_outputs"])
        self._mean = np.asarray(norm["mean"], np.float32).reshape(3, 1, 1)
        self._std = np.asarray(norm["std"], np.float32).reshape(3, 1, 1)
        d = meta["defaults"]
        self.chunk = int(d.get("decoder_chunk", 4))
        self.max_points, self.max_prompts = d.get("max_points"), d.get("max_prompts")
        self.model_type = (meta.get("metadata") or {}).get("model_type")
        size = self.options.cache_size if self.options.cache_size is not None else int(d.get("cache_size", 8))
        self._cache: OrderedDict[str, DeployedSamEmbedding] = OrderedDict()
        self._cache_size, self._cache_lock = size, threading.Lock()
        self._hits = self._misses = 0
        self.runtime = {**_describe(path, session, meta, self.options.threads), "decoder_path": str(decoder)}

    def _default(self, key: str) -> Any:
        value = getattr(self.options, key)
        return self.artifact["defaults"].get(key) if value is None else value

    # -- encoder stages ------------------------------------------------------------------------------
    def preprocess(
        self, images: list[np.ndarray], options: SamDeployOptions, keys: list[str] | None = None
    ) -> Batch[SamDeployOptions]:
        """Longest side to ``imgsz`` (Pillow bilinear), normalise, zero-pad to ``imgsz`` square."""
        x = np.zeros((len(images), 3, self.imgsz, self.imgsz), np.float32)
        metas = []
        for i, im in enumerate(images):
            h, w = _longest_side(int(im.shape[0]), int(im.shape[1]), self.imgsz)
            resized = _resize(im, (h, w), "pil-bilinear")
            x[i, :, :h, :w] = (resized.transpose(2, 0, 1).astype(np.float32) - self._mean) / self._std
            key = keys[i] if keys else _image_key(im)
            metas.append({"original_size": tuple(im.shape[:2]), "input_size": (h, w), "key": key})
        return Batch(images, x, metas, options)

    def forward(self, inputs: Any) -> Any:
        """The image encoder: ``(B, 3, S, S)`` → ``(B, 256, S/16, S/16)``."""
        try:
            return self.session.run([self.raw_name], {self.input_name: inputs})[0]
        except Exception as exc:
            raise BackendError(f"{_engine_name(self.session)} failed on the SAM encoder: {exc}") from exc

    def postprocess(self, outputs: Any, batch: Batch[SamDeployOptions], task: Task) -> list[Any]:
        """One embedding handle per image."""
        return [
            DeployedSamEmbedding(outputs[i : i + 1], m["original_size"], m["input_size"], m["key"], id(self))
            for i, m in enumerate(batch.metas)
        ]

    # -- the embedding cache ---------------------------------------------------------------------------
    def encode_image(self, image: Any) -> Encoded[DeployedSamEmbedding]:
        """The image's embedding: a handle from :meth:`embed`, the cache, or the encoder (timed)."""
        if isinstance(image, DeployedSamEmbedding):
            if image.owner != id(self):
                raise InvalidPromptError(
                    "The embedding was made by another model; embed the image with this backend's embed()."
                )
            return Encoded(image, image.original_size, cached=True)
        array = load_image(image)
        key = _image_key(array)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self._hits += 1
                return Encoded(hit, hit.original_size, cached=True)
            self._misses += 1
        encoded = self.encode_stages(array, keys=[key])
        if self._cache_size:
            with self._cache_lock:
                self._cache[key] = encoded.embedding
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return encoded

    def embed(self, images: Any) -> Any:
        """Run the encoder (or reuse the cache): one handle per image, for :meth:`segment_prompt`."""
        inputs, single = as_batch(images)
        out = [self.encode_image(x).embedding for x in inputs]
        return out[0] if single else out

    def cache_info(self) -> dict[str, int]:
        """Embedding cache counters: ``hits``, ``misses``, ``size``, ``maxsize``."""
        with self._cache_lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "size": len(self._cache),
                "maxsize": self._cache_size,
            }

    def clear_cache(self) -> None:
        """Forget every cached image embedding."""
        with self._cache_lock:
            self._cache.clear()
            self._hits = self._misses = 0

    # -- prompts and the decoder -----------------------------------------------------------------------
    def parse_prompts(
        self,
        encoded: Encoded[DeployedSamEmbedding],
        *,
        points: Any,
        labels: Any,
        boxes: Any,
        mask_input: Any,
        multimask_output: bool | None,
    ) -> Prompts:
        """The shared prompt grammar (:func:`visionkit.prompts.parse_prompts`) with the file's limits."""
        multimask = self._default("multimask_output") if multimask_output is None else multimask_output
        return parse_prompts(
            points=points,
            labels=labels,
            boxes=boxes,
            mask_input=mask_input,
            multimask_output=multimask,
            image_shape=encoded.image_shape,
            low_res_size=self.low_res,
            max_points=self.max_points,
            max_prompts=self.max_prompts,
        )

    def _scale(self, xy: np.ndarray, emb: DeployedSamEmbedding) -> np.ndarray:
        """``ResizeLongestSide.apply_coords``: pixels into the resized encoder input."""
        (oh, ow), (nh, nw) = emb.original_size, emb.input_size
        out = np.array(xy, dtype=float)
        out[..., 0] = out[..., 0] * (nw / ow)
        out[..., 1] = out[..., 1] * (nh / oh)
        return out

    def decode(self, embedding: DeployedSamEmbedding, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        """Prompt encoder + mask decoder for every prompt, in chunks: ``(low_res (b,k,s,s), iou (b,k))``."""
        parts, labels = [], []
        if prompts.points is not None:
            parts.append(self._scale(prompts.points, embedding))
            labels.append(np.asarray(prompts.labels, np.float32))
        if prompts.boxes is not None:
            parts.append(self._scale(np.asarray(prompts.boxes).reshape(-1, 2, 2), embedding))
            labels.append(np.broadcast_to(np.array([2.0, 3.0], np.float32), (len(parts[-1]), 2)))
        else:
            parts.append(np.zeros((prompts.count, 1, 2)))
            labels.append(np.full((prompts.count, 1), PAD_LABEL, np.float32))
        coords = np.concatenate(parts, axis=1).astype(np.float32)
        point_labels = np.concatenate(labels, axis=1).astype(np.float32)
        s = self.low_res
        if prompts.mask_input is not None:
            mask = np.asarray(prompts.mask_input, np.float32)
            has_mask = np.ones(1, np.float32)
        else:
            mask, has_mask = np.zeros((1, 1, s, s), np.float32), np.zeros(1, np.float32)
        features = embedding.features.astype(np.float32)
        b = coords.shape[0]
        per_prompt_mask = mask.shape[0] == b and b > 1
        lows, ious = [], []
        for i in range(0, b, self.chunk):
            m = mask[i : i + self.chunk] if per_prompt_mask else mask
            feed = dict(
                zip(
                    self.decoder_inputs_names,
                    (features, coords[i : i + self.chunk], point_labels[i : i + self.chunk], m, has_mask),
                    strict=True,
                )
            )
            try:
                low, iou = self.decoder_session.run(self.decoder_outputs_names, feed)
            except Exception as exc:
                raise BackendError(
                    f"{_engine_name(self.decoder_session)} failed on the SAM prompt decoder: {exc}"
                ) from exc
            lows.append(low)
            ious.append(iou)
        keep = slice(1, None) if prompts.multimask else slice(0, 1)
        return np.concatenate(lows)[:, keep], np.concatenate(ious)[:, keep]

    def prompt_result(
        self, encoded: Encoded[DeployedSamEmbedding], prompts: Prompts, raw: tuple[np.ndarray, np.ndarray]
    ) -> PromptMasks:
        """Masks upscaled to the image, best first within each prompt, with scores and logits."""
        low_res, iou = raw
        emb = encoded.embedding
        order = np.argsort(-iou, axis=1, kind="stable")
        threshold = float(self._default("mask_threshold"))
        (h, w), (ih, iw) = emb.original_size, emb.input_size
        b, k = iou.shape
        masks = np.empty((b, k, h, w), bool)
        for i in range(b):  # one prompt at a time: full-resolution floats never pile up
            up = _resize_stack(low_res[i].astype(np.float32), (self.imgsz, self.imgsz))[:, :ih, :iw]
            masks[i] = _resize_stack(up, (h, w))[order[i]] > threshold
        logits = np.take_along_axis(low_res, order[..., None, None], 1)
        scores = np.take_along_axis(iou, order, 1)
        record: dict[str, Any] = {}
        if prompts.points is not None:
            record["points"] = prompts.points.reshape(-1, 2).tolist()
            record["labels"] = np.asarray(prompts.labels).reshape(-1).tolist()
        if prompts.boxes is not None:
            record["boxes"] = np.asarray(prompts.boxes).tolist()
        return PromptMasks(
            mask=masks.reshape(b * k, h, w),
            score=scores.reshape(-1).astype(np.float32),
            prompt_index=np.repeat(np.arange(b, dtype=np.int64), k),
            logits=logits.reshape(b * k, *low_res.shape[-2:]).astype(np.float32),
            metadata=ResultMeta(
                image_shape=(h, w),
                backend=self.name,
                model_type=self.model_type,
                multimask_output=prompts.multimask,
                **record,
            ),
        )
