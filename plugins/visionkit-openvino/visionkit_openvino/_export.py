"""``export``: what ``visionkit export NAME --runtime openvino --precision int8 -o FILE.xml`` calls.

The networks are the OpenVINO runtime's own (:func:`visionkit_openvino._runtime.prepare`: the same
conversion, NNCF INT8 recipe with the head kept float, accuracy control and gate, and disk cache as
``load(NAME, runtime="openvino")``), written as OpenVINO IR (``FILE.xml`` + ``FILE.bin``, weights
never compressed to fp16). A backend the deploy runtime can decode gets the same self-describing
metadata as visionkit-onnx's deploy artifact (:func:`visionkit_onnx._artifact.deploy_plan_for` and
:func:`~visionkit_onnx._artifact.artifact_meta`), in the IR's ``rt_info`` (``visionkit/schema``,
``visionkit/meta``), and a YOLO detector or segmenter gets the same in-graph NMS tail
(:func:`~visionkit_onnx._artifact.nms_tail`, converted by OpenVINO and joined after ``output0``).
``visionkit.load(FILE.xml)`` then runs it with OpenVINO, numpy and OpenCV, without torch.

bf16 is not a different file: it is OpenVINO's ``INFERENCE_PRECISION_HINT`` at compile time, so the
IR records it (``inference_precision`` in the metadata, and ``runtime_options/INFERENCE_PRECISION_HINT``
in ``rt_info``, where OpenVINO tools look) and a deploy load compiles with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from visionkit_onnx._artifact import SCHEMA, artifact_meta, nms_tail, requested_plan

from visionkit import BackendError, InvalidOptionError
from visionkit_openvino._build import sha256_file
from visionkit_openvino._runtime import PRECISIONS, prepare

__all__ = ["export"]

#: INFERENCE_PRECISION_HINT each exported precision is compiled with (INT8's float ops stay f32).
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def export(
    backend: Any,
    *,
    precision: str = "int8",
    output: str | os.PathLike[str],
    deploy: bool | str | None = None,
    **runtime_options: Any,
) -> dict[str, Any]:
    """Write ``backend``'s network as an OpenVINO IR at ``precision``; refuse when the gate fails.

    Args:
        backend: a loaded float backend implementing :class:`visionkit.export.Exportable`.
        precision: ``"fp32"``, ``"bf16"`` (an fp32 IR compiled with the bf16 hint) or ``"int8"`` (NNCF).
        output: the ``.xml`` file to write (``.bin`` beside it; parent folders are created).
        deploy: ``None`` (default): a deploy artifact when the backend can be deployed without torch,
            else the plain network; ``True``: refuse, before exporting anything, a backend that cannot;
            ``False``: always the plain network.
        **runtime_options: as for ``load(..., runtime="openvino", runtime_options=...)``: ``calib``,
            ``max_drop``, ``val``, ``annotations``, ``threads``, ``cache_dir`` ...

    Returns:
        A JSON-friendly report, as visionkit-onnx's exporter: ``output``, ``backend``, ``precision``,
        ``inference_precision``, ``size_bytes``, ``sha256``, ``quantization``, ``float_nodes``,
        ``calibration``, ``gate``, ``cache_hit``, ``files`` (stage → ``.xml``), ``deploy``, ``seconds``.

    Raises:
        ExportNotSupportedError, InvalidOptionError (AccuracyGateError: nothing is written), BackendError.
    """
    t0 = time.perf_counter()
    if precision not in PRECISIONS:
        raise InvalidOptionError(
            f"The openvino exporter writes precision {', '.join(PRECISIONS)}, but got {precision!r}."
        )
    out = Path(output).expanduser()
    if out.suffix.lower() != ".xml":
        raise InvalidOptionError(
            f"An OpenVINO IR is an .xml file (with its .bin beside it), but the output is {str(out)!r}; "
            f"use -o {out.with_suffix('.xml').name}.",
            key="output",
        )
    plan, reason = requested_plan(backend, deploy)
    prepared = prepare(backend, precision, runtime_options, compile_models=False)
    main_built, _ = prepared.parts[prepared.main.stage]
    files = {
        spec.stage: out if spec is prepared.main else out.with_name(f"{out.stem}.{spec.stage}{out.suffix}")
        for spec in prepared.specs
    }
    quant = main_built.meta.get("quantization") or {}
    hint = _HINTS[precision]
    # the others first (SAM's prompt decoder): the artifact names its file and checksum
    decoder: dict[str, Any] = {}
    for spec in prepared.specs:
        if spec is prepared.main:
            continue
        built, _ = prepared.parts[spec.stage]
        model = built.model.clone()
        model.set_rt_info(hint, ["runtime_options", "INFERENCE_PRECISION_HINT"])
        _save(model, files[spec.stage])
        decoder = {"decoder_file": files[spec.stage].name, "decoder_sha256": sha256_file(files[spec.stage])}
    model = main_built.model.clone()
    if plan is not None and plan["kind"] in ("yolo-detect", "yolo-segment"):
        model = _with_nms(model, len(plan["class_names"]), out.parent)
    model.set_rt_info(hint, ["runtime_options", "INFERENCE_PRECISION_HINT"])
    if plan is not None:
        if decoder:
            plan = {**plan, "output": {**plan["output"], **decoder}}
        info = {
            "precision": precision,
            "inference_precision": hint,
            "format": "openvino-ir",
            "calibration": main_built.meta.get("calibration"),
            "gate": prepared.runtime["gate"],
            "quantization": {
                "scheme": quant.get("scheme"),
                "float_nodes": len(quant.get("ignored") or []),
                "float_compute_ops": quant.get("float_compute_ops"),
                "compute_ops": quant.get("compute_ops"),
                "accuracy_control": quant.get("accuracy_control"),
            },
            "source": {
                "backend": getattr(backend, "name", type(backend).__name__),
                "weights": str(getattr(backend, "weights", None)),
                "fingerprint": prepared.main.key,
                "network_sha256": main_built.meta.get("sha256"),
                "openvino": prepared.runtime.get("openvino"),
            },
        }
        model.set_rt_info(str(SCHEMA), ["visionkit", "schema"])
        model.set_rt_info(json.dumps(artifact_meta(plan, info), sort_keys=True), ["visionkit", "meta"])
    _save(model, out)
    digest = hashlib.sha256((sha256_file(out) + sha256_file(out.with_suffix(".bin"))).encode()).hexdigest()
    return {
        "output": str(out),
        "backend": getattr(backend, "name", type(backend).__name__),
        "runtime": "openvino",
        "precision": precision,
        "inference_precision": hint,
        "size_bytes": out.stat().st_size + out.with_suffix(".bin").stat().st_size,
        "sha256": digest,
        "quantization": quant.get("scheme"),
        "float_nodes": list(quant.get("ignored") or []),
        "calibration": main_built.meta.get("calibration"),
        "gate": prepared.runtime["gate"],
        "cache_hit": main_built.cache_hit,
        "files": {stage: str(path) for stage, path in files.items()},
        "deploy": {"artifact": plan is not None, "reason": reason},
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _with_nms(model: Any, num_classes: int, folder: Path) -> Any:
    """``model`` with visionkit-onnx's NMS tail joined after ``output0``: new inputs ``conf``, ``iou``,
    ``max_det``, ``class_offset``, new output ``selected`` (the ONNX artifact's graph, node for node)."""
    import onnx
    import openvino as ov

    work = Path(tempfile.mkdtemp(prefix="vk-ov-nms-", dir=folder if folder.is_dir() else None))
    try:
        path = work / "nms.onnx"
        onnx.save(nms_tail(num_classes), str(path))
        tail = ov.Core().read_model(str(path))  # OpenVINO's ONNX frontend, as a deploy .onnx is read
    except Exception as exc:
        raise BackendError(f"OpenVINO could not convert the NMS tail: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raw = next(
        (r.input_value(0) for r in model.get_results() if "output0" in r.input_value(0).get_names()), None
    )
    if raw is None:
        raise BackendError("The network has no 'output0' to append NMS to.")
    params = {p.output(0).get_any_name(): p for p in tail.get_parameters()}
    for target in list(params["output0"].output(0).get_target_inputs()):
        target.replace_source_output(raw)
    return ov.Model(
        [*model.get_results(), *tail.get_results()],
        [*model.get_parameters(), *(p for n, p in params.items() if n != "output0")],
        model.get_friendly_name(),
    )


def _save(model: Any, path: Path) -> None:
    """``.xml`` + ``.bin`` at ``path``, fp32 weights kept (OpenVINO compresses to fp16 by default)."""
    import openvino as ov

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{path.stem}-", dir=path.parent))
        try:
            tmp = work / "model.xml"
            ov.save_model(model, str(tmp), compress_to_fp16=False)
            os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(tmp, path)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except OSError as exc:
        raise BackendError(f"Could not write the OpenVINO IR to {str(path)!r}: {exc}") from exc
