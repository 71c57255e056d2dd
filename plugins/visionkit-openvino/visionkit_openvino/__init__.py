"""visionkit-openvino: run any exportable visionkit backend in OpenVINO, fp32, bf16 or INT8 (NNCF).

Only the hook lives here; openvino, nncf, onnx and torch are imported when the runtime is used.
"""

from __future__ import annotations

from typing import Any

import visionkit

__all__ = ["register_runtimes"]


@visionkit.hookimpl
def register_runtimes(register: Any) -> None:
    """Register the ``openvino`` runtime (fp32, bf16, int8)."""
    register(
        "openvino",
        "visionkit_openvino._runtime:wrap",
        precisions=("fp32", "bf16", "int8"),
        requires=("openvino",),
        install="pip install visionkit-openvino",
        description="OpenVINO (CPU): fp32, bf16 (AMX/AVX512-BF16 CPUs) or INT8 (NNCF, detection head float).",
    )
