"""Runtime options of the ONNX Runtime runtime (``load(..., runtime_options={...})``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from visionkit.backend import parse_options

__all__ = ["RuntimeOptions", "parse_runtime_options"]


class RuntimeOptions(BaseModel):
    """What ``runtime_options`` accepts; unknown keys are rejected with the list of valid ones.

    Defaults follow what was measured fastest and accurate on an AVX512-VNNI CPU: static QDQ with U8
    activations and S8 per-channel weights, the detection-head tail kept in float.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    calib: Path | None = Field(
        None,
        description="Folder of calibration images (default: VISIONKIT_CALIB, else the real photos bundled with "
        "visionkit-onnx, see its calibration/LICENSES.md).",
    )
    calib_images: int = Field(32, ge=1, description="Calibration images used (the first N, sorted by name).")
    calibrate_method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="Range estimator."
    )
    quantization: Literal["auto", "static", "dynamic"] = Field(
        "auto", description="INT8 scheme; auto is static unless the backend's ExportSpec prefers dynamic."
    )
    activation_type: Literal["uint8", "int8"] = Field("uint8", description="Activation type for static INT8.")
    weight_type: Literal["int8", "uint8"] = Field("int8", description="Weight type for INT8.")
    per_channel: bool = Field(True, description="Per-output-channel weight scales.")
    keep_sensitive: bool = Field(
        True,
        description="Keep the nodes producing ExportSpec.sensitive_outputs (found by graph walk) in float.",
    )
    exclude_nodes: tuple[str, ...] = Field((), description="More ONNX node names to keep in float.")
    max_drop: float | None = Field(
        None,
        ge=0,
        description="Accuracy budget in metric points (mAP / top-1 / mIoU x100). Static INT8: the nodes "
        "with the largest quantization error are kept float, in growing steps, until the model holds it; "
        "every precision: refuse a worse model.",
    )
    accuracy_control_iterations: int = Field(
        8,
        ge=0,
        description="Static INT8 with max_drop: at most this many re-quantize + gate rounds after the "
        "plain INT8 model, keeping the worst 1, 2, 4, ... nodes float (0: only refuse). Named as the "
        "OpenVINO runtime's option (NNCF's max_num_iterations).",
    )
    val: Path | None = Field(
        None,
        description="Images for the accuracy gate (default: the calibration images, else the bundled photos).",
    )
    annotations: Path | None = Field(
        None, description="COCO instances JSON for the gate (detectors): real mAP."
    )
    val_images: int = Field(50, ge=1, description="Images the accuracy gate evaluates.")
    threads: int | None = Field(
        None, ge=1, description="ORT intra-op threads (default: ORT's, one per core)."
    )
    inter_op_threads: int | None = Field(None, ge=1, description="ORT inter-op threads.")
    spinning: bool | None = Field(
        None,
        description="ORT worker threads spin-wait between runs (default: yes for one network, no when a "
        "backend runs several, e.g. SAM's encoder and decoder, so they do not steal each other's cores).",
    )
    graph_optimization: Literal["all", "extended", "basic", "disable"] = Field(
        "all", description="ORT graph optimization level."
    )
    cache: bool = Field(True, description="Reuse exported/quantized models from the on-disk cache.")
    cache_dir: Path | None = Field(
        None, description="Cache folder (default: $VISIONKIT_CACHE/onnx, else ~/.cache/visionkit/onnx)."
    )


def parse_runtime_options(options: dict[str, Any], backend_name: str) -> RuntimeOptions:
    """Validate ``options``; raise :class:`visionkit.InvalidOptionError` naming the bad key."""
    # parse_options is typed for backend options; it only needs a pydantic model with extra="forbid"
    return parse_options(RuntimeOptions, options, f"{backend_name} on onnxruntime")  # type: ignore[type-var]
