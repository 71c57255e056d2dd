"""The base class a plugin's backend builds on: options, the three stages, batching, timing.

A backend turns images into results in three stages that stay separate, so the runtime under the
same pre/post-processing can be swapped (torch eager, onnxruntime fp32/int8 ...) and each stage
can be timed::

    images (H,W,3 uint8 RGB)  →  preprocess  →  Batch(inputs, metas)
    Batch.inputs              →  forward     →  raw outputs
    raw outputs, Batch, task  →  postprocess →  list of results, in original-image pixels

Subclass :class:`Backend`, set ``name``, ``tasks`` and an ``Options`` model, implement the three
stages, and mix in the task verbs (:class:`Detects`, :class:`Classifies`, ...). Only the verbs you
mix in exist on the class, so ``isinstance(backend, visionkit.Detector)`` tells the truth.

Threads: :meth:`Backend.predict` decodes each batch's images outside any lock, then holds the
instance's :attr:`Backend.lock` around that batch's preprocess → forward → postprocess, so one
backend called from several threads gives the same results as sequential calls even when the
library underneath is not re-entrant. :attr:`Backend.thread_safe` declares that to servers.

Runtimes: a runtime plugin (ONNX Runtime, OpenVINO ...) runs a backend's network stages in its own
engine through :meth:`Backend.install_runtime` (stage name → callable, plus a report of what runs
them); :attr:`Backend.runtime` then says what runs them (``None``: the backend's own code,
:attr:`Backend.native_runtime`). Pre- and post-processing stay the backend's.

Prompt segmentation (:class:`SegmentsPrompts`) has its own driver over two stages: *encode* (the image
through preprocess → forward → postprocess to an embedding, cacheable) and *decode* (prompts on an
embedding), each timed into :attr:`Backend.last_timing`.

Limits: :func:`check_limit` raises :class:`~visionkit.errors.LimitExceededError` for a documented
limit, and :func:`limit_option` declares a limit option (an upper bound that a per-call override may
lower but never raise). The core enforces ``max_images`` (images per call); plugins add their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from visionkit.errors import (
    InvalidOptionError,
    LimitExceededError,
    TaskNotSupportedError,
    unknown_option_error,
)
from visionkit.images import ImageInput, as_batch, load_image
from visionkit.limits import check_limit, limit_fields, limit_option
from visionkit.prompts import Prompts, parse_prompts
from visionkit.protocols import Task
from visionkit.results import PromptMasks, ResultMeta

__all__ = [
    "Backend",
    "BackendOptions",
    "Batch",
    "Classifies",
    "Detects",
    "Encoded",
    "SegmentsInstances",
    "SegmentsPrompts",
    "SegmentsSemantic",
    "check_limit",
    "install_runtime",
    "limit_option",
    "parse_device",
    "parse_options",
]

OptionsT = TypeVar("OptionsT", bound="BackendOptions")
EmbeddingT = TypeVar("EmbeddingT")


class BackendOptions(BaseModel):
    """Base of every backend's options: typed, immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    batch_size: int = Field(8, ge=1, description="Images per forward pass when a list is given.")
    max_images: int | None = limit_option(
        1024, "Most images accepted in one call (a limit: lower it per call, raise it at load time)."
    )


