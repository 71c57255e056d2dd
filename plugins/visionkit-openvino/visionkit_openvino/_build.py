"""Export a backend's network, convert it to OpenVINO IR, quantize it with NNCF, and cache it on disk.

Route: ``torch.onnx.export`` of the core's :class:`visionkit.export.ExportSpec` (names, dynamic axes,
opset: the same graph every exportable backend already hands to ONNX Runtime), then
``openvino.convert_model`` of that file. fp32 and bf16 share one IR: bf16 is a compile-time
inference-precision hint, not a different model.

Cache layout: ``<cache_dir>/<backend>-<float|int8>-<key>.xml`` / ``.bin`` plus a ``.json`` sidecar
holding the key material and the sha256 of both files. A sidecar that is missing, unreadable or
disagrees with the files makes the entry rebuilt with a warning. Builds of one entry are serialised
by a lock file, so two processes never write the same entry at once; nothing changes the working
directory or any process-wide setting.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from visionkit import BackendError, BackendUnavailableError
from visionkit.export import ExportSpec
from visionkit_openvino._calib import SYNTHETIC, calibration_images, model_feeds
from visionkit_openvino._graph import float_compute_ops, sensitive_ops
from visionkit_openvino._options import RuntimeOptions

__all__ = ["CACHE_FORMAT", "Built", "build_model", "cache_dir", "file_lock", "sha256_file", "write_meta"]

CACHE_FORMAT = 1
#: Bump when the INT8 recipe (graph walk, NNCF settings) changes, so old entries are not reused.
QUANT_RECIPE = 1


@dataclass
class Built:
    """A ready OpenVINO model (``openvino.Model``) and what is known about it."""

    model: Any
    meta: dict[str, Any]
    cache_hit: bool
    xml_path: Path | None = None
    meta_path: Path | None = None


def cache_dir(opts: RuntimeOptions) -> Path:
    """``cache_dir`` option, else ``$VISIONKIT_CACHE/openvino``, else ``~/.cache/visionkit/openvino``."""
    if opts.cache_dir is not None:
        return Path(opts.cache_dir).expanduser()
    root = os.environ.get("VISIONKIT_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "visionkit") / "openvino"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def versions(int8: bool) -> dict[str, str]:
    """Versions that change a conversion (and, for INT8, a quantization)."""
    dists = ["torch", "onnx", "openvino", "visionkit-core", "visionkit-openvino"] + (["nncf"] if int8 else [])
    return {d: _version(d) for d in dists}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def output_structure(spec: ExportSpec) -> str:
    """``"tensor"`` or ``"tuple"``: what ``spec.module`` returns, so the runtime returns the same."""
    import torch

    with torch.no_grad():
        out = spec.module(*spec.example_inputs)
    if isinstance(out, torch.Tensor):
        structure, count = "tensor", 1
    elif isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out):
        structure, count = "tuple", len(out)
    else:
        raise BackendError(
            f"ExportSpec.module must return a tensor or a flat tuple of tensors, but returned {type(out).__name__}."
        )
    if count != len(spec.output_names):
        raise BackendError(
            f"ExportSpec.output_names has {len(spec.output_names)} names ({', '.join(spec.output_names)}), "
            f"but the module returns {count} tensors."
        )
    return structure


def key_material(
    spec: ExportSpec,
    int8: bool,
    opts: RuntimeOptions,
    calib: dict[str, Any] | None,
    accuracy: dict[str, Any] | None,
) -> dict[str, Any]:
    """Everything the model files depend on; hashed into the cache key."""
    shapes = [
        [*getattr(x, "shape", ()), str(getattr(x, "dtype", type(x).__name__))] for x in spec.example_inputs
    ]
    material: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "spec_key": spec.key,
        "stage": spec.stage,
        "inputs": spec.input_names,
        "input_shapes": shapes,
        "outputs": spec.output_names,
        "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in (spec.dynamic_axes or {}).items()},
        "opset": spec.opset,
        "versions": versions(int8),
    }
    if int8:
        material["quant"] = {
            "recipe": QUANT_RECIPE,
            "preset": opts.preset,
            "keep_sensitive": opts.keep_sensitive,
            "sensitive_outputs": list(spec.sensitive_outputs),
            "exclude_nodes": list(opts.exclude_nodes),
            "transformer": spec.dynamic_quantization,
            "calibration": calib,
            "accuracy_control": accuracy,
        }
    return material


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX ``flock``; no lock where the OS has none)."""
    try:
        import fcntl
    except ModuleNotFoundError:  # Windows: builds of one entry are then not serialised across processes
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def export_onnx(spec: ExportSpec, path: Path, backend_name: str) -> None:
    """``torch.onnx.export`` (TorchScript exporter) of the spec, as the core's ExportSpec describes it."""
    import torch

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python values are expected and noisy
            torch.onnx.export(
                spec.module,
                tuple(spec.example_inputs),
                str(path),
                input_names=list(spec.input_names),
                output_names=list(spec.output_names),
                dynamic_axes=dict(spec.dynamic_axes) or None,
                opset_version=spec.opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:
        raise BackendError(
            f"Exporting backend {backend_name!r} to ONNX failed: {type(exc).__name__}: {exc}"
        ) from exc


def convert(spec: ExportSpec, backend_name: str, work: Path) -> Any:
    """The spec's network as an ``openvino.Model`` (inputs and outputs named as in the spec)."""
    import openvino as ov

    onnx_path = work / "model.onnx"
    export_onnx(spec, onnx_path, backend_name)
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:
        raise BackendError(
            f"OpenVINO could not convert backend {backend_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    names = [sorted(o.get_names()) for o in model.outputs]
    missing = [n for n in spec.output_names if not any(n in ns for ns in names)]
    if missing:
        raise BackendError(f"OpenVINO's model lacks outputs {missing}; it has {names}.")
    return model


def _nncf() -> Any:
    try:
        import nncf
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError("openvino int8", ["nncf"], "pip install visionkit-openvino") from exc
    return nncf


@dataclass
class AccuracyControl:
    """What accuracy-aware INT8 needs from the gate: a validation function and its data."""

    fingerprint: dict[str, Any]
    items: list[Any]
    #: ``validate(compiled_model, items) -> (metric in points, None)``, as NNCF calls it
    validate: Callable[[Any, Any], tuple[float, None]]


def quantize(
    model: Any,
    spec: ExportSpec,
    opts: RuntimeOptions,
    backend: Any,
    images: list[Any],
    accuracy: AccuracyControl | None,
) -> tuple[Any, dict[str, Any]]:
    """NNCF INT8 of ``model``; returns the quantized model and what was done."""
    nncf = _nncf()
    to_inputs = spec.calibration_inputs
    if to_inputs is None and spec.stage != "forward":
        raise BackendError(
            f"INT8 of stage {spec.stage!r} needs ExportSpec.calibration_inputs to turn calibration images "
            "into its inputs."
        )
    to_inputs = to_inputs or (lambda ims: backend.preprocess(ims, backend.options).inputs)
    names = list(spec.input_names)

    def transform(image: Any) -> dict[str, Any]:
        return model_feeds(to_inputs([image]), names)

    keep = list(opts.exclude_nodes)
    if opts.keep_sensitive and spec.sensitive_outputs:
        keep += [n for n in sensitive_ops(model, spec.sensitive_outputs) if n not in keep]
    scope = nncf.IgnoredScope(names=keep, validate=False) if keep else None
    kwargs: dict[str, Any] = {
        "preset": nncf.QuantizationPreset.MIXED
        if opts.preset == "mixed"
        else nncf.QuantizationPreset.PERFORMANCE,
        "subset_size": max(1, len(images)),
        "ignored_scope": scope,
        "model_type": nncf.ModelType.TRANSFORMER if spec.dynamic_quantization else None,
    }
    calibration = nncf.Dataset(images, transform)
    info: dict[str, Any] = {"scheme": "nncf", "ignored": keep}
    try:
        if accuracy is None:
            q = nncf.quantize(model, calibration, **kwargs)
        else:
            from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

            q = nncf.quantize_with_accuracy_control(
                model,
                calibration,
                nncf.Dataset(accuracy.items),
                accuracy.validate,
                max_drop=float(opts.max_drop or 0.0),
                drop_type=nncf.DropType.ABSOLUTE,
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                    max_num_iterations=opts.accuracy_control_iterations,
                    ranking_subset_size=min(len(accuracy.items), 8),
                ),
                **kwargs,
            )
            info["accuracy_control"] = {"max_drop": opts.max_drop, **accuracy.fingerprint}
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(
            f"Quantizing backend {getattr(backend, 'name', '?')!r} to INT8 with NNCF failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    float_ops, total = float_compute_ops(q)
    info.update(float_compute_ops=float_ops, compute_ops=total)
    return q, info


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "backend"


def _files_digest(xml: Path) -> dict[str, Any]:
    bin_ = xml.with_suffix(".bin")
    return {
        "size": xml.stat().st_size + bin_.stat().st_size,
        "sha256": hashlib.sha256((sha256_file(xml) + sha256_file(bin_)).encode()).hexdigest(),
    }


def read_cache(xml: Path, meta_path: Path, material: dict[str, Any]) -> dict[str, Any] | None:
    """The sidecar metadata when the cached model is valid, else ``None`` (warning when it was bad)."""
    if not xml.exists() and not meta_path.exists():
        return None
    problem = None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("material") != material:
            problem = "it was built from different inputs (stale)"
        elif not xml.exists() or not xml.with_suffix(".bin").exists():
            problem = "a model file is missing"
        elif {k: meta.get(k) for k in ("size", "sha256")} != _files_digest(xml):
            problem = "the model files do not match their recorded checksum (corrupt)"
    except (OSError, ValueError) as exc:
        problem = f"its metadata cannot be read ({type(exc).__name__})"
    if problem is None:
        return meta
    warnings.warn(f"Rebuilding cached OpenVINO model {xml}: {problem}.", RuntimeWarning, stacklevel=4)
    return None


def write_meta(meta_path: Path, meta: dict[str, Any]) -> None:
    """Atomic write, so a crash never leaves a half-written sidecar behind."""
    tmp = meta_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, meta_path)


def build_model(
    backend: Any,
    spec: ExportSpec,
    int8: bool,
    opts: RuntimeOptions,
    accuracy: AccuracyControl | None = None,
) -> Built:
    """The OpenVINO model of ``spec``: from the cache, or exported, converted (and quantized) now."""
    import openvino as ov

    name = getattr(backend, "name", type(backend).__name__)
    load_calib, calib = calibration_images(opts.calib, opts.calib_images) if int8 else (None, None)
    material = key_material(spec, int8, opts, calib, accuracy.fingerprint if accuracy else None)
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_dir(opts)
    part = "" if spec.stage == "forward" else f"-{_safe(spec.stage)}"
    stem = f"{_safe(name)}{part}-{'int8' if int8 else 'float'}-{key}"
    xml, meta_path = folder / f"{stem}.xml", folder / f"{stem}.json"
    core = ov.Core()
    lock: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if opts.cache:
        folder.mkdir(parents=True, exist_ok=True)
        lock = file_lock(folder / f"{stem}.lock")
    with lock:
        if opts.cache:
            cached = read_cache(xml, meta_path, material)
            if cached is not None:
                return Built(core.read_model(str(xml)), cached, True, xml, meta_path)
        t0 = time.perf_counter()
        structure = output_structure(spec)
        work = Path(tempfile.mkdtemp(prefix="vk-openvino-", dir=folder if opts.cache else None))
        try:
            model = convert(spec, name, work)
            info: dict[str, Any] = {}
            if int8:
                if calib is not None and calib["source"] == SYNTHETIC:
                    warnings.warn(
                        f"Calibrating INT8 {name!r} on {calib['images']} synthetic images: no calib= folder and "
                        "no VISIONKIT_CALIB. Pass calib= with a few dozen images of your domain for best accuracy.",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                assert load_calib is not None
                model, info = quantize(model, spec, opts, backend, load_calib(), accuracy)
            meta: dict[str, Any] = {
                "material": material,
                "key": key,
                "backend": name,
                "structure": structure,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "build_seconds": round(time.perf_counter() - t0, 3),
                "quantization": info,
                "calibration": calib,
                "gates": {},
            }
            if not opts.cache:
                meta["size"] = None
                return Built(model, meta, False)
            tmp_xml = work / "model.xml"
            # compress_to_fp16 defaults to True: fp32 weights would be stored (and run) rounded to fp16
            ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
            meta.update(_files_digest(tmp_xml))
            os.replace(tmp_xml.with_suffix(".bin"), xml.with_suffix(".bin"))
            os.replace(tmp_xml, xml)
            write_meta(meta_path, meta)
            return Built(model, meta, False, xml, meta_path)
        finally:
            shutil.rmtree(work, ignore_errors=True)
