"""SAM 2 / SAM 2.1 through transformers: promptable image segmentation and video object tracking.

Why transformers (``Sam2Model`` / ``Sam2VideoModel``) rather than Meta's ``sam2`` package: it loads the
official checkpoints from the Hub in safetensors (no pickle), needs no Hydra configs or CUDA extension,
is already a dependency of this plugin, and its video model has a *streaming* mode (frames are given
one at a time) — the basis of bounded memory on long videos.

Memory on long videos: transformers keeps every processed frame and every frame's memory features in
the session. :meth:`Sam2Backend.track` streams frames from disk and, after each frame, drops what the
model can no longer read: pixels of past frames, and non-conditioning memories older than the
attention window (``max(num_maskmem, max_object_pointers_in_encoder)`` frames). Prompted
(conditioning) frames are kept. The masks are identical to transformers' own whole-video propagation
(tested), and resident memory stays flat.

Single images go through visionkit's prompt driver (:class:`visionkit.backend.SegmentsPrompts`): the
encoder is this backend's preprocess (the processor) → forward (``get_image_embeddings``) →
postprocess stages, and prompts follow the same grammar and checks as SAM's
(:func:`visionkit.prompts.parse_prompts`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from visionkit import (
    Backend,
    BackendOptions,
    Batch,
    InstanceMasks,
    InvalidPromptError,
    LimitExceededError,
    PromptMasks,
    ResultMeta,
    Task,
    load_image,
)
from visionkit.backend import Encoded, SegmentsPrompts
from visionkit.devices import resolve_torch_device
from visionkit.prompts import Prompts
from visionkit.tracking import TrackedFrame, iter_frames

__all__ = ["Sam2Backend", "Sam2Options", "load_sam2", "tiny_sam2_configs"]


class Sam2Options(BackendOptions):
    """Options of the ``sam2`` backend."""

    multimask_output: bool = Field(
        True, description="Single-image prompts: 3 ranked masks per single-click prompt (else 1)."
    )
    max_points: int = Field(64, ge=1, description="Most clicks in one prompt (each costs decoder work).")
    max_prompts: int = Field(64, ge=1, description="Most prompts (boxes / click groups) in one call.")
    max_objects: int = Field(64, ge=1, description="Most objects followed through one video.")
    cache_size: int = Field(4, ge=0, description="Image embeddings kept for repeated prompts on one image.")
    mask_threshold: float = Field(0.0, description="Mask logit above which a pixel belongs to the mask.")


def tiny_sam2_configs(image_size: int = 64) -> Any:
    """A randomly initialisable SAM 2 video config of ~2 M parameters (offline tests).

    Every size that transformers ties together is kept consistent: the memory attention's key width is
    fixed at 64 and object pointers are split into ``hidden / 64`` tokens, so ``hidden`` is 128.
    """
    from transformers import Sam2HieraDetConfig, Sam2VideoConfig, Sam2VisionConfig
    from transformers.models.sam2_video.configuration_sam2_video import (
        Sam2VideoMaskDecoderConfig,
        Sam2VideoPromptEncoderConfig,
    )

    s = image_size
    backbone = Sam2HieraDetConfig(
        hidden_size=12,
        image_size=s,
        patch_stride=4,
        patch_kernel_size=7,
        patch_padding=3,
        blocks_per_stage=[1, 2, 7, 2],
        embed_dim_per_stage=[12, 24, 48, 96],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[96, 48, 24, 12],
        backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
        fpn_hidden_size=128,
    )
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(
            image_size=s, patch_size=16, mask_input_channels=8, hidden_size=128
        ),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(
            hidden_size=128, mlp_dim=64, num_hidden_layers=2, num_attention_heads=4, iou_head_hidden_dim=32
        ),
        image_size=s,
        memory_attention_hidden_size=128,
        memory_encoder_hidden_size=128,
        mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=32,
        memory_attention_rope_feat_sizes=[s // 16, s // 16],
    )


def _processor(image_size: int) -> Any:
    from transformers import Sam2ImageProcessor, Sam2VideoProcessor, Sam2VideoVideoProcessor

    size = {"height": image_size, "width": image_size}
    mask = {"height": image_size // 4, "width": image_size // 4}
    return Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=size, mask_size=mask),
        video_processor=Sam2VideoVideoProcessor(size=size),
    )


@dataclass(frozen=True, eq=False)
class Sam2Embedding:
    """One image through SAM 2's vision encoder: the per-level features and the image's size."""

    features: list[Any]
    original_size: tuple[int, int]


class Sam2Backend(Backend[Sam2Options], SegmentsPrompts):
    """SAM 2: prompts on single images (a PromptSegmenter) and objects followed through videos."""

    name = "sam2"
    tasks: ClassVar[tuple[Task, ...]] = (Task.SEGMENT_PROMPT,)
    Options: ClassVar[type[BackendOptions]] = Sam2Options
    native_runtime: ClassVar[str] = "torch"

    def __init__(self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any):
        super().__init__(weights=weights, device=device, precision=precision, **options)
        import torch
        from transformers import Sam2VideoModel, Sam2VideoProcessor

        self._torch = torch
        self._dev = str(resolve_torch_device(self.device))
        if weights is None:
            torch.manual_seed(0)
            self.video_model = Sam2VideoModel(tiny_sam2_configs()).eval()
            self.processor = _processor(self.video_model.config.image_size)
        else:
            from visionkit_transformers._weights import find_checkpoint

            path = find_checkpoint(weights)
            self.video_model = Sam2VideoModel.from_pretrained(path, local_files_only=True).eval()
            self.processor = Sam2VideoProcessor.from_pretrained(path, local_files_only=True)
        self.video_model.to(self._dev)
        self.image_model = self._image_model()
        self._cache: dict[bytes, Sam2Embedding] = {}
        self._session: Any = None

    def _image_model(self) -> Any:
        """``Sam2Model`` sharing the video model's image weights (every image key exists there)."""
        from transformers import Sam2Config, Sam2Model

        vc = self.video_model.config
        cfg = Sam2Config(
            vision_config=vc.vision_config.to_dict(),
            prompt_encoder_config=vc.prompt_encoder_config.to_dict(),
            mask_decoder_config=vc.mask_decoder_config.to_dict(),
        )
        model = Sam2Model(cfg).eval()
        missing, _ = model.load_state_dict(self.video_model.state_dict(), strict=False)
        if missing:
            raise RuntimeError(f"SAM 2 video checkpoint lacks image weights: {missing[:5]}")
        return model.to(self._dev)

    # -- single images: the encoder stages -------------------------------------------------------
    def preprocess(self, images: list[np.ndarray], options: Sam2Options) -> Batch[Sam2Options]:
        """The processor's resize and normalisation to ``pixel_values``."""
        inputs = self.processor(images=images, return_tensors="pt")
        metas = [{"original_size": (int(im.shape[0]), int(im.shape[1]))} for im in images]
        return Batch(images, inputs["pixel_values"], metas, options)

    def forward(self, inputs: Any) -> Any:
        """The vision encoder: one feature tensor per level, batched."""
        with self._torch.inference_mode():
            return self.image_model.get_image_embeddings(inputs.to(self._dev))

    def postprocess(self, outputs: Any, batch: Batch[Sam2Options], task: Task) -> list[Any]:
        """One :class:`Sam2Embedding` per image."""
        return [
            Sam2Embedding([level[i : i + 1] for level in outputs], meta["original_size"])
            for i, meta in enumerate(batch.metas)
        ]

    def encode_image(self, image: Any) -> Encoded[Sam2Embedding]:
        """The image's embedding, from a small cache keyed by its pixels, else the encoder stages."""
        arr = load_image(image)
        key = _fingerprint(arr)
        with self.lock:  # one cache mutation at a time
            cached = self._cache.get(key)
            if cached is not None:
                return Encoded(cached, cached.original_size, cached=True)
            encoded: Encoded[Sam2Embedding] = self.encode_stages(arr)
            if self.options.cache_size:
                while len(self._cache) >= self.options.cache_size:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = encoded.embedding
        return encoded

    # -- single images: prompts and the decoder ---------------------------------------------------
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
        """Masks for points and/or boxes, in SAM's prompt grammar (:func:`visionkit.prompts.parse_prompts`).

        ``points`` ``(n, 2)`` with ``labels`` ``(n,)`` (1 foreground, 0 background; default 1) are one
        prompt, ``(b, n, 2)`` are b prompts; ``boxes`` ``(b, 4)`` are b prompts (``(n, 2)`` points are
        shared by every box). ``mask_input`` is a previous result's low-resolution ``logits[i]`` to refine.
        ``multimask_output`` defaults to the load-time option.
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
        return int(self.video_model.config.image_size) // 4

    def decode(self, embedding: Sam2Embedding, prompts: Prompts) -> Any:
        """Prompt encoder + mask decoder for every prompt at once (the processor maps the coordinates)."""
        torch = self._torch
        h, w = embedding.original_size
        inputs = self.processor(
            images=None,
            original_sizes=[[h, w]],
            input_points=None if prompts.points is None else [prompts.points.tolist()],
            input_labels=None if prompts.labels is None else [prompts.labels.tolist()],
            input_boxes=None if prompts.boxes is None else [prompts.boxes.tolist()],
            return_tensors="pt",
        )
        kwargs: dict[str, Any] = {k: v.to(self._dev) for k, v in inputs.items() if k.startswith("input_")}
        if prompts.mask_input is not None:
            masks = prompts.mask_input
            shared = bool(np.all(masks == masks[:1]))  # one mask for every prompt, as it was given
            kwargs["input_masks"] = torch.from_numpy(masks[:1] if shared else masks).to(self._dev)
        with torch.inference_mode():
            return self.image_model(
                image_embeddings=embedding.features, multimask_output=prompts.multimask, **kwargs
            )

    def prompt_result(self, encoded: Encoded[Sam2Embedding], prompts: Prompts, raw: Any) -> PromptMasks:
        """Masks at the image's size, best first within each prompt, with scores and low-res logits."""
        h, w = encoded.image_shape
        logits = raw.pred_masks[0].float().cpu()  # (prompts, k, h4, w4)
        full = self.processor.post_process_masks(
            [logits[None].reshape(1, -1, *logits.shape[-2:])], [[h, w]], binarize=False
        )[0][0]
        scores = raw.iou_scores[0].float().cpu().numpy()  # (prompts, k)
        n_prompts, k = scores.shape
        order = np.argsort(-scores, axis=1, kind="stable")  # best first within each prompt
        flat = (order + np.arange(n_prompts)[:, None] * k).reshape(-1)
        return PromptMasks(
            mask=full.numpy()[flat] > self.options.mask_threshold,
            score=scores.reshape(-1)[flat].astype(np.float32),
            prompt_index=np.repeat(np.arange(n_prompts), k).astype(np.int64),
            logits=logits.reshape(-1, *logits.shape[-2:]).numpy()[flat].astype(np.float32),
            metadata=ResultMeta(
                image_shape=(h, w),
                backend=self.name,
                points=[] if prompts.points is None else prompts.points.tolist(),
                boxes=[] if prompts.boxes is None else prompts.boxes.tolist(),
            ),
        )

    # -- videos -----------------------------------------------------------------------------------
    def track(
        self,
        source: Any,
        prompts: Mapping[int, Mapping[str, Any]],
        *,
        labels: Mapping[int, str] | None = None,
    ) -> Iterator[TrackedFrame]:
        """Follow prompted objects through ``source`` frame by frame (streamed; memory stays flat).

        Args:
            source: a video file, a folder of frames, a camera index / stream URL, or any iterable of images.
            prompts: ``{object_id: {"frame": k, "points": [(x, y), ...], "labels": [1, ...],
                "boxes": [[x1, y1, x2, y2]], "mask": HxW bool}}``; an object appears from its prompt's
                frame on. Several prompts for one id on different frames refine it:
                ``{id: [{"frame": 0, ...}, {"frame": 30, ...}]}``.
            labels: optional class name per object id (default ``"object"``).

        Yields:
            one :class:`~visionkit.tracking.TrackedFrame` per frame; ``result`` is an
            :class:`~visionkit.InstanceMasks` whose ``tracker_id`` are the object ids.
        """
        by_frame = _video_prompts(prompts, self.options)
        names = dict(labels or {})
        torch = self._torch
        model = self.video_model
        window = max(int(model.config.num_maskmem), int(model.config.max_object_pointers_in_encoder))
        name = str(source) if isinstance(source, (str, Path, int)) else "<frames>"
        with self.lock:
            session = self.processor.init_video_session(inference_device=self._dev)
            self._session = session  # readable while iterating (tests check it stays bounded)
            for index, frame in iter_frames(source):
                h, w = frame.shape[:2]
                inputs = self.processor(images=frame, device=self._dev, return_tensors="pt")
                for obj_id, prompt in by_frame.get(index, []):
                    _add_prompt(
                        self.processor, session, index, obj_id, prompt, inputs.original_sizes[0], (h, w)
                    )
                if session.get_obj_num() == 0:  # nothing prompted yet
                    yield TrackedFrame(index, name, InstanceMasks.empty((h, w), backend=self.name), frame)
                    continue
                with torch.inference_mode():
                    out = model(inference_session=session, frame=inputs.pixel_values[0], frame_idx=index)
                masks = self.processor.post_process_masks([out.pred_masks], [[h, w]], binarize=False)[0]
                present = out.object_score_logits.float().cpu().numpy().reshape(-1)
                result = self._frame_result(
                    frame, masks[:, 0] > self.options.mask_threshold, present, out.object_ids, names
                )
                _prune(session, index, window)
                yield TrackedFrame(index, name, result, frame)

    def _frame_result(
        self, frame: np.ndarray, masks: Any, present: np.ndarray, ids: list[int], names: Mapping[int, str]
    ) -> InstanceMasks:
        mask = masks.cpu().numpy()
        keep = [i for i in range(len(ids)) if present[i] > 0 and mask[i].any()]  # occluded objects: absent
        boxes = []
        for i in keep:
            ys, xs = np.nonzero(mask[i])
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        h, w = frame.shape[:2]
        return InstanceMasks(
            xyxy=np.asarray(boxes, np.float32).reshape(-1, 4),
            confidence=(1 / (1 + np.exp(-present[keep]))).astype(np.float32),
            class_id=np.zeros(len(keep), np.int64),
            class_name=tuple(names.get(int(ids[i]), "object") for i in keep),
            tracker_id=np.asarray([int(ids[i]) for i in keep], np.int64),
            mask=mask[keep].reshape(-1, h, w),
            metadata=self.meta(frame),
        )