def parse_options(model: type[OptionsT], options: dict[str, Any], backend: str) -> OptionsT:
    """Validate ``options`` against ``model``; raise :class:`InvalidOptionError` naming the bad key."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        valid = list(model.model_fields)
        problems, keys = [], []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "?"
            if err["type"] == "extra_forbidden":
                raise unknown_option_error(backend, key, valid) from None
            problems.append(f"{key}={err.get('input')!r}: {err['msg']}")
            keys.append(key)
        raise InvalidOptionError(
            f"Invalid option for backend {backend!r}: {'; '.join(problems)}.", key=keys[0] if keys else None
        ) from None


_DEVICE = re.compile(r"^(cpu|auto|mps|cuda(:\d+)?)$")


def parse_device(device: str | None) -> str:
    """Normalise a device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"auto"``).

    ``None`` means ``"cpu"``. A ``torch.device`` is accepted by its string form. Integers are refused
    rather than guessed at (torch reads ``0`` as GPU 0, a plain ``or "cpu"`` would read it as CPU).
    """
    if isinstance(device, (bool, int)):
        raise InvalidOptionError(
            f"Invalid device {device!r} ({type(device).__name__}); pass a string: 'cuda:{int(device)}' "
            "for that GPU, or 'cpu'.",
            key="device",
        )
    if device is not None and not isinstance(device, str):
        if type(device).__module__ == "torch" and type(device).__name__ == "device":
            device = str(device)
        else:
            raise InvalidOptionError(
                f"Invalid device {device!r} of type {type(device).__name__}; expected a string such as "
                "'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.",
                key="device",
            )
    dev = (device or "cpu").strip().lower()
    if not _DEVICE.match(dev):
        raise InvalidOptionError(
            f"Invalid device {device!r}; expected 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.", key="device"
        )
    return dev


# Guards the lazy creation of per-instance locks (for subclasses that skip Backend.__init__ and for
# copies made by pickle, which drop the lock).
_LOCK_CREATION = threading.Lock()


@dataclass
class Batch(Generic[OptionsT]):
    """What ``preprocess`` hands to ``forward`` and ``postprocess``.

    Attributes:
        images: the normalised input images (H,W,3 uint8 RGB), in order.
        inputs: the model input (tensor, array, dict of tensors ...), the backend's business.
        metas: one dict per image of whatever postprocess needs to map back (scale, padding ...).
        options: the options in force for this call (load-time options with per-call overrides).
    """

    images: list[np.ndarray]
    inputs: Any
    metas: list[dict[str, Any]]
    options: OptionsT
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(Generic[OptionsT]):
    """Base class for backends. See the module docstring for the contract."""

    #: Canonical backend name (``load`` sets it from the registry when they differ).
    name: ClassVar[str] = "backend"
    #: Tasks this class performs; must match the verbs it mixes in.
    tasks: ClassVar[tuple[Task, ...]] = ()
    #: Options model; subclass :class:`BackendOptions`.
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    #: One instance may be called from several threads at once and gives the same results as sequential
    #: calls. True for every backend that runs through :meth:`predict` (it serialises the three stages
    #: with :attr:`lock`); a backend whose own driver cannot promise it sets False, and a server then
    #: serialises calls to it (or loads one instance per worker).
    thread_safe: ClassVar[bool] = True
    #: What runs the network stages while no runtime is installed (``"torch"`` for torch backends).
    native_runtime: ClassVar[str] = "native"

    #: The registration (a :class:`visionkit.BackendSpec`) this backend was loaded under, set by
    #: :func:`visionkit.load`; ``None`` when the class was built directly.
    # Typed loosely so the contract does not import the discovery layer above it.
    spec: Any = None
    #: What runs the network stages: ``None`` while the backend's own code does (see
    #: :attr:`native_runtime`), else the report of the runtime installed by :meth:`install_runtime`
    #: (at least ``name`` and ``precision``; ONNX Runtime adds ``model_path``, ``stages`` ...).
    #: ``load(precision="auto")`` sets it for a native pick too, with the decision under ``"auto"``.
    runtime: dict[str, Any] | None = None
    #: Milliseconds spent in each stage by the last call (``preprocess``, ``forward``, ``postprocess``;
    #: prompt segmenters add ``embed_total``, ``decode``, ``cache_hit``).
    last_timing: dict[str, float]

    def __init__(
        self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any
    ) -> None:
        self.weights = weights
        self.device = parse_device(device)
        self.precision = precision
        self.options: OptionsT = parse_options(self.Options, options, self.name)  # type: ignore[assignment]
        self.last_timing = {}
        self._vk_lock: threading.RLock = threading.RLock()

    # -- threads, copies and pickles --------------------------------------------------------------
    @property
    def lock(self) -> threading.RLock:
        """The per-instance lock :meth:`predict` holds around each batch's three stages.

        Re-entrant, so a stage may call another verb of the same backend. A plugin whose verb does not go
        through :meth:`predict` (e.g. ``segment_prompt``) takes it too: ``with self.lock: ...``.
        """
        lock: threading.RLock | None = self.__dict__.get("_vk_lock")
        if lock is None:
            with _LOCK_CREATION:
                lock = self.__dict__.get("_vk_lock")
                if lock is None:
                    lock = self.__dict__["_vk_lock"] = threading.RLock()
        return lock

    def __getstate__(self) -> dict[str, Any]:
        # A lock cannot be pickled (Ray, multiprocessing, deepcopy); the copy gets a fresh one.
        state = dict(self.__dict__)
        state.pop("_vk_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __copy__(self) -> Backend[OptionsT]:
        # A shallow copy shares the model, so it shares the lock that guards it.
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.__dict__["_vk_lock"] = self.lock
        return clone

    # -- the three stages (override) ------------------------------------------------------------
    def preprocess(self, images: list[np.ndarray], options: OptionsT) -> Batch[OptionsT]:
        """Build the model input for ``images`` (already RGB uint8)."""
        raise NotImplementedError

    def forward(self, inputs: Any) -> Any:
        """Run the network on ``inputs``; nothing else (this is the swappable runtime)."""
        raise NotImplementedError

    def postprocess(self, outputs: Any, batch: Batch[OptionsT], task: Task) -> list[Any]:
        """Turn raw outputs into one result per image of ``batch``, for ``task``."""
        raise NotImplementedError

    # -- the runtime slot -------------------------------------------------------------------------
    @property
    def runtime_name(self) -> str:
        """What runs the network stages now: the installed runtime's name, else :attr:`native_runtime`."""
        return str(self.runtime["name"]) if self.runtime else self.native_runtime

    def install_runtime(self, runtime: Mapping[str, Any], stages: Mapping[str, Callable[[Any], Any]]) -> None:
        """Run ``stages`` (stage name → callable) in place of the backend's own network stages.

        A stage is a method that takes the network's inputs as one argument and returns its raw
        outputs (``forward``; a backend with several networks names more, e.g. SAM's
        ``decoder_forward``: see :attr:`visionkit.export.ExportSpec.stage`). Pre- and post-processing
        stay the backend's. Installed under :attr:`lock`, so no call sees half a swap.

        Args:
            runtime: what now runs them, kept as :attr:`runtime`: ``name`` and ``precision`` (required;
                :attr:`precision` becomes the latter), plus anything the runtime reports.
            stages: the replacements, e.g. ``{"forward": session_forward}``.

        Raises:
            InvalidOptionError: ``runtime`` lacks ``name``/``precision``, no stage is given, a stage is not
                a method of this backend, or a replacement is not callable.
        """
        missing = [k for k in ("name", "precision") if not runtime.get(k)]
        if missing:
            raise InvalidOptionError(
                f"A runtime for backend {self.name!r} must report {' and '.join(missing)}, but got keys "
                f"{sorted(runtime)}.",
                key=missing[0],
            )
        if not stages:
            raise InvalidOptionError(f"install_runtime on backend {self.name!r} got no stage to replace.")
        for stage, fn in stages.items():
            self._check_stage(stage)
            if not callable(fn):
                raise InvalidOptionError(
                    f"The runtime for stage {stage!r} of backend {self.name!r} must be callable, but got "
                    f"{type(fn).__name__}.",
                    key=stage,
                )
        with self.lock:
            for stage, fn in stages.items():
                # an instance attribute shadows the class's method: every caller of self.<stage> gets it
                self.__dict__[stage] = fn
            self.runtime = dict(runtime)
            self.precision = str(runtime["precision"])

    def native_stage(self, stage: str) -> Callable[[Any], Any]:
        """The backend's own implementation of ``stage`` (bound), whatever runtime is installed."""
        self._check_stage(stage)
        fn: Callable[[Any], Any] = getattr(type(self), stage).__get__(self, type(self))
        return fn

    @contextlib.contextmanager
    def stage_replaced(self, stage: str, fn: Callable[[Any], Any]) -> Iterator[None]:
        """Run ``stage`` with ``fn`` inside the block, then restore what ran before (accuracy gates).

        Not for a backend other threads are calling: they would see ``fn`` too.
        """
        self._check_stage(stage)
        missing = object()
        saved = self.__dict__.get(stage, missing)
        self.__dict__[stage] = fn
        try:
            yield
        finally:
            if saved is missing:
                self.__dict__.pop(stage, None)
            else:
                self.__dict__[stage] = saved

    def _check_stage(self, stage: str) -> None:
        if not callable(getattr(type(self), stage, None)) or stage.startswith("_"):
            raise InvalidOptionError(
                f"Backend {self.name!r} has no network stage {stage!r} to replace; a stage is a public "
                "method taking the network's inputs (e.g. 'forward').",
                key=stage,
            )

    # -- helpers for subclasses -----------------------------------------------------------------
    def meta(self, image: np.ndarray, **extra: Any) -> ResultMeta:
        """Metadata for a result about ``image``."""
        return ResultMeta(image_shape=(int(image.shape[0]), int(image.shape[1])), backend=self.name, **extra)

    def with_options(self, overrides: dict[str, Any]) -> OptionsT:
        """Load-time options updated with per-call ``overrides`` (validated).

        Raises:
            InvalidOptionError: an unknown key or an invalid value.
            LimitExceededError: an override raises a limit (see :func:`limit_option`) above its load-time value.
        """
        if not overrides:
            return self.options
        merged = {**self.options.model_dump(), **overrides}
        opts = parse_options(type(self.options), merged, self.name)
        for key in limit_fields(type(self.options)):
            if key not in overrides:
                continue
            loaded, asked = getattr(self.options, key), getattr(opts, key)
            if loaded is not None and (asked is None or asked > loaded):
                raise LimitExceededError(
                    key,
                    float("inf") if asked is None else asked,
                    loaded,
                    "A per-call option may lower a limit but not raise it; "
                    f"load the backend with load(..., {key}=N) instead.",
                )
        return opts

    # -- the driver -----------------------------------------------------------------------------
    def predict(self, images: ImageInput | Sequence[ImageInput], task: Task | str, **overrides: Any) -> Any:
        """Run ``task`` on one image (returns one result) or a list (returns a list).

        Per-call ``overrides`` take precedence over load-time options for this call only. Images are
        decoded one batch at a time (at most ``batch_size`` ahead of the model), outside the lock; each
        batch's preprocess → forward → postprocess runs under :attr:`lock`.

        Raises:
            TaskNotSupportedError, InvalidOptionError, InvalidImageError, and
            LimitExceededError: more images than ``max_images``.
        """
        task = Task.parse(task)
        if task not in self.tasks:
            raise TaskNotSupportedError(self.name, task.value, [t.value for t in self.tasks])
        opts = self.with_options(overrides)
        inputs, single = as_batch(images)
        check_limit("max_images", len(inputs), getattr(opts, "max_images", None), what="images in one call")
        results: list[Any] = []
        timing = {"preprocess": 0.0, "forward": 0.0, "postprocess": 0.0}
        step = max(1, int(getattr(opts, "batch_size", 1)))
        for start in range(0, len(inputs), step):
            arrays = [load_image(x) for x in inputs[start : start + step]]
            out, ms = self.run_stages(arrays, opts, task)
            results.extend(out)
            for stage, value in ms.items():
                timing[stage] += value
        with self.lock:
            self.last_timing = timing
        return results[0] if single else results

    def run_stages(
        self, images: list[np.ndarray], options: OptionsT, task: Task, **preprocess_args: Any
    ) -> tuple[list[Any], dict[str, float]]:
        """preprocess → forward → postprocess on one batch of decoded images, under :attr:`lock`.

        Returns the results and the milliseconds of each stage. :meth:`predict` calls it per batch; a
        driver of its own (a prompt segmenter's encoder) calls it too. ``preprocess_args`` go to
        :meth:`preprocess` (e.g. content hashes the caller already has).
        """
        with self.lock:
            t0 = time.perf_counter()
            batch = self.preprocess(images, options, **preprocess_args)
            t1 = time.perf_counter()
            raw = self.forward(batch.inputs)
            t2 = time.perf_counter()
            results = self.postprocess(raw, batch, task)
            t3 = time.perf_counter()
        ms = {"preprocess": (t1 - t0) * 1e3, "forward": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        return results, ms

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} tasks={[t.value for t in self.tasks]} device={self.device!r}>"


