"""visionkit: one typed, task-shaped API over computer-vision models.

>>> import visionkit
>>> det = visionkit.load("yolo")                       # doctest: +SKIP
>>> dets = det.detect("street.jpg")                    # doctest: +SKIP
>>> visionkit.list_backends(task="detect")             # doctest: +SKIP

Importing visionkit imports no model library; backends are imported by :func:`load`.
"""

from __future__ import annotations

from visionkit.backend import (
    Backend,
    BackendOptions,
    Batch,
    Classifies,
    Detects,
    SegmentsInstances,
    SegmentsSemantic,
    check_limit,
    limit_option,
)
from visionkit.bench import benchmark
from visionkit.errors import (
    BackendError,
    BackendUnavailableError,
    DatasetError,
    DuplicateBackendError,
    ExportNotSupportedError,
    InvalidImageError,
    InvalidOptionError,
    InvalidPromptError,
    LimitExceededError,
    PluginLoadError,
    RegistrationError,
    TaskNotSupportedError,
    UnknownBackendError,
    UnknownOptionError,
    UnsafeWeightsError,
    VisionKitError,
    WeightsNotFoundError,
)
from visionkit.evaluation import evaluate
from visionkit.hookspecs import hookimpl
from visionkit.images import ImageInput, load_image
from visionkit.loading import DEFAULT, load, set_auto_precision
from visionkit.pipeline import DetectThenSegment, pipeline
from visionkit.protocols import (
    Classifier,
    Detector,
    InstanceSegmenter,
    PromptSegmenter,
    SemanticSegmenter,
    Task,
    TextPromptedDetector,
)
from visionkit.registry import BackendSpec, Registry, get_registry, list_backends
from visionkit.results import (
    Classifications,
    Detection,
    Detections,
    InstanceMasks,
    PromptMasks,
    ResultMeta,
    SemanticMask,
)
from visionkit.sliced import sliced
from visionkit.tracking import TrackedFrame, track
from visionkit.tune import load_auto
from visionkit.weights import resolve_weights

__version__ = "0.1.0"

# load(precision="auto") is resolved by the tune tool, which stands above the loading layer: wired here,
# at the package root, so every `import visionkit...` has it and loading never imports a tool.
set_auto_precision(load_auto)
del load_auto, set_auto_precision

__all__ = [
    "DEFAULT",
    "Backend",
    "BackendError",
    "BackendOptions",
    "BackendSpec",
    "BackendUnavailableError",
    "Batch",
    "Classifications",
    "Classifier",
    "Classifies",
    "DatasetError",
    "DetectThenSegment",
    "Detection",
    "Detections",
    "Detector",
    "Detects",
    "DuplicateBackendError",
    "ExportNotSupportedError",
    "ImageInput",
    "InstanceMasks",
    "InstanceSegmenter",
    "InvalidImageError",
    "InvalidOptionError",
    "InvalidPromptError",
    "LimitExceededError",
    "PluginLoadError",
    "PromptMasks",
    "PromptSegmenter",
    "RegistrationError",
    "Registry",
    "ResultMeta",
    "SegmentsInstances",
    "SegmentsSemantic",
    "SemanticMask",
    "SemanticSegmenter",
    "Task",
    "TaskNotSupportedError",
    "TextPromptedDetector",
    "TrackedFrame",
    "UnknownBackendError",
    "UnknownOptionError",
    "UnsafeWeightsError",
    "VisionKitError",
    "WeightsNotFoundError",
    "__version__",
    "benchmark",
    "check_limit",
    "evaluate",
    "get_registry",
    "hookimpl",
    "limit_option",
    "list_backends",
    "load",
    "load_image",
    "pipeline",
    "resolve_weights",
    "sliced",
    "track",
]
