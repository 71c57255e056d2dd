"""``wrap``: run a loaded, exportable backend's network in ONNX Runtime (fp32 or INT8).

Only ``forward`` changes, installed through the backend's runtime slot
(:meth:`visionkit.Backend.install_runtime`); ``preprocess`` and ``postprocess`` stay the backend's, so
results keep their types, coordinates and options. A backend with several networks (``export_specs()``,
e.g. SAM's encoder and prompt decoder) gets one session per network, each replacing the stage its spec
names. ``backend.runtime`` then reports what runs them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from visionkit import BackendError, InvalidOptionError
from visionkit.backend import install_runtime
from visionkit.devices import cpu_threads, thread_policy
from visionkit.export import ExportNotSupportedError, ExportSpec, export_specs_of
from visionkit_onnx._build import Built, build_model, write_meta
from visionkit_onnx._calib import model_feeds
from visionkit_onnx._gate import GateRun, evaluate, gate_fingerprint, gate_task
from visionkit_onnx._options import RuntimeOptions, parse_runtime_options
from visionkit_onnx._search import AccuracyGateError, SearchProbe

__all__ = ["PRECISIONS", "AccuracyGateError", "OrtForward", "prepare", "wrap"]

PRECISIONS = ("fp32", "int8")


class OrtForward:
    """A backend ``forward`` that runs an ``onnxruntime.InferenceSession`` and returns torch tensors."""

    def __init__(self, session: Any, structure: str, device: str, backend_name: str) -> None:
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self._dtypes = {i.name: _np_dtype(i.type) for i in session.get_inputs()}
        self._shapes = {i.name: i.shape for i in session.get_inputs()}
        self.structure = structure
        self.device = device
        self.backend_name = backend_name

    def __call__(self, inputs: Any) -> Any:
        import torch

        if isinstance(inputs, list) and len(self.input_names) == 1:
            # one tensor per letterbox shape (rect inputs of several sizes): one run each, as torch does
            return [self(x) for x in inputs]
        feeds = model_feeds(inputs, self.input_names)
        for name, arr in feeds.items():
            want = self._dtypes.get(name)
            if want is not None and arr.dtype != want:
                feeds[name] = arr.astype(want)
        try:
            if self._split_batch(feeds):
                # a static batch-1 graph fed a batch: run image by image, stack the outputs
                n = next(iter(feeds.values())).shape[0]
                parts = [
                    self.session.run(self.output_names, {k: v[i : i + 1] for k, v in feeds.items()})
                    for i in range(n)
                ]
                outs = [np.concatenate(o, axis=0) for o in zip(*parts, strict=True)]
            else:
                outs = self.session.run(self.output_names, feeds)
        except Exception as exc:
            got = {n: list(a.shape) for n, a in feeds.items()}
            raise BackendError(
                f"ONNX Runtime failed to run backend {self.backend_name!r} on inputs {got} "
                f"(the model expects {self._shapes}): {type(exc).__name__}: {exc}"
            ) from exc
        dev = "cpu" if self.device in ("cpu", "auto") else self.device
        tensors = [torch.from_numpy(o).to(dev) for o in outs]
        return tensors[0] if self.structure == "tensor" else tuple(tensors)

    def _split_batch(self, feeds: dict[str, np.ndarray]) -> bool:
        batches = {a.shape[0] for a in feeds.values() if a.ndim}
        if len(batches) != 1 or batches == {1}:
            return False
        return all(self._shapes[n] and self._shapes[n][0] == 1 for n in feeds)


def _np_dtype(ort_type: str) -> Any:
    return {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(double)": np.float64,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(uint8)": np.uint8,
        "tensor(bool)": np.bool_,
    }.get(ort_type)


def providers_for(device: str) -> list[str]:
    """Execution providers for a visionkit device string; CPU always last as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.startswith("cuda") or device == "auto":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device != "auto":
            raise InvalidOptionError(
                f"device={device!r} needs onnxruntime's CUDAExecutionProvider, but this onnxruntime offers "
                f"{', '.join(available)}; install onnxruntime-gpu or use device='cpu'."
            )
    elif device == "mps":
        if "CoreMLExecutionProvider" in available:
            return ["CoreMLExecutionProvider", "CPUExecutionProvider"]
        raise InvalidOptionError(
            f"device='mps' needs onnxruntime's CoreMLExecutionProvider, but this onnxruntime offers "
            f"{', '.join(available)}; use device='cpu'."
        )
    return ["CPUExecutionProvider"]


