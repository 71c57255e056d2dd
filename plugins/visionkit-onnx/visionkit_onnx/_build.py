"""Export a backend's network to ONNX, quantize it, and cache the result on disk.

Cache layout: ``<cache_dir>/<backend>-<precision>-<key>.onnx`` plus a ``.json`` sidecar holding the
material the key was derived from and the file's sha256. A sidecar that is missing, unreadable or
disagrees with the model file (a truncated write, a file edited or replaced by hand) makes the entry
invalid: it is rebuilt with a warning. Versions of torch, onnx, onnxruntime and visionkit are part
of the key, so an upgrade never reuses an export made by another version. A static INT8 model built
under ``max_drop`` is searched (:mod:`visionkit_onnx._search`): its entry's key holds the budget and
the search settings, and its sidecar the search's report and the accepted model's gate result.

Builds change no process-global state (no ``chdir``): every scratch file lives in a private temporary
folder. They are serialised twice: a process-wide lock (``torch.onnx.export`` keeps global state and
fails when two threads export at once) and a file lock per cache entry (``<stem>.lock``), so two
processes asking for the same model build it once and the second reuses the first's file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from visionkit import BackendError
from visionkit.export import ExportSpec
from visionkit_onnx._calib import FeedReader, calibration_images
from visionkit_onnx._graph import boundary_nodes, ensure_node_names, sensitive_nodes
from visionkit_onnx._options import RuntimeOptions
from visionkit_onnx._search import (
    RANK_IMAGES,
    SearchProbe,
    rank_nodes,
    search_float_nodes,
    unround_inputs,
)

__all__ = ["CACHE_FORMAT", "Built", "build_model", "cache_dir", "export_onnx", "quantize", "sha256_file"]

CACHE_FORMAT = 1
#: Held while exporting/quantizing: torch's ONNX exporter is not thread-safe (process-global flags).
_BUILD_LOCK = threading.RLock()
#: Seconds to wait for another process building the same cache entry before giving up.
LOCK_TIMEOUT = 1800.0
#: Bump when the quantization recipe (graph walk, defaults) changes, so old INT8 entries are not reused.
QUANT_RECIPE = 3  # 3: the compute ops feeding the float tail stay float too


def reduce_range() -> bool:
    """Whether INT8 weights should use 7 bits: on x86 CPUs without VNNI, ONNX Runtime's U8S8 kernels
    (``vpmaddubsw``) saturate 16-bit sums of full-range products; VNNI (and AMX) do not.

    ONNX Runtime's quantization guide recommends ``reduce_range`` there. Only x86 is affected.
    """
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False  # not Linux: keep ONNX Runtime's default
    return not any(f in flags.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


@dataclass
class Built:
    """A ready model: where it is (or its bytes when caching is off) and what is known about it."""

    path: Path | None
    meta: dict[str, Any]
    cache_hit: bool
    model_bytes: bytes | None = None
    meta_path: Path | None = None
    build_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def cache_dir(opts: RuntimeOptions) -> Path:
    """``cache_dir`` option, else ``$VISIONKIT_CACHE/onnx``, else ``~/.cache/visionkit/onnx``."""
    if opts.cache_dir is not None:
        return Path(opts.cache_dir).expanduser()
    root = os.environ.get("VISIONKIT_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "visionkit") / "onnx"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def versions() -> dict[str, str]:
    """Versions that change an export or a quantization."""
    return {d: _version(d) for d in ("torch", "onnx", "onnxruntime", "visionkit-core", "visionkit-onnx")}


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
        structure = "tensor"
        count = 1
    elif isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out):
        structure = "tuple"
        count = len(out)
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
    precision: str,
    opts: RuntimeOptions,
    calib: dict[str, Any] | None,
    search: dict[str, Any] | None = None,
) -> dict:
    """Everything the model file depends on; hashed into the cache key.

    ``search`` (:attr:`visionkit_onnx._search.SearchProbe.key`) is there only for a static INT8 model
    searched under ``max_drop``: another budget, step limit or gate data is another entry, and a load
    without ``max_drop`` keeps the plain model's key.
    """
    shapes = [
        [*getattr(x, "shape", ()), str(getattr(x, "dtype", type(x).__name__))] for x in spec.example_inputs
    ]
    material: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "spec_key": spec.key,
        "precision": precision,
        "inputs": spec.input_names,
        "input_shapes": shapes,
        "outputs": spec.output_names,
        "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in (spec.dynamic_axes or {}).items()},
        "opset": spec.opset,
        "versions": versions(),
    }
    if spec.stage != "forward":
        material["stage"] = spec.stage
    if precision == "int8":
        scheme = quant_scheme(spec, opts)
        material["quant"] = {
            "recipe": QUANT_RECIPE,
            "scheme": scheme,
            "activation_type": opts.activation_type if scheme == "static" else None,
            "weight_type": opts.weight_type,
            "per_channel": opts.per_channel,
            "reduce_range": reduce_range(),
            "calibrate_method": opts.calibrate_method if scheme == "static" else None,
            "keep_sensitive": opts.keep_sensitive,
            "sensitive_outputs": list(spec.sensitive_outputs),
            "exclude_nodes": list(opts.exclude_nodes),
            "calibration": calib if scheme == "static" else None,
        }
        if search is not None and scheme == "static":
            material["quant"]["search"] = search
    return material


def quant_scheme(spec: ExportSpec, opts: RuntimeOptions) -> str:
    """``static`` or ``dynamic``."""
    if opts.quantization != "auto":
        return opts.quantization
    return "dynamic" if spec.dynamic_quantization else "static"


def export_onnx(spec: ExportSpec, path: Path, backend_name: str) -> None:
    """``torch.onnx.export`` (TorchScript exporter: mature for CNNs and names every node)."""
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


@contextlib.contextmanager
def _no_debris() -> Iterator[None]:
    """Remove the model onnxruntime's symbolic shape inference dumps into the working directory when it fails.

    ``SymbolicShapeInference.infer_shapes`` saves ``sym_shape_infer_temp.onnx`` plus a ``<uuid>.data``
    weights file to the current directory before raising; only files that appeared during the call and
    that this model file names as its external data are removed.
    """
    dump = Path.cwd() / "sym_shape_infer_temp.onnx"
    existed = dump.exists()
    try:
        yield
    finally:
        if dump.exists() and not existed:
            with contextlib.suppress(Exception):
                import onnx

                model = onnx.load(str(dump), load_external_data=False)
                locations = {
                    entry.value
                    for tensor in model.graph.initializer
                    for entry in tensor.external_data
                    if entry.key == "location"
                }
                for name in locations:
                    data = dump.parent / name
                    if data.parent == dump.parent and data.is_file():
                        data.unlink()
            dump.unlink(missing_ok=True)


def _prepare(src: Path, dst: Path) -> None:
    """``quant_pre_process`` (shape inference + basic fusions); falls back to fewer passes if one fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    attempts: tuple[dict[str, bool], ...] = (
        {},
        {"skip_symbolic_shape": True},
        {"skip_symbolic_shape": True, "skip_optimization": True},
    )
    last: Exception | None = None
    for kw in attempts:
        try:
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), _no_debris():
                quant_pre_process(str(src), str(dst), **kw)
            return
        except Exception as exc:  # symbolic shape inference does not know every op
            last = exc
    shutil.copyfile(src, dst)
    warnings.warn(
        f"quant_pre_process failed ({last}); quantizing the raw export.", RuntimeWarning, stacklevel=3
    )


