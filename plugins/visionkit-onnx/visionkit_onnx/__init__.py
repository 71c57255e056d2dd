"""visionkit-onnx: run any exportable visionkit backend in ONNX Runtime, fp32 or INT8, and run
exported deploy artifacts without torch (``visionkit.load("model.onnx")``).

Only the hooks live here; onnx, onnxruntime and torch are imported when a runtime is used.
"""

from __future__ import annotations

from typing import Any

import visionkit

__all__ = ["register_backends", "register_runtimes"]


@visionkit.hookimpl
def register_backends(register: Any) -> None:
    """Register ``onnx``: a deploy artifact written by ``visionkit export`` (onnxruntime + numpy + OpenCV)."""
    register(
        "onnx",
        "visionkit_onnx._deploy:load_artifact",
        # what the file holds: each file some of these
        tasks=["detect", "classify", "segment_instances", "segment_semantic", "segment_prompt"],
        requires=("onnxruntime", "cv2"),
        install="pip install visionkit-onnx",
        description="A self-describing .onnx exported by `visionkit export`, run without torch "
        "(load('model.onnx') or load('onnx', weights=...)).",
        precisions=("fp32", "int8"),
        suffixes=(".onnx",),
    )


@visionkit.hookimpl
def register_runtimes(register: Any) -> None:
    """Register the ``onnxruntime`` runtime (fp32, int8) and its exporter."""
    register(
        "onnxruntime",
        "visionkit_onnx._runtime:wrap",
        precisions=("fp32", "int8"),
        requires=("onnxruntime", "onnx"),
        install="pip install visionkit-onnx",
        description="ONNX Runtime: fp32, or INT8 static QDQ (U8 activations, S8 per-channel weights).",
        exporter="visionkit_onnx._export:export",
        export_suffixes=(".onnx",),
    )