def make_session(
    built: Built, opts: RuntimeOptions, device: str, *, sessions: int = 1
) -> tuple[Any, dict[str, Any]]:
    """An ``InferenceSession`` with the requested threads; returns it and the settings in force.

    ``sessions`` is how many sessions the backend runs in turn: with more than one, worker threads
    do not spin-wait after a run by default (``spinning`` option), since one session's spinning
    threads would steal the cores from the next (measured: MobileSAM's decoder right after its
    encoder, 101 ms spinning vs 58 ms not, 2 cores).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[opts.graph_optimization]
    # ORT's own default is one thread per physical core of the host, which oversubscribes a
    # container or a pinned process: default to the CPUs this process may use (visionkit's policy).
    threads = opts.threads if opts.threads is not None else cpu_threads()
    so.intra_op_num_threads = threads
    if opts.inter_op_threads is not None:
        so.inter_op_num_threads = opts.inter_op_threads
    spinning = opts.spinning if opts.spinning is not None else sessions == 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    providers = providers_for(device)
    source = built.model_bytes if built.model_bytes is not None else str(built.path)
    try:
        session = ort.InferenceSession(source, sess_options=so, providers=providers)
    except Exception as exc:
        raise BackendError(f"ONNX Runtime could not open the model: {type(exc).__name__}: {exc}") from exc
    settings = {
        "providers": session.get_providers(),
        "intra_op_threads": threads,
        # 0 means ORT's default
        "inter_op_threads": opts.inter_op_threads or 0,
        "spinning": spinning,
        "default_threads": cpu_threads(),
        "threads_source": "threads option" if opts.threads is not None else thread_policy()["source"],
    }
    return session, settings


def prepare(
    backend: Any, precision: str, runtime_options: dict[str, Any]
) -> tuple[RuntimeOptions, list[tuple[ExportSpec, Built]]]:
    """Validate, get the export specs, and build (or fetch from cache) one model file per network."""
    name = getattr(backend, "name", type(backend).__name__)
    if precision not in PRECISIONS:
        raise InvalidOptionError(
            f"Runtime 'onnxruntime' does not offer precision {precision!r}; it offers: {', '.join(PRECISIONS)}."
        )
    opts = parse_runtime_options(runtime_options, name)
    specs = export_specs_of(backend)
    refused = [s.int8_unsupported for s in specs if s.int8_unsupported] if precision == "int8" else []
    if refused:
        raise ExportNotSupportedError(f"Backend {name!r} cannot run in INT8: {refused[0]}")
    main = next((s for s in specs if s.stage == "forward"), specs[0])
    parts = []
    for spec in specs:
        probe = search_probe(backend, spec, precision, opts) if spec is main else None
        parts.append((spec, build_model(backend, spec, precision, opts, probe)))
    return opts, parts


def search_probe(backend: Any, spec: ExportSpec, precision: str, opts: RuntimeOptions) -> SearchProbe | None:
    """The INT8 search's gate for the network the gate scores, or ``None`` (no ``max_drop``, not INT8,
    or ``accuracy_control_iterations=0``). Cheap: the gate's images and the float reference's
    predictions are computed only if a build actually searches (not on a cache hit)."""
    if precision != "int8" or opts.max_drop is None or opts.accuracy_control_iterations == 0:
        return None
    name = getattr(backend, "name", type(backend).__name__)
    device = getattr(backend, "device", "cpu")
    gate = GateRun(backend, getattr(backend, spec.stage), opts)

    def score(path: Any, structure: str) -> dict[str, Any]:
        session, _ = make_session(Built(path, {}, False), opts, device)
        forward = OrtForward(session, structure, device, name)
        # the torch reference's latency is measured once, the candidate's at every step
        ref_ms = gate.reference_ms if gate.reference_ms is not None else gate.latency_ms(gate.reference)
        gate.reference_ms = ref_ms
        return {**gate.evaluate(forward), "latency_ms": gate.latency_ms(forward), "reference_ms": ref_ms}

    return SearchProbe(
        max_drop=opts.max_drop,
        iterations=opts.accuracy_control_iterations,
        gate_fingerprint=gate_fingerprint(opts, gate.task),
        score=score,
    )


def primary(parts: list[tuple[ExportSpec, Built]]) -> tuple[ExportSpec, Built]:
    """The part that replaces ``forward`` (the one the accuracy gate scores), else the first."""
    return next((p for p in parts if p[0].stage == "forward"), parts[0])


def describe(built: Built) -> dict[str, Any]:
    """What ``backend.runtime`` reports about one built model."""
    quant = built.meta.get("quantization") or {}
    return {
        "model_path": str(built.path) if built.path else None,
        "cache_hit": built.cache_hit,
        "build_seconds": built.meta.get("build_seconds"),
        "size_bytes": built.meta.get("size"),
        "quantization": quant.get("scheme"),
        "float_nodes": len(quant.get("float_nodes", [])),
        # static INT8 under max_drop: the steps tried and the nodes the search kept float
        "search": quant.get("search"),
    }


def check_gate(
    backend: Any, forward: OrtForward, reference: Any, opts: RuntimeOptions, built: Built, precision: str
) -> dict[str, Any] | None:
    """Run (or reuse from the cache sidecar) the accuracy gate; raise when the drop exceeds ``max_drop``."""
    if opts.max_drop is None:
        return None
    fp = gate_fingerprint(opts, gate_task(backend))
    result = built.meta.get("gates", {}).get(fp)
    if result is None:
        result = evaluate(backend, reference, forward, opts)
        built.meta.setdefault("gates", {})[fp] = result
        if built.meta_path is not None:
            try:
                write_meta(built.meta_path, built.meta)
            except OSError as exc:  # a read-only cache still works, just without the remembered score
                warnings.warn(
                    f"Could not record the gate result in {built.meta_path}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
    result = {
        **result,
        "calibration": built.meta.get("calibration"),
        "max_drop": opts.max_drop,
        "passed": result["drop"] <= opts.max_drop,
    }
    if not result["passed"]:
        raise AccuracyGateError(
            f"{precision.upper()} {getattr(backend, 'name', '?')!r} drops {result['drop']:.2f} {result['metric']} points, "
            f"more than max_drop={opts.max_drop}: fp32 scores {result['reference']:.2f} and {precision} scores "
            f"{result['candidate']:.2f} on {result['images']} images (against {result['against']}). "
            "Calibrate on more images of your domain (calib=...), keep more nodes float (exclude_nodes=..., "
            "or accuracy_control_iterations >= 1 to let static INT8 search for them), or use precision='fp32'."
        )
    return result


def wrap(backend: Any, precision: str = "fp32", **runtime_options: Any) -> Any:
    """Make ``backend`` run its network in ONNX Runtime at ``precision``; returns the same backend.

    Args:
        backend: a loaded float backend implementing :class:`visionkit.export.Exportable`.
        precision: ``"fp32"`` or ``"int8"``.
        **runtime_options: see :class:`visionkit_onnx._options.RuntimeOptions` (``calib``, ``max_drop``,
            ``accuracy_control_iterations``, ``threads``, ``cache_dir`` ...).

    Raises:
        ExportNotSupportedError: the backend does not implement ``export_spec()``.
        InvalidOptionError: unknown runtime option or precision; AccuracyGateError (a subclass) when
            ``max_drop`` is exceeded (static INT8: by every step of the search that keeps the
            worst-quantized nodes float, :mod:`visionkit_onnx._search`).
        BackendError: export, quantization or the ORT session failed (the cause is chained).
    """
    opts, parts = prepare(backend, precision, runtime_options)
    name = getattr(backend, "name", type(backend).__name__)
    device = getattr(backend, "device", "cpu")
    main_spec, main_built = primary(parts)
    forwards: dict[str, OrtForward] = {}
    gate = None
    for spec, built in parts:
        session, settings = make_session(built, opts, device, sessions=len(parts))
        forwards[spec.stage] = OrtForward(session, built.meta["structure"], device, name)
        if spec is main_spec:
            gate = check_gate(
                backend, forwards[spec.stage], getattr(backend, spec.stage), opts, built, precision
            )
    runtime = {
        "name": "onnxruntime",
        "precision": precision,
        **describe(main_built),
        "calibration": main_built.meta.get("calibration"),
        "gate": gate,
        "stages": {spec.stage: describe(built) for spec, built in parts},
        **settings,
    }
    install_runtime(backend, runtime, forwards)
    return backend
