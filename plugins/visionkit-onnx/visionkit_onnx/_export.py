"""``export``: what ``visionkit export NAME --precision int8 --calib DIR --max-drop 1.5 -o FILE`` calls."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from visionkit import BackendError
from visionkit_onnx._runtime import OrtForward, check_gate, make_session, prepare

__all__ = ["export"]


def export(
    backend: Any, *, precision: str = "int8", output: str | os.PathLike[str], **runtime_options: Any
) -> dict[str, Any]:
    """Write ``backend``'s network as an ONNX file at ``precision``; refuse when the gate fails.

    Args:
        backend: a loaded float backend implementing :class:`visionkit.export.Exportable`.
        precision: ``"fp32"`` or ``"int8"``.
        output: the ``.onnx`` file to write (parent folders are created).
        **runtime_options: as for ``load(..., runtime_options=...)``: ``calib``, ``max_drop``,
            ``val``, ``annotations``, ``threads``, ``cache_dir`` ...

    Returns:
        A JSON-friendly report: ``output``, ``precision``, ``size_bytes``, ``sha256``, ``quantization``,
        ``float_nodes``, ``calibration``, ``gate`` (``None`` without ``max_drop``), ``cache_hit``, ``seconds``.

    Raises:
        ExportNotSupportedError, InvalidOptionError (AccuracyGateError: nothing is written), BackendError.
    """
    t0 = time.perf_counter()
    _, opts, built = prepare(backend, precision, runtime_options)
    gate = None
    if opts.max_drop is not None:
        session, _ = make_session(built, opts, getattr(backend, "device", "cpu"))
        forward = OrtForward(
            session, built.meta["structure"], getattr(backend, "device", "cpu"), backend.name
        )
        gate = check_gate(backend, forward, backend.forward, opts, built, precision)
    out = Path(output).expanduser()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        if built.model_bytes is not None:
            tmp.write_bytes(built.model_bytes)
        else:
            assert built.path is not None
            shutil.copyfile(built.path, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        raise BackendError(f"Could not write the ONNX model to {str(out)!r}: {exc}") from exc
    quant = built.meta.get("quantization") or {}
    return {
        "output": str(out),
        "backend": getattr(backend, "name", type(backend).__name__),
        "precision": precision,
        "size_bytes": built.meta["size"],
        "sha256": built.meta["sha256"],
        "quantization": quant.get("scheme"),
        "float_nodes": quant.get("float_nodes", []),
        "calibration": built.meta.get("calibration"),
        "gate": gate,
        "cache_hit": built.cache_hit,
        "seconds": round(time.perf_counter() - t0, 3),
    }
