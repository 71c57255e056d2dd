"""Runtime options of the OpenVINO runtime (``load(..., runtime="openvino", runtime_options={...})``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from visionkit.backend import parse_options

__all__ = ["RuntimeOptions", "parse_runtime_options"]


class RuntimeOptions(BaseModel):
    """What ``runtime_options`` accepts; unknown keys are rejected with the list of valid ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calib: Path | None = Field(
        None,
        description="Folder of calibration images (default: VISIONKIT_CALIB, else synthetic images, reported).",
    )
    calib_images: int = Field(32, ge=1, description="Calibration images used (the first N, sorted by name).")
    preset: Literal["performance", "mixed"] = Field(
        "mixed",
        description="NNCF preset: mixed = symmetric weights, asymmetric activations (as ultralytics uses).",
    )
    keep_sensitive: bool = Field(
        True,
        description="Keep the ops producing ExportSpec.sensitive_outputs (found by graph walk) in float.",
    )
    exclude_nodes: tuple[str, ...] = Field((), description="More OpenVINO op names to keep in float.")
    max_drop: float | None = Field(
        None,
        ge=0,
        description="Accuracy budget in metric points (mAP / top-1 / mIoU x100). INT8: NNCF's accuracy-aware "
        "quantization reverts the worst layers to float until it holds; every precision: refuse a worse model.",
    )
    accuracy_control_iterations: int = Field(
        20, ge=1, description="At most this many layers reverted to float by accuracy-aware INT8."
    )
    val: Path | None = Field(
        None, description="Images for the accuracy gate (default: the calibration images)."
    )
    annotations: Path | None = Field(
        None, description="COCO instances JSON for the gate (detectors): real mAP."
    )
    val_images: int = Field(50, ge=1, description="Images the accuracy gate evaluates.")
    threads: int | None = Field(
        None,
        ge=1,
        description="INFERENCE_NUM_THREADS (default: the CPUs this process may run on, os.sched_getaffinity).",
    )
    streams: int = Field(1, ge=1, description="NUM_STREAMS: 1 for batch-1 latency.")
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = Field("LATENCY", description="PERFORMANCE_HINT.")
    pinning: bool | None = Field(
        None,
        description="ENABLE_CPU_PINNING (default: OpenVINO's; pinning hurts on CPUs shared with others).",
    )
    cache: bool = Field(True, description="Reuse converted/quantized models from the on-disk cache.")
    cache_dir: Path | None = Field(
        None,
        description="Cache folder (default: $VISIONKIT_CACHE/openvino, else ~/.cache/visionkit/openvino).",
    )


def parse_runtime_options(options: dict[str, Any], backend_name: str) -> RuntimeOptions:
    """Validate ``options``; raise :class:`visionkit.InvalidOptionError` naming the bad key."""
    return parse_options(RuntimeOptions, options, f"{backend_name} on openvino")  # type: ignore[type-var]
