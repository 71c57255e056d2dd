"""``wrap``: run a loaded, exportable backend's network in OpenVINO (fp32, bf16 or INT8).

Only the stages named by the backend's export specs change (``forward``, and e.g. SAM's
``decoder_forward``): each becomes an :class:`OvForward`, installed through the backend's runtime slot
(:meth:`visionkit.Backend.install_runtime`). ``preprocess`` and ``postprocess`` stay the backend's, so
results keep their types, coordinates and options.

Precision is set, never left to OpenVINO's defaults: on a CPU with AMX or AVX512-BF16, OpenVINO runs
an "fp32" model in bf16 unless told otherwise. Every compiled model is given
``INFERENCE_PRECISION_HINT``, ``PERFORMANCE_HINT``, ``INFERENCE_NUM_THREADS`` and ``NUM_STREAMS``,
and ``backend.runtime`` reports what the compiled model reads back, not what was asked for.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from visionkit import BackendError, InvalidOptionError
from visionkit.backend import install_runtime
from visionkit.devices import cpu_threads
from visionkit.export import ExportNotSupportedError, ExportSpec, export_specs_of
from visionkit_openvino._build import AccuracyControl, Built, build_model, output_structure, write_meta
from visionkit_openvino._calib import model_feeds
from visionkit_openvino._gate import GateData
from visionkit_openvino._options import RuntimeOptions, parse_runtime_options

__all__ = [
    "PRECISIONS",
    "AccuracyGateError",
    "OvForward",
    "Prepared",
    "compile_settings",
    "default_threads",
    "prepare",
    "wrap",
]

PRECISIONS = ("fp32", "bf16", "int8")
#: INFERENCE_PRECISION_HINT per requested precision. INT8 keeps its float ops (the detection head's
#: tail) at f32: in bf16 the box decode keeps ~3 significant digits of 0-640 pixel coordinates.
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


class AccuracyGateError(InvalidOptionError):
    """The model loses more accuracy than ``max_drop`` allows."""


def default_threads() -> int:
    """The CPUs this process may run on: visionkit's thread policy (affinity, cgroup quota, VISIONKIT_THREADS)."""
    return cpu_threads()


def _np_dtype(ov_type: Any) -> Any:
    return {
        "f32": np.float32,
        "f16": np.float16,
        "f64": np.float64,
        "i64": np.int64,
        "i32": np.int32,
        "u8": np.uint8,
        "boolean": np.bool_,
    }.get(ov_type.get_type_name())


