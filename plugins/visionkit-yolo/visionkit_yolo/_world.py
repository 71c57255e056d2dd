"""YOLO-World and YOLOE: ultralytics detectors told what to find by name (open vocabulary).

``detect(images, classes=["red car", "person"])``: the names go through a text encoder (CLIP ViT-B/32 for
YOLO-World, MobileCLIP for YOLOE) into one embedding each, and the network scores every box against
those embeddings, so ``class_name`` is the asked name and ``class_id`` its index in ``classes``.

Stages, as for the closed-set backends (``_backend.py``): the same letterbox and NMS, with two additions.

preprocess   checks ``classes`` (:func:`visionkit.prompts.parse_classes`), looks their embeddings up in a
             per-name cache (a miss runs the text encoder once for the missing names), then letterboxes.
forward      the network with the class embeddings as a second input (``_TextNet``): ultralytics'
             ``WorldModel.predict`` / ``YOLOEModel.predict`` loop without their per-model state
             (``txt_feats``, ``pe``), and the head decoded statelessly in fp32 as ``_DecodeNet`` does.
postprocess  ultralytics' NMS over ``len(classes)`` classes, names from the call.

The text encoder is ultralytics' own (``model.get_text_pe``, which builds ``build_text_model`` and
downloads its weights on first use, as ``set_classes`` does online). Offline, or to use another encoder,
set :attr:`OpenVocabularyDetector.text_encoder` to a function ``names -> (n, d)`` text features, or load a
checkpoint saved with a vocabulary (then ``classes`` may be left out).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from ultralytics.nn import tasks as ul_tasks
from ultralytics.nn.modules.block import C2fAttn, ImagePoolingAttn
from ultralytics.nn.modules.head import WorldDetect, YOLOEDetect, YOLOESegment

from visionkit import (
    BackendError,
    BackendUnavailableError,
    Batch,
    Detects,
    InvalidOptionError,
    InvalidPromptError,
    SegmentsInstances,
    Task,
)
from visionkit.export import ExportNotSupportedError, ExportSpec
from visionkit.prompts import parse_classes
from visionkit_yolo._backend import (
    RANDOM_SEED,
    _DecodeNet,
    _Letterboxed,
    _read_yaml,
    _seeded_build,
)
from visionkit_yolo._options import WorldOptions, YoloeOptions

__all__ = ["OpenVocabularyDetector", "TextEncoder", "YoloWorldDetector", "YoloeSegmenter"]

#: A text encoder: class names in, one feature row per name out (``(n, d)``; ``(1, n, d)`` is accepted),
#: as CLIP / MobileCLIP ``encode_text`` returns them (L2-normalised).
TextEncoder = Callable[[list[str]], Any]

#: Names kept in the text-embedding cache of one backend (each a few KiB); least recently used go first.
TEXT_CACHE_SIZE = 4096

_CLIP_HINT = "pip install git+https://github.com/ultralytics/CLIP.git  (the text encoder ultralytics uses)"


@dataclasses.dataclass(frozen=True)
class TextPromptedInputs:
    """What ``preprocess`` hands to ``forward``: the letterboxed images and the ``(1, n, d)`` class embeddings."""

    images: Any
    text: torch.Tensor


# -- building -------------------------------------------------------------------------------------------
def _model_classes() -> dict[str, type[torch.nn.Module]]:
    return {
        "WorldDetect": ul_tasks.WorldModel,
        "YOLOEDetect": ul_tasks.YOLOEModel,
        "YOLOESegment": ul_tasks.YOLOESegModel,
        "YOLOESegment26": ul_tasks.YOLOESegModel,
    }


def _build_from_yaml(cfg: str, family: str, trust: bool) -> torch.nn.Module:
    """A seeded random YOLO-World / YOLOE model from an ultralytics yaml, built without ``eval`` unless trusted.

    The closed-set builder of ``_backend.py`` knows only detect/segment/classify models; this picks the
    open-vocabulary model class and builds it the same way (:func:`_seeded_build`).
    """
    d = _read_yaml(cfg, example=_DEFAULT_YAML[family])
    head = str(d.get("head", [[None, None, ""]])[-1][2])
    cls = _model_classes().get(head)
    if cls is None or _family_of(cls) != family:
        raise InvalidOptionError(
            f"Model yaml {cfg!r} builds a {head or 'model'!r} head; backend {_BACKEND[family]!r} needs a "
            f"{'YOLO-World (WorldDetect)' if family == 'world' else 'YOLOE (YOLOEDetect/YOLOESegment)'} yaml "
            f"such as {_DEFAULT_YAML[family]!r}."
        )
    return _seeded_build(cls, d, cfg, trust)


def _family_of(cls: type) -> str:
    return "world" if issubclass(cls, ul_tasks.WorldModel) else "yoloe"


_DEFAULT_YAML = {"world": "yolov8s-worldv2.yaml", "yoloe": "yoloe-11s-seg.yaml"}
_BACKEND = {"world": "yolo-world", "yoloe": "yoloe"}


_PLAIN_HEADS = (WorldDetect, YOLOEDetect, YOLOESegment)


# -- the network with a text input ----------------------------------------------------------------------
class _TextNet(_DecodeNet):
    """``(images, class embeddings) -> preds`` or ``(preds, protos)``, as ``_DecodeNet`` returns them.

    The body runs as ultralytics' ``WorldModel.predict`` / ``YOLOEModel.predict`` (text-attention layers
    get the embeddings), with the embeddings passed in rather than read from the model, so calls with
    different classes never share state. Plain heads are decoded here in fp32 with per-shape anchors; an
    end-to-end head (YOLOE-26) runs as ultralytics built it (the backend's lock serialises its state).
    """

    def __init__(self, model: Any, segment: bool, world: bool) -> None:
        super().__init__(model, segment)
        head = model.model[-1]
        self.world = world
        #: Decode the head here (stateless, fp32): the v8/11 heads; end-to-end ones (YOLOE-26) run as built.
        self.decode_here = type(head) in _PLAIN_HEADS and not bool(getattr(head, "end2end", False))

    def forward(  # type: ignore[override]
        self, images: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        layers = model.model
        b = images.shape[0]
        txt = text.to(device=images.device, dtype=images.dtype).expand(b, -1, -1)
        ori = txt.clone()  # WorldDetect scores against the embeddings before ImagePoolingAttn updates them
        x: Any = images
        y: list[Any] = []
        for m in layers[:-1]:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            if self.world and isinstance(m, C2fAttn):
                x = m(x, txt)
            elif self.world and isinstance(m, ImagePoolingAttn):
                txt = m(x, txt)
            else:
                x = m(x)
            y.append(x if m.i in model.save else None)
        head = layers[-1]
        feats = [x if j == -1 else y[j] for j in head.f]
        if not self.decode_here:
            out = head(feats, ori) if self.world else head([*feats, txt])
            out = out[0] if isinstance(out, tuple) else out  # eval: (y, raw) or ((y, protos), raw)
            return (out[0], out[1]) if self.segment else out
        n = txt.shape[1]
        if self.world:
            raw = {
                "boxes": torch.cat(
                    [head.cv2[i](feats[i]).view(b, 4 * head.reg_max, -1) for i in range(head.nl)], -1
                ),
                "scores": torch.cat(
                    [head.cv4[i](head.cv3[i](feats[i]), ori).view(b, n, -1) for i in range(head.nl)], -1
                ),
            }
        else:
            raw = head.forward_head([*feats, txt], **head.one2many)
        protos = head.proto(feats[0]) if self.segment else None
        with torch.autocast(feats[0].device.type, enabled=False):
            anchors, strides = self._anchors(feats)
            boxes = head.decode_bboxes(self.dfl(raw["boxes"].float()), anchors.unsqueeze(0)) * strides
            parts = [boxes, raw["scores"].float().sigmoid()]
            if self.segment:
                parts.append(raw["mask_coefficient"].float())
            preds = torch.cat(parts, 1)
        if protos is not None:
            return preds, protos.float()
        return preds


# -- the backends ---------------------------------------------------------------------------------------
class OpenVocabularyDetector(_Letterboxed):
    """Shared by YOLO-World and YOLOE: class names in, per-name text embeddings, letterbox + NMS out.

    Attributes:
        open_vocabulary: always True (:class:`visionkit.TextPromptedDetector`).
        text_encoder: ``None`` (default) runs ultralytics' own text encoder (``model.get_text_pe``: CLIP
            ViT-B/32 for YOLO-World, the checkpoint's MobileCLIP for YOLOE; weights downloaded on first
            use). Set a function ``names -> (n, d)`` raw text features to use another (e.g. offline, a
            locally stored CLIP); cached embeddings are dropped when it changes.
    """

    open_vocabulary: ClassVar[bool] = True
    family: ClassVar[str] = "world"

    def __init__(
        self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any
    ) -> None:
        self._text_encoder: TextEncoder | None = None
        self._text_cache: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        self._vocabulary: tuple[tuple[str, ...], torch.Tensor] | None = None
        self._model_names: dict[int, str] = {}
        self._call_names: dict[int, str] | None = None
        self._call_thread = 0
        super().__init__(weights=weights, device=device, precision=precision, **options)

    # -- names: the call's classes while a call runs on this thread, else the checkpoint's ------------
    @property
    def names(self) -> dict[int, str]:
        """Class names by id: the classes of the call running on this thread, else the checkpoint's."""
        if self._call_names is not None and self._call_thread == threading.get_ident():
            return self._call_names
        return self._model_names

    @names.setter
    def names(self, value: dict[int, str]) -> None:
        self._model_names = value

    @property
    def text_encoder(self) -> TextEncoder | None:
        """The text encoder in use (``None``: ultralytics' own); see the class docstring."""
        return self._text_encoder

    @text_encoder.setter
    def text_encoder(self, encoder: TextEncoder | None) -> None:
        if encoder is not None and not callable(encoder):
            raise InvalidOptionError(
                f"text_encoder must be a function names -> (n, d) features or None, but got "
                f"{type(encoder).__name__}.",
                key="text_encoder",
            )
        with self.lock:
            self._text_encoder = encoder
            self._text_cache.clear()  # embeddings of another encoder do not mix with these

    @property
    def vocabulary(self) -> tuple[str, ...] | None:
        """The class names the checkpoint was saved with (used when no ``classes`` are given), or None."""
        return None if self._vocabulary is None else self._vocabulary[0]

    # -- loading ------------------------------------------------------------------------------------
    def _load_model(self, weights: Any) -> torch.nn.Module | None:
        if weights is None:
            self._weights_id = f"random-{Path(self.default_yaml).stem}-seed{RANDOM_SEED}"
            return _build_from_yaml(self.default_yaml, self.family, self.options.trust_pickle)
        name = os.fspath(weights)
        suffix = Path(name).suffix.lower()
        if suffix in (".yaml", ".yml"):
            self._weights_id = f"random-{Path(name).stem}-seed{RANDOM_SEED}"
            return _build_from_yaml(name, self.family, self.options.trust_pickle)
        if suffix == ".onnx":
            raise InvalidOptionError(
                f"Backend {self.name!r} needs a .pt checkpoint or a model yaml: an ONNX export of "
                f"{Path(name).name!r} has its classes baked in (load it with visionkit.load('yolo', ...))."
            )
        return super()._load_model(weights)

    def _read_model(self, model: Any) -> None:
        want = ul_tasks.WorldModel if self.family == "world" else ul_tasks.YOLOEModel
        if not isinstance(model, want):
            raise InvalidOptionError(
                f"Weights {str(self.weights)!r} hold an ultralytics {type(model).__name__}, not a "
                f"{want.__name__}; backend {self.name!r} needs "
                f"{'a YOLO-World checkpoint (yolov8s-worldv2.pt ...)' if self.family == 'world' else 'a YOLOE checkpoint (yoloe-11s-seg.pt ...)'}"
                ". A closed-set model loads with visionkit.load('yolo', ...)."
            )
        layers: Any = model.model
        head = layers[-1]
        if hasattr(head, "lrpc"):
            raise InvalidOptionError(
                f"Weights {str(self.weights)!r} are a prompt-free YOLOE checkpoint (a built-in vocabulary, no "
                "text prompts); load the text-prompt checkpoint (the name without -pf)."
            )
        if getattr(head, "is_fused", False):
            raise InvalidOptionError(
                f"Weights {str(self.weights)!r} have their class embeddings fused into the head, so their "
                "classes cannot change; load the unfused checkpoint."
            )
        super()._read_model(model)
        self._vocabulary = self._checkpoint_vocabulary(model)

    def _checkpoint_vocabulary(self, model: Any) -> tuple[tuple[str, ...], torch.Tensor] | None:
        """The names and embeddings a checkpoint was saved with (``set_classes`` before saving), if real."""
        if self._weights_file is None:  # a yaml: names '0', '1' ... and noise for embeddings
            return None
        emb = getattr(model, "txt_feats" if self.family == "world" else "pe", None)
        names = tuple(self._model_names[i] for i in sorted(self._model_names))
        if not isinstance(emb, torch.Tensor) or emb.ndim != 3 or emb.shape[1] != len(names) or not names:
            return None
        if all(n.isdigit() for n in names):
            return None
        return names, emb.detach().float().cpu()[:1].clone()

    def _place_model(self, model: Any) -> None:
        super()._place_model(model)
        if self._channels_last:
            # NCHW here: the text-attention and contrastive layers hand back NCHW tensors, and convolutions
            # mixing layouts fell to torch's slow conv path (measured on CPU: 130-1200 ms vs a steady 64 ms
            # per 160 px image for yolov8n-worldv2).
            self.model = self.model.to(memory_format=torch.contiguous_format)
            self._channels_last = False
        self._net = _TextNet(self.model, segment=self.model_task == "segment", world=self.family == "world")

    # -- classes → embeddings -------------------------------------------------------------------------
    def text_embeddings(self, classes: Sequence[str]) -> torch.Tensor:
        """The ``(1, n, d)`` class embeddings the network scores boxes against, on the model's device.

        Each name is encoded once and cached (up to :data:`TEXT_CACHE_SIZE` names): a repeated call,
        or a class list sharing names with an earlier one, runs the text encoder only for new names.
        """
        names = parse_classes(list(classes), max_classes=None)
        with self.lock:
            missing = [n for n in dict.fromkeys(names) if n not in self._text_cache]
            if missing:
                rows = self._encode(missing)
                for name, row in zip(missing, rows, strict=True):
                    self._text_cache[name] = row
            for n in names:
                self._text_cache.move_to_end(n)
            found = torch.stack([self._text_cache[n] for n in names])[None]
            while len(self._text_cache) > TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        return found

    @torch.inference_mode()
    def _encode(self, names: list[str]) -> torch.Tensor:
        """``(n, d)`` final embeddings (after YOLOE's text projection) for ``names``."""
        if self._text_encoder is not None:
            raw = torch.as_tensor(np.asarray(self._text_encoder(list(names)), dtype=np.float32))
            raw = raw.reshape(-1, raw.shape[-1])
            if raw.shape[0] != len(names):
                raise BackendError(
                    f"text_encoder returned {raw.shape[0]} rows for {len(names)} names; it must return one "
                    "feature row per name."
                )
            raw = raw[None]
        else:
            raw = self._ultralytics_text_features(names)
        param = next(self.model.parameters())
        raw = raw.to(device=param.device, dtype=param.dtype)
        if self.family == "yoloe":
            raw = self.model.model[-1].get_tpe(raw)  # YOLOE's text projection, as get_text_pe applies it
        return raw[0].float().clone()

    def _ultralytics_text_features(self, names: list[str]) -> torch.Tensor:
        """Ultralytics' own text encoder (``get_text_pe``): CLIP / MobileCLIP, downloaded on first use."""
        extra = {} if self.family == "world" else {"without_reprta": True}
        try:
            with torch.inference_mode(False):
                feats = self.model.get_text_pe(names, cache_clip_model=True, **extra)
        except ImportError as exc:
            raise BackendUnavailableError(
                f"{self.name} (its text encoder)", [exc.name or "clip"], _CLIP_HINT
            ) from exc
        except Exception as exc:  # a failed download surfaces as many types (URLError, OSError, RuntimeError)
            variant = "clip:ViT-B/32" if self.family == "world" else getattr(self.model, "text_model", "?")
            raise BackendError(
                f"{self.name}: ultralytics' text encoder {variant!r} could not run ({type(exc).__name__}: {exc}). "
                "Its weights download on first use; offline, set backend.text_encoder to a function "
                "names -> (n, d) text features, or load a checkpoint saved with its classes."
            ) from exc
        return torch.as_tensor(feats).detach().float()

    def _prompt(self, options: Any) -> tuple[tuple[str, ...], torch.Tensor]:
        if options.classes is None:
            if self._vocabulary is None:
                raise InvalidPromptError(
                    f"{self.name} finds what it is told: pass classes=['person', 'red car', ...] (per call or "
                    "at load); these weights carry no vocabulary of their own."
                )
            names, emb = self._vocabulary
            param = next(self.model.parameters())
            return names, emb.to(device=param.device, dtype=torch.float32)
        names = parse_classes(options.classes, max_classes=options.max_classes)
        return names, self.text_embeddings(names)

    # -- stages ---------------------------------------------------------------------------------------
    def preprocess(self, images: list[np.ndarray], options: Any) -> Batch[Any]:
        """Check the classes and fetch their embeddings (cached), then letterbox as the ``yolo`` backend."""
        names, text = self._prompt(options)  # a bad prompt fails before any image work
        batch = super().preprocess(images, options)
        batch.inputs = TextPromptedInputs(batch.inputs, text)
        batch.extra["names"] = names
        return batch

    @torch.inference_mode()
    def forward(self, inputs: TextPromptedInputs) -> Any:
        """The network on the images with the class embeddings; a list of inputs gives a list of outputs."""
        images, text = inputs.images, inputs.text
        net: Any = self._net  # a _TextNet: (images, text) -> outputs
        with self._autocast():
            out: Any = [net(x, text) for x in images] if isinstance(images, list) else net(images, text)
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)
        return out

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        """NMS over the call's classes; ``class_name`` is the asked name, ``class_id`` its index."""
        names = batch.extra["names"]
        # ``classes`` holds names here, not the id filter the closed-set NMS reads
        plain = dataclasses.replace(batch, options=batch.options.model_copy(update={"classes": None}))
        with self.lock:
            self._call_names, self._call_thread = dict(enumerate(names)), threading.get_ident()
            try:
                return super().postprocess(outputs, plain, task)
            finally:
                self._call_names = None

    def export_spec(self) -> ExportSpec:
        """Not exportable yet: the class embeddings are a second network input the export path lacks."""
        raise ExportNotSupportedError(
            f"Backend {self.name!r} takes class embeddings as a second input, which visionkit's export does not "
            "handle yet; export a fixed vocabulary with ultralytics (set_classes, then export) and load the "
            "file with visionkit.load('yolo', ...)."
        )


