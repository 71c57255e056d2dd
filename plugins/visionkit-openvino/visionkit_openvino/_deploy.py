"""``openvino-ir``: run an OpenVINO IR deploy artifact (``visionkit export NAME --runtime openvino``)
with OpenVINO, numpy and OpenCV only: no torch, torchvision, ultralytics, transformers or
segment_anything (a subprocess test proves it).

The pre- and post-processing are visionkit-onnx's deploy classes (:mod:`visionkit_onnx._deploy`), the
same for an ONNX artifact; only the engine differs (:class:`visionkit_onnx._deploy.OvEngine`, compiled
with the precision hint the IR records).
"""

from __future__ import annotations

from typing import Any

from visionkit import Backend, InvalidOptionError

__all__ = ["load_ir"]


def load_ir(
    *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any
) -> Backend[Any]:
    """The ``openvino-ir`` backend's factory: ``load("model.xml")`` / ``load("openvino-ir", weights=...)``."""
    from visionkit_onnx._deploy import load_artifact

    if weights is None:
        raise InvalidOptionError(
            "load('openvino-ir') needs weights=PATH of an .xml exported by "
            "`visionkit export NAME --runtime openvino -o model.xml`."
        )
    engine = options.pop("engine", "openvino")
    return load_artifact(weights=weights, device=device, precision=precision, engine=engine, **options)