def _supports_calibration_cache() -> bool:
    """Whether ``quantize_static`` can save and reuse calibration ranges (onnxruntime >= 1.32)."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def quantize(
    src: Path,
    dst: Path,
    spec: ExportSpec,
    opts: RuntimeOptions,
    backend: Any,
    calib_imgs: list[Any] | None,
    probe: SearchProbe | None = None,
    structure: str = "tensor",
) -> dict[str, Any]:
    """INT8 ``src`` into ``dst``; returns what was done (scheme, float nodes, ...).

    With ``probe`` (static INT8 under ``max_drop``), :func:`visionkit_onnx._search.search_float_nodes`
    keeps the nodes with the largest quantization error float until the gate holds; the report is
    under ``"search"`` and those nodes are added to ``"float_nodes"``.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    prepared = dst.with_suffix(".prep.onnx")
    _prepare(src, prepared)
    model = onnx.load(str(prepared))
    ensure_node_names(model)
    onnx.save(model, str(prepared))
    keep = list(opts.exclude_nodes)
    if opts.keep_sensitive and spec.sensitive_outputs:
        tail = sensitive_nodes(model, spec.sensitive_outputs)
        keep += [n for n in [*tail, *boundary_nodes(model, tail)] if n not in keep]
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    scheme = quant_scheme(spec, opts)
    info: dict[str, Any] = {
        "scheme": scheme,
        "float_nodes": keep,
        "nodes": len(model.graph.node),
        "reduce_range": reduce_range(),
    }
    to_inputs = spec.calibration_inputs
    if scheme == "static" and to_inputs is None and spec.stage != "forward":
        raise BackendError(
            f"Static INT8 of stage {spec.stage!r} needs ExportSpec.calibration_inputs to turn "
            "calibration images into its inputs; use quantization='dynamic' instead."
        )
    to_inputs = to_inputs or (lambda ims: backend.preprocess(ims, backend.options).inputs)
    # one calibration pass serves every step of a search: the ranges are the float model's tensors'
    searching = probe is not None and scheme == "static"
    ranges = dst.with_name(f"{dst.stem}.ranges.json") if searching and _supports_calibration_cache() else None
    static_extra: dict[str, Any] = {} if ranges is None else {"calibration_cache_path": str(ranges)}

    def run(extra: Sequence[str], out: Path) -> None:
        excluded = [*keep, *(n for n in extra if n not in keep)]
        try:
            if scheme == "dynamic":
                # Dynamic INT8 pays off on MatMul-heavy (transformer) graphs; ConvInteger is slow on CPU.
                quantize_dynamic(
                    str(prepared),
                    str(out),
                    op_types_to_quantize=["MatMul", "Attention", "Gemm"],
                    per_channel=opts.per_channel,
                    reduce_range=info["reduce_range"],
                    weight_type=qtype[opts.weight_type],
                    nodes_to_exclude=excluded,
                )
            else:
                method = {
                    "minmax": CalibrationMethod.MinMax,
                    "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile,
                }[opts.calibrate_method]
                quantize_static(
                    str(prepared),
                    str(out),
                    FeedReader(calib_imgs or [], to_inputs, spec.input_names),
                    quant_format=QuantFormat.QDQ,
                    per_channel=opts.per_channel,
                    reduce_range=info["reduce_range"],
                    activation_type=qtype[opts.activation_type],
                    weight_type=qtype[opts.weight_type],
                    nodes_to_exclude=excluded,
                    calibrate_method=method,
                    **static_extra,
                )
                if extra:  # the search's float nodes also read their inputs unrounded
                    unround_inputs(out, extra, prepared)
        except Exception as exc:
            raise BackendError(
                f"Quantizing backend {getattr(backend, 'name', '?')!r} to INT8 ({scheme}) failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def rank(plain: Path) -> list[dict[str, Any]]:
        feeds = FeedReader((calib_imgs or [])[:RANK_IMAGES], to_inputs, spec.input_names)
        # the recipe's float nodes are ranked too: the search can still unround their inputs
        return rank_nodes(prepared, plain, iter(feeds.get_next, None), work=dst.parent)

    try:
        if probe is None or not searching:
            run([], dst)
        else:
            report = search_float_nodes(
                run,
                rank,
                lambda path: probe.score(path, structure),
                dst,
                max_drop=probe.max_drop,
                iterations=probe.iterations,
                backend_name=str(getattr(backend, "name", "?")),
            )
            info["search"] = report
            info["float_nodes"] = [*keep, *(n for n in report["kept_float"] if n not in keep)]
    finally:
        prepared.unlink(missing_ok=True)
        if ranges is not None:
            ranges.unlink(missing_ok=True)
    return info


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "backend"


def read_cache(
    model_path: Path, meta_path: Path, material: dict[str, Any], *, quiet: bool = False
) -> dict[str, Any] | None:
    """The sidecar metadata when the cached model is valid, else ``None`` (with a warning if it was bad,
    unless ``quiet``)."""
    if not model_path.exists() and not meta_path.exists():
        return None
    problem = None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("material") != material:
            problem = "it was built from different inputs (stale)"
        elif not model_path.exists():
            problem = "the model file is missing"
        elif meta.get("size") != model_path.stat().st_size or meta.get("sha256") != sha256_file(model_path):
            problem = "the model file does not match its recorded checksum (corrupt)"
    except (OSError, ValueError) as exc:
        problem = f"its metadata cannot be read ({type(exc).__name__})"
    if problem is None:
        return meta
    if quiet:
        return None
    warnings.warn(f"Rebuilding cached ONNX model {model_path}: {problem}.", RuntimeWarning, stacklevel=4)
    return None


def write_meta(meta_path: Path, meta: dict[str, Any]) -> None:
    """Atomic write, so a crash never leaves a half-written sidecar behind."""
    tmp = meta_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, meta_path)