def _prune(session: Any, index: int, window: int) -> None:
    """Drop what the streaming model will not read again: past pixels, memories outside the window."""
    for k in [k for k in session.processed_frames if k < index]:
        del session.processed_frames[k]
    oldest = index - window
    for obj_idx, outputs in session.output_dict_per_obj.items():
        stale = [k for k in outputs["non_cond_frame_outputs"] if k < oldest]
        for k in stale:
            del outputs["non_cond_frame_outputs"][k]
        tracked = session.frames_tracked_per_obj.get(obj_idx, {})
        for k in [k for k in tracked if k < oldest]:
            del tracked[k]


def _add_prompt(
    processor: Any,
    session: Any,
    index: int,
    obj_id: int,
    prompt: dict[str, Any],
    size: Any,
    hw: tuple[int, int],
) -> None:
    if prompt.get("mask") is not None:
        mask = np.asarray(prompt["mask"], bool)
        if mask.shape != hw:
            raise InvalidPromptError(f"mask prompt of object {obj_id} must be {hw}, but got {mask.shape}.")
        processor.add_inputs_to_inference_session(session, frame_idx=index, obj_ids=obj_id, input_masks=mask)
        return
    _check_bounds(prompt.get("points"), prompt.get("boxes"), hw)
    processor.add_inputs_to_inference_session(
        session,
        frame_idx=index,
        obj_ids=obj_id,
        input_points=None if prompt.get("points") is None else [[prompt["points"]]],
        input_labels=None if prompt.get("labels") is None else [[prompt["labels"]]],
        input_boxes=None if prompt.get("boxes") is None else [prompt["boxes"]],
        original_size=size,
    )