class OvForward:
    """A backend stage that runs an ``openvino.CompiledModel`` and returns torch tensors."""

    def __init__(
        self, compiled: Any, spec: ExportSpec, structure: str, backend_name: str, device: str = "cpu"
    ) -> None:
        self.compiled = compiled
        self.input_names = list(spec.input_names)
        self.output_names = list(spec.output_names)
        self._inputs = {n: compiled.input(n) for n in self.input_names}
        self._outputs = [compiled.output(n) for n in self.output_names]
        self._dtypes = {n: _np_dtype(p.get_element_type()) for n, p in self._inputs.items()}
        self._static_batch1 = {
            n: p.get_partial_shape().rank.is_static
            and p.get_partial_shape().rank.get_length() > 0
            and p.get_partial_shape()[0].is_static
            and p.get_partial_shape()[0].get_length() == 1
            for n, p in self._inputs.items()
        }
        self.structure = structure
        self.backend_name = backend_name
        self.device = device
        self._request = compiled.create_infer_request()
        # one infer request is not safe to share between threads (the HTTP server, Ray actors)
        self._lock = threading.Lock()

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            # share_inputs: no copy of the preprocessed batch; outputs come back as fresh arrays
            # (share_outputs=False), so the next run cannot overwrite what postprocess reads
            res = self._request.infer(feeds, share_inputs=True, share_outputs=False)
            return [res[p] for p in self._outputs]

    def __call__(self, inputs: Any) -> Any:
        if isinstance(inputs, list) and len(self.input_names) == 1 and len(inputs) > 0:
            # one input per letterbox shape (YOLO's rect batches): one output per input, in order
            return [self._call(x) for x in inputs]
        return self._call(inputs)

    def _call(self, inputs: Any) -> Any:
        import torch

        feeds = model_feeds(inputs, self.input_names)
        for name, arr in feeds.items():
            want = self._dtypes.get(name)
            if want is not None and arr.dtype != want:
                feeds[name] = arr.astype(want)
        try:
            batches = {a.shape[0] for a in feeds.values() if a.ndim}
            if len(batches) == 1 and batches != {1} and all(self._static_batch1[n] for n in feeds):
                # a static batch-1 graph fed a batch: run image by image, stack the outputs
                n = batches.pop()
                parts = [self._run({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(n)]
                outs = [np.concatenate(o, axis=0) for o in zip(*parts, strict=True)]
            else:
                outs = self._run(feeds)
        except Exception as exc:
            got = {n: list(a.shape) for n, a in feeds.items()}
            want_shapes = {n: str(p.get_partial_shape()) for n, p in self._inputs.items()}
            raise BackendError(
                f"OpenVINO failed to run backend {self.backend_name!r} on inputs {got} "
                f"(the model expects {want_shapes}): {type(exc).__name__}: {exc}"
            ) from exc
        tensors = [torch.from_numpy(o) for o in outs]
        return tensors[0] if self.structure == "tensor" else tuple(tensors)


def _check_device(device: str, name: str) -> None:
    if device not in ("cpu", "auto"):
        raise InvalidOptionError(
            f"Runtime 'openvino' runs backend {name!r} on the CPU, but device={device!r} was given; "
            "load with device='cpu', or use the backend's own runtime on that device."
        )


def compile_settings(precision: str, opts: RuntimeOptions) -> dict[str, Any]:
    """The properties every compiled model gets (nothing is left to OpenVINO's defaults)."""
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": _HINTS[precision],
        "PERFORMANCE_HINT": opts.performance_hint,
        "INFERENCE_NUM_THREADS": opts.threads or default_threads(),
        "NUM_STREAMS": opts.streams,
    }
    if opts.pinning is not None:
        config["ENABLE_CPU_PINNING"] = opts.pinning
    return config


def _compile(core: Any, built: Built, config: dict[str, Any], name: str) -> tuple[Any, dict[str, Any]]:
    try:
        compiled = core.compile_model(built.model, "CPU", config)
    except Exception as exc:
        raise BackendError(
            f"OpenVINO could not compile backend {name!r}: {type(exc).__name__}: {exc}"
        ) from exc

    def read(key: str) -> Any:
        try:
            return compiled.get_property(key)
        except Exception:  # a property this OpenVINO version does not report
            return None

    hint = read("INFERENCE_PRECISION_HINT")
    hint_name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    perf = read("PERFORMANCE_HINT")
    pinning = read("ENABLE_CPU_PINNING")
    return compiled, {
        "inference_precision": _NAMES.get(hint_name, hint_name),
        "threads": read("INFERENCE_NUM_THREADS"),
        "streams": read("NUM_STREAMS"),
        "performance_hint": getattr(perf, "name", str(perf)),
        "pinning": pinning,
    }


def describe(built: Built) -> dict[str, Any]:
    """What ``backend.runtime`` reports about one built model."""
    quant = built.meta.get("quantization") or {}
    return {
        "model_path": str(built.xml_path) if built.xml_path else None,
        "cache_hit": built.cache_hit,
        "build_seconds": built.meta.get("build_seconds"),
        "size_bytes": built.meta.get("size"),
        "quantization": quant.get("scheme"),
        "ignored_scope": len(quant.get("ignored", [])),
        "float_compute_ops": quant.get("float_compute_ops"),
        "compute_ops": quant.get("compute_ops"),
    }


def _gate_result(
    gate: GateData, built: Built, candidate: OvForward, reference: Any, opts: RuntimeOptions, precision: str
) -> dict[str, Any]:
    key = f"{gate.fingerprint}-{precision}"
    result = built.meta.get("gates", {}).get(key)
    if result is None:
        result = gate.evaluate(candidate, reference)
        built.meta.setdefault("gates", {})[key] = result
        if built.meta_path is not None:
            try:
                write_meta(built.meta_path, built.meta)
            except OSError as exc:  # a read-only cache still works, without the remembered score
                warnings.warn(
                    f"Could not record the gate result in {built.meta_path}: {exc}",
                    RuntimeWarning,
                    stacklevel=3,
                )
    assert opts.max_drop is not None
    return {**result, "max_drop": opts.max_drop, "passed": result["drop"] <= opts.max_drop}


@dataclass
class Prepared:
    """Every network of a backend built, compiled and (with ``max_drop``) gated: what :func:`wrap`
    installs and what the exporter (:mod:`visionkit_openvino._export`) writes."""

    main: ExportSpec
    specs: list[ExportSpec]
    parts: dict[str, tuple[Built, dict[str, Any]]]
    forwards: dict[str, OvForward]
    runtime: dict[str, Any]


def prepare(
    backend: Any, precision: str, runtime_options: dict[str, Any], *, compile_models: bool = True
) -> Prepared:
    """Build (or take from the cache), compile and gate ``backend``'s networks; change nothing on it.

    ``compile_models=False`` (the exporter, which only writes the models): compile only what the
    accuracy gate runs; ``forwards`` is then empty unless ``max_drop`` is set.
    """
    import openvino as ov

    name = getattr(backend, "name", type(backend).__name__)
    if precision not in PRECISIONS:
        raise InvalidOptionError(
            f"Runtime 'openvino' does not offer precision {precision!r}; it offers: {', '.join(PRECISIONS)}."
        )
    opts = parse_runtime_options(runtime_options, name)
    _check_device(getattr(backend, "device", "cpu"), name)
    specs = export_specs_of(backend)
    int8 = precision == "int8"
    refused = [s.int8_unsupported for s in specs if s.int8_unsupported] if int8 else []
    if refused:
        raise ExportNotSupportedError(f"Backend {name!r} cannot run in INT8: {refused[0]}")
    main = next((s for s in specs if s.stage == "forward"), specs[0])
    reference = getattr(backend, main.stage)
    gate = GateData(backend, reference, opts) if opts.max_drop is not None else None
    config = compile_settings(precision, opts)
    core = ov.Core()
    forwards: dict[str, OvForward] = {}
    parts: dict[str, tuple[Built, dict[str, Any]]] = {}
    for spec in specs:
        accuracy = None
        if int8 and gate is not None and spec is main:

            def make_forward(
                compiled: Any, spec: ExportSpec = spec, structure: str = output_structure(spec)
            ) -> OvForward:
                return OvForward(compiled, spec, structure, name)

            accuracy = AccuracyControl(
                fingerprint={"gate": gate.fingerprint, "max_drop": opts.max_drop,
                             "iterations": opts.accuracy_control_iterations},
                items=list(range(len(gate.images))),
                validate=gate.validation_fn(make_forward),
            )  # fmt: skip
        built = build_model(backend, spec, int8, opts, accuracy)
        settings: dict[str, Any] = {"inference_precision": "fp32" if int8 else precision}
        if compile_models or (gate is not None and spec is main):
            compiled, settings = _compile(core, built, config, name)
            forwards[spec.stage] = OvForward(compiled, spec, built.meta["structure"], name)
        parts[spec.stage] = (built, settings)
    main_built, settings = parts[main.stage]
    ran = "int8" if int8 else settings["inference_precision"]
    if precision == "bf16" and ran != "bf16" and compile_models:
        warnings.warn(
            f"This CPU cannot run bf16 in OpenVINO (it offers {', '.join(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))}); "
            f"backend {name!r} runs in {ran}. backend.runtime['precision'] says what ran.",
            RuntimeWarning,
            stacklevel=4,  # prepare <- wrap <- visionkit.load <- the caller
        )
    gate_result = None
    if gate is not None:
        gate_result = _gate_result(gate, main_built, forwards[main.stage], reference, opts, ran)
        if not gate_result["passed"]:
            raise AccuracyGateError(
                f"{ran.upper()} {name!r} on OpenVINO drops {gate_result['drop']:.2f} {gate_result['metric']} points, "
                f"more than max_drop={opts.max_drop}: torch fp32 scores {gate_result['reference']:.2f} and it scores "
                f"{gate_result['candidate']:.2f} on {gate_result['images']} images (against {gate_result['against']}). "
                "Calibrate on more images of your domain (calib=...), raise accuracy_control_iterations, "
                "or use precision='fp32'."
            )
    quant = main_built.meta.get("quantization") or {}
    runtime = {
        "name": "openvino",
        "precision": ran,
        "requested_precision": precision,
        **describe(main_built),
        "float_ops": quant.get("float_compute_ops"),
        "ignored": quant.get("ignored"),
        "accuracy_control": quant.get("accuracy_control"),
        "calibration": main_built.meta.get("calibration"),
        "gate": gate_result,
        "stages": {stage: describe(b) for stage, (b, _) in parts.items()},
        **settings,
        "default_threads": default_threads(),
        "openvino": ov.get_version(),
    }
    return Prepared(main, specs, parts, forwards, runtime)


def wrap(backend: Any, precision: str = "fp32", **runtime_options: Any) -> Any:
    """Make ``backend`` run its network(s) in OpenVINO at ``precision``; returns the same backend.

    Args:
        backend: a loaded float backend implementing :class:`visionkit.export.Exportable`.
        precision: ``"fp32"``, ``"bf16"`` (needs a CPU with AMX or AVX512-BF16; elsewhere it runs fp32,
            with a warning, and says so) or ``"int8"`` (NNCF post-training quantization).
        **runtime_options: see :class:`visionkit_openvino._options.RuntimeOptions` (``calib``,
            ``max_drop``, ``threads``, ``cache_dir`` ...).

    Raises:
        ExportNotSupportedError: the backend does not implement ``export_spec()``, or a network
            must not be quantized.
        InvalidOptionError: unknown runtime option, precision or device; AccuracyGateError (a
            subclass) when ``max_drop`` is exceeded.
        BackendUnavailableError: INT8 without nncf installed.
        BackendError: export, conversion, quantization or compilation failed (the cause is chained).
    """
    prepared = prepare(backend, precision, runtime_options)
    install_runtime(backend, prepared.runtime, prepared.forwards)
    return backend
