"""visionkit plugin serving torchvision models (Mask R-CNN, Faster R-CNN, DeepLabV3, classifiers ...).

Registration only: backends are declared as data with import strings, so neither torch nor
torchvision is imported until ``visionkit.load`` builds one.
"""

from __future__ import annotations

from typing import Any

from visionkit import hookimpl
from visionkit_torchvision._catalog import ENTRIES

__all__ = ["register_backends"]

_TASKS = {
    "instance": ("detect", "segment_instances"),
    "detection": ("detect",),
    "semantic": ("segment_semantic",),
    "classification": ("classify",),
}
_OPTIONS = {
    ("instance", False): "InstanceOptions",
    ("detection", False): "DetectionOptions",
    ("semantic", False): "SemanticOptions",
    ("classification", False): "ClassifierOptions",
    ("detection", True): "GenericDetectionOptions",
    ("semantic", True): "GenericSemanticOptions",
    ("classification", True): "GenericClassifierOptions",
}


@hookimpl
def register_backends(register: Any) -> None:
    """Register every backend of :data:`visionkit_torchvision._catalog.ENTRIES`."""
    for entry in ENTRIES:
        register(
            entry.name,
            f"visionkit_torchvision._backend:{_factory_name(entry.name)}",
            tasks=_TASKS[entry.family],
            aliases=entry.aliases,
            requires=("torch", "torchvision"),
            install="pip install visionkit-torchvision",
            description=entry.description,
            default_weights=entry.default_weights,
            categories=entry.categories,
            precisions=("fp32", "bf16"),
            batch=True,
            options=f"visionkit_torchvision._options:{_OPTIONS[(entry.family, entry.arch is None)]}",
        )


def _factory_name(name: str) -> str:
    return "load_" + name.replace("-", "_")