# -- task verbs, mixed into backends --------------------------------------------------------------
class Classifies:
    """Adds :meth:`classify` (the :class:`~visionkit.Classifier` protocol) to a :class:`Backend`."""

    def classify(self, images: Any, **options: Any) -> Any:
        """Top-k classes of one image, or a list of results for a list of images."""
        return self.predict(images, Task.CLASSIFY, **options)  # type: ignore[attr-defined]


class Detects:
    """Adds :meth:`detect` (the :class:`~visionkit.Detector` protocol) to a :class:`Backend`."""

    def detect(self, images: Any, **options: Any) -> Any:
        """Detections of one image, or a list of results for a list of images."""
        return self.predict(images, Task.DETECT, **options)  # type: ignore[attr-defined]


class SegmentsSemantic:
    """Adds :meth:`segment_semantic` (the :class:`~visionkit.SemanticSegmenter` protocol)."""

    def segment_semantic(self, images: Any, **options: Any) -> Any:
        """A label map per image at the input resolution."""
        return self.predict(images, Task.SEGMENT_SEMANTIC, **options)  # type: ignore[attr-defined]


class SegmentsInstances:
    """Adds :meth:`segment_instances` (the :class:`~visionkit.InstanceSegmenter` protocol)."""

    def segment_instances(self, images: Any, **options: Any) -> Any:
        """Detections with masks at the input resolution, per image."""
        return self.predict(images, Task.SEGMENT_INSTANCES, **options)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Encoded(Generic[EmbeddingT]):
    """An image through a prompt segmenter's encoder: what :meth:`SegmentsPrompts.encode_image` returns.

    Attributes:
        embedding: the backend's embedding of the image (what its ``decode`` reads).
        image_shape: ``(height, width)`` of the original image (prompts are checked against it).
        cached: the embedding was reused (a cache hit, or an embedding handed in by the caller).
        timing: milliseconds of the encoder stages that ran for this call (``preprocess``, ``forward``);
            empty when ``cached``.
    """

    embedding: EmbeddingT
    image_shape: tuple[int, int]
    cached: bool = False
    timing: Mapping[str, float] = field(default_factory=dict)

    def reused(self) -> Encoded[EmbeddingT]:
        """The same embedding, marked as reused (no encoder time spent on this call)."""
        return dataclasses.replace(self, cached=True, timing={})