def build_model(
    backend: Any, spec: ExportSpec, precision: str, opts: RuntimeOptions, probe: SearchProbe | None = None
) -> Built:
    """The ONNX model for ``backend`` at ``precision``: from the cache, or exported (and quantized) now.

    ``probe``: search static INT8 for the fewest float nodes that hold the accuracy budget
    (:mod:`visionkit_onnx._search`); a cache hit reuses the accepted model and its report.

    Thread- and process-safe: builds are serialised in the process, and per cache entry across
    processes (a file lock), so concurrent loads of one model export it once.
    """
    name = getattr(backend, "name", type(backend).__name__)
    load_calib, calib = None, None
    if precision == "int8" and quant_scheme(spec, opts) == "static":
        load_calib, calib = calibration_images(opts.calib, opts.calib_images)
    if precision != "int8" or quant_scheme(spec, opts) != "static":
        probe = None
    material = key_material(spec, precision, opts, calib, probe.key if probe else None)
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_dir(opts)
    part = "" if spec.stage == "forward" else f"-{_safe(spec.stage)}"
    stem = f"{_safe(name)}{part}-{precision}-{key}"
    model_path, meta_path = folder / f"{stem}.onnx", folder / f"{stem}.json"
    if not opts.cache:
        with _BUILD_LOCK:
            return _build(backend, spec, precision, opts, material, key, load_calib, None, None, probe)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError(f"Cannot create the ONNX cache folder {str(folder)!r}: {exc}") from exc
    meta = read_cache(model_path, meta_path, material, quiet=True)
    if meta is not None:  # a cache hit never waits behind another model's build
        return Built(model_path, meta, True, meta_path=meta_path)
    from filelock import FileLock, Timeout

    with _BUILD_LOCK:
        try:
            with FileLock(str(folder / f"{stem}.lock"), timeout=LOCK_TIMEOUT):
                # checked under the lock: another thread or process may have just built it
                meta = read_cache(model_path, meta_path, material)
                if meta is not None:
                    return Built(model_path, meta, True, meta_path=meta_path)
                return _build(
                    backend, spec, precision, opts, material, key, load_calib, model_path, meta_path, probe
                )
        except Timeout as exc:
            raise BackendError(
                f"Waited {LOCK_TIMEOUT:.0f} s for another process building {str(model_path)!r}; "
                f"remove {str(folder / f'{stem}.lock')!r} if no build is running."
            ) from exc


