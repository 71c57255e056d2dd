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
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from visionkit.errors import InvalidOptionError, TaskNotSupportedError, unknown_option_error
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
    "parse_device",
    "parse_options",
]

OptionsT = TypeVar("OptionsT", bound="BackendOptions")


class BackendOptions(BaseModel):
    """Base of every backend's options: typed, immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    batch_size: int = Field(8, ge=1, description="Images per forward pass when a list is given.")


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
    """Normalise a device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"auto"``)."""
    dev = (device or "cpu").strip().lower()
    if not _DEVICE.match(dev):
        raise InvalidOptionError(
            f"Invalid device {device!r}; expected 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'."
        )
    return dev


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

    def __init__(
        self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any
    ) -> None:
        self.weights = weights
        self.device = parse_device(device)
        self.precision = precision
        self.options: OptionsT = parse_options(self.Options, options, self.name)  # type: ignore[assignment]
        #: Milliseconds spent in each stage by the last call (``preprocess``, ``forward``, ``postprocess``).
        self.last_timing: dict[str, float] = {}

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
        """Load-time options updated with per-call ``overrides`` (validated)."""
        if not overrides:
            return self.options
        merged = {**self.options.model_dump(), **overrides}
        return parse_options(type(self.options), merged, self.name)

    # -- the driver -----------------------------------------------------------------------------
    def predict(self, images: ImageInput | Sequence[ImageInput], task: Task | str, **overrides: Any) -> Any:
        """Run ``task`` on one image (returns one result) or a list (returns a list).

        Per-call ``overrides`` take precedence over load-time options for this call only.
        """
        task = Task.parse(task)
        if task not in self.tasks:
            raise TaskNotSupportedError(self.name, task.value, [t.value for t in self.tasks])
        opts = self.with_options(overrides)
        inputs, single = as_batch(images)
        arrays = [load_image(x) for x in inputs]
        results: list[Any] = []
        timing = {"preprocess": 0.0, "forward": 0.0, "postprocess": 0.0}
        step = max(1, int(getattr(opts, "batch_size", 1)))
        for start in range(0, len(arrays), step):
            t0 = time.perf_counter()
            batch = self.preprocess(arrays[start : start + step], opts)
            t1 = time.perf_counter()
            raw = self.forward(batch.inputs)
            t2 = time.perf_counter()
            results.extend(self.postprocess(raw, batch, task))
            t3 = time.perf_counter()
            timing["preprocess"] += (t1 - t0) * 1e3
            timing["forward"] += (t2 - t1) * 1e3
            timing["postprocess"] += (t3 - t2) * 1e3
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
