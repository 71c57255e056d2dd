"""``export``: what ``visionkit export NAME --precision int8 --calib DIR --max-drop 1.5 -o FILE`` calls."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from visionkit import BackendError
from visionkit_onnx._build import Built
from visionkit_onnx._runtime import OrtForward, check_gate, make_session, prepare, primary

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
        ``float_nodes``, ``calibration``, ``gate`` (``None`` without ``max_drop``), ``cache_hit``,
        ``files`` (stage → path: a backend with several networks writes ``NAME.STAGE.onnx`` beside
        ``output`` for the others), ``seconds``.

    Raises:
        ExportNotSupportedError, InvalidOptionError (AccuracyGateError: nothing is written), BackendError.
    """
    t0 = time.perf_counter()
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
    for (_, built), path in zip(parts, files.values(), strict=True):
        _write(built, path)
    quant = main_built.meta.get("quantization") or {}
    return {
        "output": str(out),
        "backend": getattr(backend, "name", type(backend).__name__),
        "precision": precision,
        "size_bytes": main_built.meta["size"],
        "sha256": main_built.meta["sha256"],
        "quantization": quant.get("scheme"),
        "float_nodes": quant.get("float_nodes", []),
        "calibration": main_built.meta.get("calibration"),
        "gate": gate,
        "cache_hit": main_built.cache_hit,
        "files": {stage: str(path) for stage, path in files.items()},
        "seconds": round(time.perf_counter() - t0, 3),
    }


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
