"""Text-prompted (open-vocabulary) detectors: OWLv2, OWL-ViT, Grounding DINO, MM-Grounding-DINO, OmDet-Turbo.

Each is a :class:`visionkit.TextPromptedDetector`: ``detect(images, classes=["red car", "person"])``
returns :class:`visionkit.Detections` whose ``class_name`` is the asked name and ``class_id`` its index
in ``classes``. ``classes`` is an ordinary option (load time or per call), checked by
:func:`visionkit.prompts.parse_classes` and capped by ``max_classes``.

Stages (see :class:`visionkit.Backend`)::

    preprocess   images → image processor → pixel_values (+ pixel_mask); classes → tokenizer → input_ids ...
    forward      network(*inputs) → (logits, pred_boxes)
    postprocess  the processor's own post-processing at each image's size → names → visionkit Detections

How the names become text, as each model's processor does it:

- OWLv2 / OWL-ViT: one text query per name (CLIP tokenizer, padded to the model's 16 tokens); ``logits``
  has one column per query, so the label *is* the class id.
- Grounding DINO / MM-Grounding-DINO: one prompt ``"red car. person."`` (names lower-cased, joined by
  ``". "``); ``logits`` has one column per prompt token. The score and box are the processor's (best
  token of the prompt); the class is the name holding the best-scoring name token. transformers'
  ``text_labels`` instead decode every token above ``text_threshold``, which may span several names or
  none; visionkit always names exactly one.
- OmDet-Turbo: each name encoded on its own plus a task prompt ``"Detect red car, person."``; the
  processor scores every (query, name) pair and applies per-name NMS, so the label is the class id.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import transformers

from visionkit import (
    Batch,
    Detections,
    Detects,
    InvalidOptionError,
    InvalidPromptError,
    Task,
    WeightsNotFoundError,
)
from visionkit.errors import ExportNotSupportedError
from visionkit.prompts import parse_classes
from visionkit_transformers._backend import _HFBackend, _keep_best, _pad_edges, _targets, size_kwargs
from visionkit_transformers._options import (
    GroundingDinoOptions,
    HFOptions,
    OmDetTurboOptions,
    OwlOptions,
    TextPromptedOptions,
)

__all__ = [
    "GroundingDinoBackend",
    "MMGroundingDinoBackend",
    "OmDetTurboBackend",
    "OwlViTBackend",
    "Owlv2Backend",
]

#: ``metadata.label_space`` of every result: ids index the ``classes`` of that call.
LABEL_SPACE = "classes"


class _TextNetwork(torch.nn.Module):
    """The model with positional tensor inputs (+ fixed keyword arguments) and a tuple of outputs."""

    def __init__(
        self,
        model: torch.nn.Module,
        output_keys: tuple[str, ...],
        input_names: tuple[str, ...],
        extra: dict[str, Any],
    ) -> None:
        super().__init__()
        self.model = model
        self.output_keys = output_keys
        self.input_names = input_names
        self.extra = extra

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.input_names, inputs, strict=True)), **self.extra, return_dict=True)
        return tuple(out[k] for k in self.output_keys)


class _TextPromptedBackend(_HFBackend, Detects):
    """Shared loading, image + text preprocessing and result building of the text-prompted detectors."""

    #: What tells a text-prompted detector from a closed-set one (:class:`visionkit.TextPromptedDetector`).
    open_vocabulary: ClassVar[bool] = True
    tasks = (Task.DETECT,)
    Options: ClassVar[type[HFOptions]] = TextPromptedOptions
    output_keys = ("logits", "pred_boxes")
    sensitive_outputs = ("pred_boxes",)

    def __init__(
        self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any
    ) -> None:
        super().__init__(weights=weights, device=device, precision=precision, **options)
        self.label_space = LABEL_SPACE
        opts: TextPromptedOptions = self.options
        if opts.classes is not None:  # a bad load-time list fails at load, not at the first call
            self._check_classes(parse_classes(opts.classes, max_classes=opts.max_classes))

    # -- loading --------------------------------------------------------------------------------
    @property
    def image_processor(self) -> Any:
        """The processor's image half (resize, normalise, pad)."""
        return self.processor.image_processor

    @property
    def tokenizer(self) -> Any:
        """The processor's tokenizer."""
        return self.processor.tokenizer

    def _load_processor(self, path: Path, opts: HFOptions) -> Any:
        try:
            return transformers.AutoProcessor.from_pretrained(
                path, local_files_only=True, trust_remote_code=opts.trust_remote_code
            )
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise WeightsNotFoundError(
                str(path),
                [f"{path} (has the model, but its processor cannot be loaded: {type(exc).__name__}: {exc})"],
                "A text-prompted detector needs its image processor and tokenizer next to the model: "
                "`processor.save_pretrained(dir)` with the model's processor (e.g. Owlv2Processor).",
            ) from exc

    def _labels(self, override: dict[int, str] | None) -> dict[int, str]:
        if override:
            raise InvalidOptionError(
                f"Option id2label does not apply to backend {self.name!r}: class names are what you ask "
                "for with classes=[...].",
                key="id2label",
            )
        return {}

    def class_name(self, class_id: int) -> str:
        """The load-time class name of ``class_id`` (per-call ``classes`` name results themselves)."""
        names = self.class_names
        return names[class_id] if 0 <= class_id < len(names) else str(int(class_id))

    @property
    def class_names(self) -> tuple[str, ...]:
        """The load-time ``classes`` (empty when they are given per call)."""
        opts: TextPromptedOptions = self.options
        return tuple(" ".join(c.split()) for c in opts.classes or ())

    # -- sizes (the processor's image half holds them) ------------------------------------------
    def _size_kwargs(self, opts: HFOptions) -> dict[str, Any]:
        return size_kwargs(self.name, opts, self.image_processor.size)

    def _effective_size(self, opts: HFOptions) -> dict[str, int]:
        size = self._size_kwargs(opts).get("size") or dict(self.image_processor.size)
        return {k: int(v) for k, v in size.items() if isinstance(v, int)}

    # -- text -----------------------------------------------------------------------------------
    def _classes(self, opts: TextPromptedOptions) -> tuple[str, ...]:
        if opts.classes is None:
            raise InvalidPromptError(
                f"Backend {self.name!r} finds what you name: pass classes=['person', 'red car'] (per call or "
                f"to visionkit.load; CLI: --classes person 'red car')."
            )
        names = parse_classes(opts.classes, max_classes=opts.max_classes)
        self._check_classes(names)
        return names

    def _check_classes(self, names: tuple[str, ...]) -> None:
        """Refuse names this model cannot read (too long, separators ...); overridden per model."""

    def _encode_text(
        self, names: tuple[str, ...], n_images: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Token tensors for ``n_images`` images asking for ``names``, and what postprocess needs."""
        raise NotImplementedError

    #: Extra keyword arguments of the model's forward (e.g. OWL's ``interpolate_pos_encoding``).
    def _forward_kwargs(self, opts: HFOptions) -> dict[str, Any]:
        return {}

    # -- stages ---------------------------------------------------------------------------------
    def preprocess(self, images: list[np.ndarray], options: HFOptions) -> Batch[Any]:
        """Images through the image processor (one batch), names through the tokenizer (once per image)."""
        opts: TextPromptedOptions = options  # type: ignore[assignment]
        names = self._classes(opts)
        self._check_limits(options)
        size = self._effective_size(options)
        pads = [self._thin_padding(im, size) for im in images]
        arrays = [_pad_edges(im, pad) for im, pad in zip(images, pads, strict=True)]
        arrays = [im if im.flags.writeable else im.copy() for im in arrays]
        feats = self.image_processor(
            images=arrays,
            return_tensors="pt",
            input_data_format="channels_last",
            **self._size_kwargs(options),
        )
        text, extra = self._encode_text(names, len(images))
        tensors = {**text, **{k: feats[k] for k in ("pixel_values", "pixel_mask") if k in feats}}
        names_in = tuple(tensors)
        self._input_names = names_in
        self._extra_kwargs = self._forward_kwargs(options)
        values, mask = feats["pixel_values"], feats.get("pixel_mask")
        metas = []
        for i in range(len(images)):
            valid = (
                (int(values.shape[-2]), int(values.shape[-1]))
                if mask is None
                else (int(mask[i].any(dim=1).sum()), int(mask[i].any(dim=0).sum()))
            )
            metas.append(
                {
                    "valid": valid,
                    "padded": (int(values.shape[-2]), int(values.shape[-1])),
                    "target": (int(arrays[i].shape[0]), int(arrays[i].shape[1])),
                }
            )
        inputs = tuple(
            tensors[n].to(self.torch_device, dtype=self.dtype if n == "pixel_values" else None)
            for n in names_in
        )
        return Batch(images, inputs, metas, options, extra={"classes": names, **extra})

    @property
    def network(self) -> Any:
        """The model as ``forward`` runs it: positional inputs, a tuple of :attr:`output_keys`."""
        if self._input_names is None:
            raise InvalidPromptError(
                f"Backend {self.name!r} has not seen any classes yet; call detect first."
            )
        return _TextNetwork(
            self.model, self.output_keys, self._input_names, getattr(self, "_extra_kwargs", {})
        )

    def export_spec(self) -> Any:
        """Text-prompted detectors run in torch only (the text encoder would need its own export)."""
        raise ExportNotSupportedError(
            f"Backend {self.name!r} is a text-prompted detector and cannot be exported to another runtime yet; "
            "run it in torch (fp32, or fp16 on a GPU)."
        )

    def _found(self, outputs: Any, batch: Batch[Any]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per image ``(scores, boxes xyxy, class ids)`` in target pixels, as the processor gives them."""
        raise NotImplementedError

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """The model's own post-processing, then names, limits, clipping and visionkit types."""
        opts: TextPromptedOptions = batch.options
        names: tuple[str, ...] = batch.extra["classes"]
        results = []
        for (scores, boxes, ids), image, meta in zip(
            self._found(outputs, batch), batch.images, batch.metas, strict=True
        ):
            h, w = int(image.shape[0]), int(image.shape[1])
            if opts.clip_boxes or tuple(meta["target"]) != (h, w):  # thin image: nothing only in the padding
                boxes = np.clip(boxes, 0, [w, h, w, h])
                inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                scores, boxes, ids = scores[inside], boxes[inside], ids[inside]
            keep = _keep_best(scores, opts.max_detections)
            keep = keep[np.argsort(-scores[keep], kind="stable")]  # most confident first, ties in query order
            scores, boxes, ids = scores[keep], boxes[keep], ids[keep]
            results.append(
                Detections(
                    xyxy=boxes.astype(np.float32),
                    confidence=scores.astype(np.float32),
                    class_id=ids.astype(np.int64),
                    class_name=tuple(names[int(i)] for i in ids),
                    metadata=self.meta(image),
                )
            )
        return results


def _numpy(r: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    scores = r["scores"].detach().float().cpu().numpy()
    boxes = r["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
    return scores, boxes


# -- OWL-ViT / OWLv2 -------------------------------------------------------------------------------
class Owlv2Backend(_TextPromptedBackend):
    """OWLv2 (``Owlv2ForObjectDetection``): one CLIP text query per name, a box per image patch.

    The image is padded to a square (grey, bottom/right) and resized to 960x960, so a batch is exact. Like
    transformers, no NMS is applied: overlapping boxes of one object may each be returned.
    """

    name = "owlv2"
    kind = "owlv2"
    Options = OwlOptions
    model_class = "Owlv2ForObjectDetection"

    @property
    def _max_tokens(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def _check_classes(self, names: tuple[str, ...]) -> None:
        lengths = [len(ids) for ids in self.tokenizer(list(names))["input_ids"]]
        for name, n in zip(names, lengths, strict=True):
            if n > self._max_tokens:
                raise InvalidPromptError(
                    f"Class name {name!r} is {n} tokens long, but backend {self.name!r} reads at most "
                    f"{self._max_tokens} tokens per name (with start and end tokens); shorten it."
                )

    def _encode_text(
        self, names: tuple[str, ...], n_images: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        # what Owlv2Processor(text=[names] * n) does: padded to max_length, queries of all images stacked
        enc = self.tokenizer(list(names), padding="max_length", return_tensors="pt")
        return {
            "input_ids": enc["input_ids"].repeat(n_images, 1),
            "attention_mask": enc["attention_mask"].repeat(n_images, 1),
        }, {}

    def _forward_kwargs(self, opts: HFOptions) -> dict[str, Any]:
        size = self._effective_size(opts)
        trained = int(self.model.config.vision_config.image_size)
        # another input size needs the position embeddings (and box bias) interpolated
        other = (size.get("height", trained), size.get("width", trained)) != (trained, trained)
        return {"interpolate_pos_encoding": True} if other else {}

    def _found(self, outputs: Any, batch: Batch[Any]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        opts: OwlOptions = batch.options
        found = self.processor.post_process_grounded_object_detection(
            self._outputs(outputs), threshold=opts.threshold, target_sizes=_targets(batch)
        )
        out = []
        for r in found:
            scores, boxes = _numpy(r)
            out.append((scores, boxes, r["labels"].detach().cpu().numpy().astype(np.int64)))
        return out


class OwlViTBackend(Owlv2Backend):
    """OWL-ViT (``OwlViTForObjectDetection``): as OWLv2, images resized (not padded) to the model's size."""

    name = "owlvit"
    kind = "owlvit"
    model_class = "OwlViTForObjectDetection"


# -- Grounding DINO ----------------------------------------------------------------------------------
#: Characters Grounding DINO reads as phrase separators (its hard-coded special tokens ``.`` and ``?``).
_SEPARATORS = (".", "?")


class GroundingDinoBackend(_TextPromptedBackend):
    """Grounding DINO (``GroundingDinoForObjectDetection``): the names joined into ``"a. b. c."``.

    Score and box of each query are transformers' ``post_process_grounded_object_detection`` (the best
    token of the whole prompt, above ``threshold``); the class is the name holding the best-scoring name
    token. Images are resized aspect-kept (800/1333) and padded to a batch: like DETR, a batch may move
    boxes slightly compared with one image alone.
    """

    name = "grounding-dino"
    kind = "grounding-dino"
    Options = GroundingDinoOptions
    model_class = "GroundingDinoForObjectDetection"

    @staticmethod
    def prompt(names: tuple[str, ...]) -> tuple[str, list[tuple[int, int]]]:
        """The text prompt for ``names`` (as the processor builds it) and each name's character span in it."""
        parts, spans, at = [], [], 0
        for name in names:
            label = name.strip().lower()
            spans.append((at, at + len(label)))
            parts.append(label)
            at += len(label) + 2  # ". "
        return ". ".join(parts) + ".", spans

    def _check_classes(self, names: tuple[str, ...]) -> None:
        for name in names:
            bad = [c for c in _SEPARATORS if c in name]
            if bad:
                raise InvalidPromptError(
                    f"Class name {name!r} holds {bad[0]!r}, which backend {self.name!r} reads as the end of a "
                    "name; remove it."
                )
        text, _ = self.prompt(names)
        n = len(self.tokenizer(text)["input_ids"])
        limit = int(self.model.config.max_text_len)
        if n > limit:
            raise InvalidPromptError(
                f"The prompt of {len(names)} class names is {n} tokens, but backend {self.name!r} reads at most "
                f"{limit}; ask for fewer (or shorter) names per call."
            )

    def _encode_text(
        self, names: tuple[str, ...], n_images: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        text, spans = self.prompt(names)
        enc = self.tokenizer([text] * n_images, return_tensors="pt", return_offsets_mapping=True)
        offsets = enc.pop("offset_mapping")[0].tolist()
        # token t belongs to name i when its characters lie inside name i's span (specials are (0, 0))
        token_class = np.full(len(offsets), -1, np.int64)
        for t, (start, end) in enumerate(offsets):
            for i, (s, e) in enumerate(spans):
                if end > start and s <= start and end <= e:
                    token_class[t] = i
                    break
        return dict(enc), {"token_class": token_class, "input_ids": enc["input_ids"]}

    def _found(self, outputs: Any, batch: Batch[Any]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        opts: GroundingDinoOptions = batch.options
        out = self._outputs(outputs)
        found = self.processor.post_process_grounded_object_detection(
            out,
            input_ids=batch.extra["input_ids"],
            threshold=opts.threshold,
            text_threshold=1.0,  # visionkit names boxes itself (below); no text labels to decode
            target_sizes=_targets(batch),
        )
        token_class = batch.extra["token_class"]
        n_names = len(batch.extra["classes"])
        probs = torch.sigmoid(out["logits"])  # (batch, queries, max_text_len)
        results = []
        for r, p in zip(found, probs, strict=True):
            scores, boxes = _numpy(r)
            kept = p[p.max(dim=-1).values > opts.threshold].cpu().numpy()  # the queries the processor kept
            per_name = np.full((len(kept), n_names), -math.inf, np.float32)
            for i in range(n_names):
                cols = np.flatnonzero(token_class == i)
                if len(cols):
                    per_name[:, i] = kept[:, cols].max(axis=1)
            results.append((scores, boxes, per_name.argmax(axis=1).astype(np.int64)))
        return results


class MMGroundingDinoBackend(GroundingDinoBackend):
    """MM-Grounding-DINO (``MMGroundingDinoForObjectDetection``, OpenMMLab's re-training): as Grounding DINO."""

    name = "mm-grounding-dino"
    kind = "mm-grounding-dino"
    model_class = "MMGroundingDinoForObjectDetection"


# -- OmDet-Turbo ---------------------------------------------------------------------------------------
class OmDetTurboBackend(_TextPromptedBackend):
    """OmDet-Turbo (``OmDetTurboForObjectDetection``): names and a ``"Detect a, b."`` task prompt, per-name NMS.

    The processor's post-processing ranks every (query, name) pair, so one box may come back under two
    names; it clips boxes to the image and applies NMS per name (``nms_threshold``).
    """

    name = "omdet-turbo"
    kind = "omdet-turbo"
    Options = OmDetTurboOptions
    model_class = "OmDetTurboForObjectDetection"
    output_keys = ("decoder_coord_logits", "decoder_class_logits")
    sensitive_outputs = ("decoder_coord_logits",)

    def _check_classes(self, names: tuple[str, ...]) -> None:
        for name in names:
            if "," in name:  # the task prompt lists the names with commas
                raise InvalidPromptError(
                    f"Class name {name!r} holds ',', which backend {self.name!r} reads as the end of a name; "
                    "remove it."
                )

    def _encode_text(
        self, names: tuple[str, ...], n_images: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        # what OmDetTurboProcessor(text=[names] * n) does: 77 tokens, padded and truncated
        kw = {"padding": "max_length", "truncation": True, "max_length": 77, "return_tensors": "pt"}
        task = self.tokenizer([f"Detect {', '.join(names)}."] * n_images, **kw)
        classes = self.tokenizer(list(names) * n_images, **kw)
        structure = torch.full((n_images,), len(names), dtype=torch.long)
        tensors = {
            "classes_input_ids": classes["input_ids"],
            "classes_attention_mask": classes["attention_mask"],
            "tasks_input_ids": task["input_ids"],
            "tasks_attention_mask": task["attention_mask"],
            "classes_structure": structure,
        }
        return tensors, {"classes_structure": structure}

    def _found(self, outputs: Any, batch: Batch[Any]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        opts: OmDetTurboOptions = batch.options
        out = self._outputs(outputs)
        out["classes_structure"] = batch.extra["classes_structure"]
        found = self.processor.post_process_grounded_object_detection(
            out, threshold=opts.threshold, nms_threshold=opts.nms_threshold, target_sizes=_targets(batch)
        )
        results = []
        for r in found:
            scores, boxes = _numpy(r)
            ids = r["labels"].detach().cpu().numpy().astype(np.int64)
            # the processor's top-k is unsorted, so equal scores come in no set order: fix one (name, box)
            order = np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], ids))
            results.append((scores[order], boxes[order], ids[order]))
        return results
