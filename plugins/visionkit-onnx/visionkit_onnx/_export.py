"""``export``: what ``visionkit export NAME --precision int8 --calib DIR --max-drop 1.5 -o FILE`` calls.

A backend the deploy runtime can decode (:data:`visionkit_onnx._artifact.KINDS`) gets a self-describing
deploy artifact (:mod:`visionkit_onnx._artifact`): ``visionkit.load(FILE)`` then runs it without torch
(SAM: FILE is the encoder, ``FILE.decoder_forward.onnx`` beside it the prompt decoder). Any other
exportable backend gets the plain network, and the report's ``deploy`` says why it is not deployable.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from visionkit import BackendError
from visionkit_onnx._artifact import requested_plan, write_artifact
from visionkit_onnx._build import Built
from visionkit_onnx._runtime import OrtForward, check_gate, make_session, prepare, primary

__all__ = ["export"]


def export(
    backend: Any,
    *,
    precision: str = "int8",
    output: str | os.PathLike[str],
    deploy: bool | str | None = None,
    **runtime_options: Any,
) -> dict[str, Any]:
    """Write ``backend``'s network as an ONNX file at ``precision``; refuse when the gate fails (static
    INT8 with ``max_drop``: when no step of the search keeps enough nodes float to pass it).

    Args:
        backend: a loaded float backend implementing :class:`visionkit.export.Exportable`.
        precision: ``"fp32"`` or ``"int8"``.
        output: the ``.onnx`` file to write (parent folders are created).
        deploy: ``None`` (default): a deploy artifact when the backend can be deployed without torch,
            else the plain network; ``True``: refuse, before exporting anything, a backend that cannot;
            ``False``: always the plain network.
        **runtime_options: as for ``load(..., runtime_options=...)``: ``calib``, ``max_drop``,
            ``val``, ``annotations``, ``threads``, ``cache_dir`` ...

    Returns:
        A JSON-friendly report: ``output``, ``precision``, ``size_bytes``, ``sha256``, ``quantization``,
        ``float_nodes``, ``search`` (static INT8 with ``max_drop``: per step the float nodes, metric,
        drop and latency, and the nodes kept float; else ``None``), ``calibration``, ``gate`` (``None``
        without ``max_drop``), ``cache_hit``,
        ``files`` (stage → path: a backend with several networks writes ``NAME.STAGE.onnx`` beside
        ``output`` for the others), ``deploy`` (``{"artifact": bool, "reason": ...}``), ``seconds``.

    Raises:
        ExportNotSupportedError, InvalidOptionError (AccuracyGateError: nothing is written), BackendError.
    """
    t0 = time.perf_counter()
    plan, reason = requested_plan(backend, deploy)
    opts, parts = prepare(backend, precision, runtime_options)
    main_spec, main_built = primary(parts)
    gate = None
    if opts.max_drop is not None:
        device = getattr(backend, "device", "cpu")
        session, _ = make_session(main_built, opts, device)
        forward = OrtForward(session, main_built.meta["structure"], device, backend.name)
        gate = check_gate(backend, forward, getattr(backend, main_spec.stage), opts, main_built, precision)
    out = Path(output).expanduser()
    # The primary network goes to ``output``; any other (e.g. SAM's decoder) beside it as NAME.STAGE.onnx.
    files = {
        spec.stage: out if spec is main_spec else out.with_name(f"{out.stem}.{spec.stage}{out.suffix}")
        for spec, _ in parts
    }
    quant = main_built.meta.get("quantization") or {}
    if plan is not None:
        info = {
            "precision": precision,
            "calibration": main_built.meta.get("calibration"),
            "gate": gate,
            "quantization": {"scheme": quant.get("scheme"), "float_nodes": len(quant.get("float_nodes", []))},
            "source": {
                "backend": getattr(backend, "name", type(backend).__name__),
                "weights": str(getattr(backend, "weights", None)),
                # the export key holds the weights' sha256 (or a tensor hash for a random init)
                "fingerprint": main_spec.key,
                "network_sha256": main_built.meta["sha256"],
            },
        }
        others = [(spec, built) for spec, built in parts if spec is not main_spec]
        for spec, built in others:  # SAM's prompt decoder: a plain network beside the artifact
            _write(built, files[spec.stage])
        if others:
            plan = {
                **plan,
                "output": {
                    **plan["output"],
                    "decoder_file": files[others[0][0].stage].name,
                    "decoder_sha256": others[0][1].meta["sha256"],
                },
            }
        _write_artifact(main_built, plan, info, out)
    else:
        for (_, built), path in zip(parts, files.values(), strict=True):
            _write(built, path)
    return {
        "output": str(out),
        "backend": getattr(backend, "name", type(backend).__name__),
        "precision": precision,
        "size_bytes": main_built.meta["size"],
        "sha256": main_built.meta["sha256"],
        "quantization": quant.get("scheme"),
        "float_nodes": quant.get("float_nodes", []),
        "search": quant.get("search"),
        "calibration": main_built.meta.get("calibration"),
        "gate": gate,
        "cache_hit": main_built.cache_hit,
        "files": {stage: str(path) for stage, path in files.items()},
        "deploy": {"artifact": plan is not None, "reason": reason},
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _write_artifact(built: Built, plan: dict[str, Any], info: dict[str, Any], path: Path) -> None:
    """The network plus NMS and metadata, written atomically."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = built.model_bytes if built.model_bytes is not None else Path(str(built.path)).read_bytes()
        tmp = path.with_name(path.name + ".tmp")
        write_artifact(data, plan, info, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise BackendError(f"Could not write the ONNX model to {str(path)!r}: {exc}") from exc


def _write(built: Built, path: Path) -> None:
    """Copy a built model to ``path`` atomically."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        if built.model_bytes is not None:
            tmp.write_bytes(built.model_bytes)
        else:
            assert built.path is not None
            shutil.copyfile(built.path, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise BackendError(f"Could not write the ONNX model to {str(path)!r}: {exc}") from exc