class YoloWorldDetector(OpenVocabularyDetector, Detects):
    """YOLO-World (ultralytics ``WorldModel``): finds the named classes; CLIP ViT-B/32 text encoder.

    Args:
        weights: a YOLO-World ``.pt`` (``yolov8s-worldv2.pt`` ...), a model yaml (random init, offline)
            or ``None`` (random ``yolov8s-worldv2.yaml``). ``.pt`` files load through ultralytics' restricted
            unpickler unless ``trust_pickle=True``.
        device, precision: as for ``yolo``.
        **options: see :class:`visionkit_yolo._options.WorldOptions` (``classes``, ``max_classes`` ...).
    """

    name = "yolo-world"
    tasks = (Task.DETECT,)
    Options = WorldOptions
    family = "world"
    accepts: ClassVar[tuple[str, ...]] = ("detect",)
    default_yaml = _DEFAULT_YAML["world"]


class YoloeSegmenter(OpenVocabularyDetector, Detects, SegmentsInstances):
    """YOLOE-seg (ultralytics ``YOLOESegModel``): boxes and masks of the named classes; MobileCLIP text encoder."""

    name = "yoloe"
    tasks = (Task.DETECT, Task.SEGMENT_INSTANCES)
    Options = YoloeOptions
    family = "yoloe"
    accepts: ClassVar[tuple[str, ...]] = ("segment",)
    default_yaml = _DEFAULT_YAML["yoloe"]