def _video_prompts(
    prompts: Mapping[int, Any], options: Sam2Options
) -> dict[int, list[tuple[int, dict[str, Any]]]]:
    if not isinstance(prompts, Mapping) or not prompts:
        raise InvalidPromptError(
            "prompts must be a non-empty dict {object_id: {'frame': k, 'boxes'|'points'|'mask': ...}}."
        )
    if len(prompts) > options.max_objects:
        raise LimitExceededError(
            "max_objects", len(prompts), options.max_objects, "Raise it with max_objects=N."
        )
    by_frame: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for obj_id, spec in prompts.items():
        if not isinstance(obj_id, (int, np.integer)) or isinstance(obj_id, bool):
            raise InvalidPromptError(f"object ids must be ints, but got {obj_id!r}.")
        for one in spec if isinstance(spec, (list, tuple)) else [spec]:
            if not isinstance(one, Mapping):
                raise InvalidPromptError(f"prompt of object {obj_id} must be a dict, but got {one!r}.")
            unknown = set(one) - {"frame", "points", "labels", "boxes", "mask"}
            if unknown:
                raise InvalidPromptError(f"prompt of object {obj_id} has unknown keys {sorted(unknown)}.")
            frame = one.get("frame", 0)
            if not isinstance(frame, (int, np.integer)) or frame < 0:
                raise InvalidPromptError(f"frame of object {obj_id} must be an int >= 0, but got {frame!r}.")
            parsed = _one_video_prompt(int(obj_id), one, options)
            by_frame.setdefault(int(frame), []).append((int(obj_id), parsed))
    return by_frame