def _build(
    backend: Any,
    spec: ExportSpec,
    precision: str,
    opts: RuntimeOptions,
    material: dict[str, Any],
    key: str,
    load_calib: Any,
    model_path: Path | None,
    meta_path: Path | None,
    probe: SearchProbe | None = None,
) -> Built:
    """Export (and quantize) into a private temporary folder; move the result into the cache."""
    name = getattr(backend, "name", type(backend).__name__)
    t0 = time.perf_counter()
    structure = output_structure(spec)
    work = Path(tempfile.mkdtemp(prefix="vk-onnx-", dir=model_path.parent if model_path else None))
    try:
        fp32 = work / "model.fp32.onnx"
        export_onnx(spec, fp32, name)
        info: dict[str, Any] = {}
        out = fp32
        if precision == "int8":
            out = work / "model.int8.onnx"
            calib_imgs = load_calib() if load_calib else None
            info = quantize(fp32, out, spec, opts, backend, calib_imgs, probe, structure)
        gates: dict[str, Any] = {}
        if probe is not None and "search" in info:
            # the accepted step was scored by the gate: remembered, so the load does not score it again
            gates[probe.gate_fingerprint] = info["search"].pop("gate")
        meta = {
            "material": material,
            "key": key,
            "backend": name,
            "structure": structure,
            "size": out.stat().st_size,
            "sha256": sha256_file(out),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "build_seconds": round(time.perf_counter() - t0, 3),
            "quantization": info,
            "calibration": material.get("quant", {}).get("calibration"),
            "gates": gates,
        }
        if model_path is None or meta_path is None:
            return Built(None, meta, False, model_bytes=out.read_bytes(), build_seconds=meta["build_seconds"])
        os.replace(out, model_path)
        write_meta(meta_path, meta)
        return Built(model_path, meta, False, meta_path=meta_path, build_seconds=meta["build_seconds"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
