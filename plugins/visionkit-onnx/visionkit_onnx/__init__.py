"""visionkit-onnx: run any exportable visionkit backend in ONNX Runtime, fp32 or INT8.

Only the hook lives here; onnx, onnxruntime and torch are imported when a runtime is used.
"""

from __future__ import annotations

from typing import Any

import visionkit

__all__ = ["register_runtimes"]


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
    )