def _one_video_prompt(obj_id: int, one: Mapping[str, Any], options: Sam2Options) -> dict[str, Any]:
    if one.get("mask") is not None:
        if one.get("points") is not None or one.get("boxes") is not None:
            raise InvalidPromptError(
                f"object {obj_id}: a mask prompt cannot be combined with points or boxes."
            )
        return {"mask": one["mask"]}
    pts = _numbers(one.get("points"), (-1, 2), "points")
    bxs = _numbers(one.get("boxes"), (-1, 4), "boxes")
    if pts is None and bxs is None:
        raise InvalidPromptError(f"object {obj_id}: give points, boxes or a mask.")
    if bxs is not None and len(bxs) != 1:
        raise InvalidPromptError(f"object {obj_id}: one box per object, but got {len(bxs)}.")
    lbl = None
    if pts is not None:
        if len(pts) > options.max_points:
            raise LimitExceededError(
                "max_points", len(pts), options.max_points, "Raise it with max_points=N."
            )
        raw = one.get("labels")
        lbl = [1] * len(pts) if raw is None else [int(v) for v in np.asarray(raw).reshape(-1)]
        if len(lbl) != len(pts) or any(v not in (0, 1) for v in lbl):
            raise InvalidPromptError(
                f"object {obj_id}: labels must be {len(pts)} values of 0 or 1, but got {raw!r}."
            )
    return {"points": pts, "labels": lbl, "boxes": bxs}