class SegmentsPrompts:
    """Adds :meth:`segment_prompt` (the :class:`~visionkit.PromptSegmenter` protocol) to a :class:`Backend`.

    The driver, in two stages with one embedding between them::

        image    → encode_image  → Encoded (embedding; preprocess → forward → postprocess, cacheable)
        prompts  → parse_prompts → visionkit.prompts.Prompts, checked against the image
        Encoded, Prompts → decode → raw decoder outputs                          (under the lock)
        raw      → prompt_result → PromptMasks                                   (under the lock)

    ``last_timing`` gets ``preprocess`` and ``forward`` (the encoder; 0 when the embedding was reused),
    ``embed_total`` (getting the embedding, cache included), ``decode``, ``postprocess`` (building the
    result) and ``cache_hit`` (1.0 or 0.0). Implement the four hooks; :meth:`encode_stages` runs a
    backend's three stages as the encoder.
    """

    def encode_image(self, image: Any) -> Encoded[Any]:
        """The image's embedding (from the encoder, a cache, or a handle the caller passed as ``image``)."""
        raise NotImplementedError

    def parse_prompts(
        self,
        encoded: Encoded[Any],
        *,
        points: Any,
        labels: Any,
        boxes: Any,
        mask_input: Any,
        multimask_output: bool | None,
    ) -> Prompts:
        """Check and batch the prompts for this image with :func:`visionkit.prompts.parse_prompts`.

        ``multimask_output=None`` takes the ``multimask_output`` option; the ``max_points`` and
        ``max_prompts`` options are the limits (unlimited when the options have none), and
        :meth:`low_res_size` is the size ``mask_input`` must have. Override for another grammar.
        """
        opts = self.options  # type: ignore[attr-defined]
        return parse_prompts(
            points=points,
            labels=labels,
            boxes=boxes,
            mask_input=mask_input,
            multimask_output=getattr(opts, "multimask_output", None)
            if multimask_output is None
            else multimask_output,
            image_shape=encoded.image_shape,
            low_res_size=self.low_res_size(),
            max_points=getattr(opts, "max_points", None),
            max_prompts=getattr(opts, "max_prompts", None),
        )

    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution mask logits (what ``mask_input`` must match)."""
        raise NotImplementedError

    def decode(self, embedding: Any, prompts: Prompts) -> Any:
        """The prompt decoder on ``embedding`` for every prompt (the backend's raw outputs)."""
        raise NotImplementedError

    def prompt_result(self, encoded: Encoded[Any], prompts: Prompts, raw: Any) -> PromptMasks:
        """Turn the decoder's raw outputs into masks at the original image's resolution."""
        raise NotImplementedError

    def encode_stages(
        self, image: np.ndarray, task: Task = Task.SEGMENT_PROMPT, **preprocess_args: Any
    ) -> Encoded[Any]:
        """Run the backend's preprocess → forward → postprocess on one image as the encoder, timed."""
        backend: Backend[Any] = self  # type: ignore[assignment]
        results, ms = backend.run_stages([image], backend.options, task, **preprocess_args)
        shape = (int(image.shape[0]), int(image.shape[1]))
        return Encoded(results[0], shape, timing={"preprocess": ms["preprocess"], "forward": ms["forward"]})

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
        """Segment what points, boxes and/or a previous mask point at (see the backend's own docs).

        Raises:
            InvalidPromptError: malformed prompts. LimitExceededError: more points or prompts than allowed.
            InvalidImageError: the image cannot be read.
        """
        backend: Backend[Any] = self  # type: ignore[assignment]
        t0 = time.perf_counter()
        encoded = self.encode_image(image)
        t1 = time.perf_counter()
        prompts = self.parse_prompts(
            encoded,
            points=points,
            labels=labels,
            boxes=boxes,
            mask_input=mask_input,
            multimask_output=multimask_output,
        )
        with backend.lock:
            t2 = time.perf_counter()
            raw = self.decode(encoded.embedding, prompts)
            t3 = time.perf_counter()
            result = self.prompt_result(encoded, prompts, raw)
            t4 = time.perf_counter()
            backend.last_timing = {
                "preprocess": 0.0 if encoded.cached else float(encoded.timing.get("preprocess", 0.0)),
                "forward": 0.0 if encoded.cached else float(encoded.timing.get("forward", 0.0)),
                "embed_total": (t1 - t0) * 1e3,
                "decode": (t3 - t2) * 1e3,
                "postprocess": (t4 - t3) * 1e3,
                "cache_hit": float(encoded.cached),
            }
        return result


def install_runtime(
    backend: Any, runtime: Mapping[str, Any], stages: Mapping[str, Callable[[Any], Any]]
) -> None:
    """:meth:`Backend.install_runtime` for any backend: duck-typed ones (not :class:`Backend` subclasses)
    get the stages as attributes, ``runtime`` and ``precision`` set the same way."""
    if isinstance(backend, Backend):
        backend.install_runtime(runtime, stages)
        return
    for stage, fn in stages.items():
        setattr(backend, stage, fn)
    backend.runtime = dict(runtime)
    backend.precision = str(runtime["precision"])
