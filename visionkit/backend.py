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

Limits: :func:`check_limit` raises :class:`~visionkit.errors.LimitExceededError` for a documented
limit, and :func:`limit_option` declares a limit option (an upper bound that a per-call override may
lower but never raise). The core enforces ``max_images`` (images per call); plugins add their own.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
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
from visionkit.protocols import Task
from visionkit.results import ResultMeta

__all__ = [
    "Backend",
    "BackendOptions",
    "Batch",
    "Classifies",
    "Detects",
    "SegmentsInstances",
    "SegmentsSemantic",
    "check_limit",
    "limit_option",
    "parse_device",
    "parse_options",
]

OptionsT = TypeVar("OptionsT", bound="BackendOptions")


#: Marks an options field as a limit (read by :meth:`Backend.with_options` and the docs).
LIMIT_MARK = "visionkit_limit"


def limit_option(default: int | None, description: str, *, minimum: int = 1) -> Any:
    """Declare an options field that is an upper bound on work per call (``max_imgsz``, ``max_prompts`` ...).

    A limit is set when the backend is loaded (``load(name, max_images=64)``); a per-call override may
    lower it but never raise it, so a server that forwards client options cannot be talked out of its
    limits. ``None`` means unlimited. Enforce it with :func:`check_limit`.

    Example::

        class MyOptions(visionkit.BackendOptions):
            max_imgsz: int | None = visionkit.limit_option(2048, "Largest accepted imgsz.")
    """
    return Field(default, ge=minimum, description=description, json_schema_extra={LIMIT_MARK: True})


def limit_fields(model: type[BaseModel]) -> list[str]:
    """Names of the fields of ``model`` declared with :func:`limit_option`."""
    return [
        name
        for name, f in model.model_fields.items()
        if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get(LIMIT_MARK)
    ]


def check_limit(limit: str, value: float, maximum: float | None, *, what: str | None = None) -> None:
    """Raise :class:`~visionkit.errors.LimitExceededError` when ``value`` exceeds ``maximum``.

    Args:
        limit: the option that holds the limit, e.g. ``"max_imgsz"`` (named in the error and its hint).
        value: what the request asks for (e.g. the ``imgsz`` requested, the number of prompts).
        maximum: the limit in force; ``None`` means unlimited.
        what: what ``value`` measures, for the message (e.g. ``"imgsz"``, ``"points in one call"``).
    """
    if maximum is None or value <= maximum:
        return
    asked = f"Requested {what}: {value!r}. " if what else ""
    hint = (
        f"{asked}Send less, or load the backend with a higher limit: load(..., {limit}=N) (None: unlimited)."
    )
    raise LimitExceededError(limit, value, maximum, hint)


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
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "?"
            if err["type"] == "extra_forbidden":
                raise unknown_option_error(backend, key, valid) from None
            problems.append(f"{key}={err.get('input')!r}: {err['msg']}")
        raise InvalidOptionError(f"Invalid option for backend {backend!r}: {'; '.join(problems)}.") from None


_DEVICE = re.compile(r"^(cpu|auto|mps|cuda(:\d+)?)$")


def parse_device(device: str | None) -> str:
    """Normalise a device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"auto"``).

    ``None`` means ``"cpu"``. A ``torch.device`` is accepted by its string form. Integers are refused
    rather than guessed at (torch reads ``0`` as GPU 0, a plain ``or "cpu"`` would read it as CPU).
    """
    if isinstance(device, (bool, int)):
        raise InvalidOptionError(
            f"Invalid device {device!r} ({type(device).__name__}); pass a string: 'cuda:{int(device)}' "
            "for that GPU, or 'cpu'."
        )
    if device is not None and not isinstance(device, str):
        if type(device).__module__ == "torch" and type(device).__name__ == "device":
            device = str(device)
        else:
            raise InvalidOptionError(
                f"Invalid device {device!r} of type {type(device).__name__}; expected a string such as "
                "'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'."
            )
    dev = (device or "cpu").strip().lower()
    if not _DEVICE.match(dev):
        raise InvalidOptionError(
            f"Invalid device {device!r}; expected 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'."
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

    def __init__(
        self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any
    ) -> None:
        self.weights = weights
        self.device = parse_device(device)
        self.precision = precision
        self.options: OptionsT = parse_options(self.Options, options, self.name)  # type: ignore[assignment]
        #: Milliseconds spent in each stage by the last call (``preprocess``, ``forward``, ``postprocess``).
        self.last_timing: dict[str, float] = {}
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
            with self.lock:
                t0 = time.perf_counter()
                batch = self.preprocess(arrays, opts)
                t1 = time.perf_counter()
                raw = self.forward(batch.inputs)
                t2 = time.perf_counter()
                results.extend(self.postprocess(raw, batch, task))
                t3 = time.perf_counter()
            timing["preprocess"] += (t1 - t0) * 1e3
            timing["forward"] += (t2 - t1) * 1e3
            timing["postprocess"] += (t3 - t2) * 1e3
        with self.lock:
            self.last_timing = timing
        return results[0] if single else results

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