def _numbers(value: Any, shape: tuple[int, int], what: str) -> list[list[float]] | None:
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidPromptError(
            f"{what} must be a list of {shape[1]} numbers each, but got {value!r}."
        ) from None
    if arr.ndim == 1 and arr.shape[0] == shape[1]:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != shape[1] or not len(arr) or not np.all(np.isfinite(arr)):
        raise InvalidPromptError(
            f"{what} must be a list of {shape[1]} finite numbers each, but got {value!r}."
        )
    if shape[1] == 4 and np.any(arr[:, 2:] < arr[:, :2]):
        raise InvalidPromptError(
            f"{what} must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1, but got {value!r}."
        )
    out: list[list[float]] = arr.tolist()
    return out


def _check_bounds(points: Any, boxes: Any, hw: tuple[int, int]) -> None:
    h, w = hw
    for what, value in (("points", points), ("boxes", boxes)):
        if value is None:
            continue
        arr = np.asarray(value, np.float64).reshape(len(value), -1)
        xs, ys = arr[:, 0::2], arr[:, 1::2]
        if xs.min() < 0 or ys.min() < 0 or xs.max() > w or ys.max() > h:
            raise InvalidPromptError(f"{what} {value!r} fall outside the {w}x{h} image.")


def _fingerprint(arr: np.ndarray) -> bytes:
    import hashlib

    return hashlib.blake2b(arr.tobytes(), digest_size=16, key=repr(arr.shape).encode()).digest()


def load_sam2(*, weights: Any = None, **kwargs: Any) -> Sam2Backend:
    """Factory registered as ``sam2``: a Hub id / checkpoint directory, or ``None`` for a tiny random model."""
    return Sam2Backend(weights=weights, **kwargs)
