"""visionkit-openvino: run any exportable visionkit backend in OpenVINO, fp32, bf16 or INT8 (NNCF), export
it as an OpenVINO IR, and run such an IR without torch (``visionkit.load("model.xml")``).

Only the hooks live here; openvino, nncf, onnx and torch are imported when the runtime is used.
"""

from __future__ import annotations

from typing import Any

import visionkit

__all__ = ["register_backends", "register_runtimes"]


@visionkit.hookimpl
def register_backends(register: Any) -> None:
    """Register ``openvino-ir``: an OpenVINO IR deploy artifact written by ``visionkit export --runtime openvino``."""
    register(
        "openvino-ir",
        "visionkit_openvino._deploy:load_ir",
        # what the file holds: each file some of these (the deploy kinds of visionkit-onnx)
        tasks=["detect", "classify", "segment_instances", "segment_semantic", "segment_prompt"],
        requires=("openvino", "cv2", "visionkit_onnx"),
        install="pip install visionkit-openvino",
        description="A self-describing OpenVINO IR (.xml + .bin) exported by `visionkit export --runtime "
        "openvino`, run without torch (load('model.xml') or load('openvino-ir', weights=...)).",
        precisions=("fp32", "bf16", "int8"),
        suffixes=(".xml",),
    )


@visionkit.hookimpl
def register_runtimes(register: Any) -> None:
    """Register the ``openvino`` runtime (fp32, bf16, int8) and its IR exporter."""
    register(
        "openvino",
        "visionkit_openvino._runtime:wrap",
        precisions=("fp32", "bf16", "int8"),
        requires=("openvino",),
        install="pip install visionkit-openvino",
        description="OpenVINO (CPU): fp32, bf16 (AMX/AVX512-BF16 CPUs) or INT8 (NNCF, detection head float).",
        exporter="visionkit_openvino._export:export",
        export_suffixes=(".xml",),
    )
