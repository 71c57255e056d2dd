"""Accuracy-aware static INT8: keep the nodes with the largest quantization error float until the
accuracy gate holds (``runtime_options={"max_drop": ...}``).

ONNX Runtime has no counterpart of NNCF's ``quantize_with_accuracy_control``, so the search is done here:

1. quantize the whole graph (the plain recipe) and score it with the gate; done if it holds;
2. otherwise rank the quantized nodes by the error each adds, measured on the calibration images
   (:func:`rank_nodes`: both models' intermediate tensors, saved with
   ``onnxruntime.quantization.qdq_loss_debug.modify_model_output_intermediate_tensors``);
3. re-quantize keeping the worst 1, 2, 4, 8 ... nodes float (``nodes_to_exclude``), scoring each step,
   until one holds or ``accuracy_control_iterations`` steps were tried.

Calibration ranges are computed once and reused by every step (a float node does not change the float
model's tensors), so a step costs one quantization pass and one gate evaluation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionkit import InvalidOptionError

__all__ = [
    "RANK_IMAGES",
    "AccuracyGateError",
    "SearchProbe",
    "rank_nodes",
    "search_float_nodes",
    "step_sizes",
    "unround_inputs",
]

#: Calibration images the ranking runs on (NNCF's accuracy control ranks on 8 too, ``ranking_subset_size``).
RANK_IMAGES = 8
#: Nodes listed in the report's ``ranking`` (the whole ranking of a large graph is noise in a report).
REPORTED_RANKING = 32
_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


class AccuracyGateError(InvalidOptionError):
    """The model loses more accuracy than ``max_drop`` allows (for INT8: at every step of the search).

    ``search`` holds the search's report when one ran (``steps``, ``ranking`` ..., as in
    ``backend.runtime["search"]``), else ``None``.
    """

    search: dict[str, Any] | None = None


@dataclass(frozen=True)
class SearchProbe:
    """What a build needs to search: the settings that shape the result (part of the cache key), the
    gate's fingerprint (where the accepted score is remembered) and a scorer of candidate files.

    ``score(path, structure)`` returns the gate's result for the ONNX model at ``path`` (``metric``,
    ``reference``, ``candidate``, ``drop``, ...) with its forward's ``latency_ms``.
    """

    max_drop: float
    iterations: int
    gate_fingerprint: str
    score: Callable[[Path, str], dict[str, Any]]

    @property
    def key(self) -> dict[str, Any]:
        """The cache-key material: another budget, step limit or gate data is another model."""
        return {
            "max_drop": self.max_drop,
            "iterations": self.iterations,
            "gate": self.gate_fingerprint,
            "rank_images": RANK_IMAGES,
        }


def step_sizes(candidates: int, iterations: int) -> list[int]:
    """How many of the worst nodes each step keeps float: 1, 2, 4, ... capped at ``candidates``.

    Doubling reaches any count in log2 steps, so a handful of rounds covers a whole graph; the last
    step may keep every candidate float when that is fewer than the next power of two.
    """
    sizes: list[int] = []
    k = 1
    while len(sizes) < iterations and candidates > 0:
        size = min(k, candidates)
        if sizes and size == sizes[-1]:
            break
        sizes.append(size)
        k *= 2
    return sizes


def _save_suffix() -> str:
    from onnxruntime.quantization import qdq_loss_debug

    # the name modify_model_output_intermediate_tensors gives each saved tensor's graph output
    return str(getattr(qdq_loss_debug, "_TENSOR_SAVE_POSTFIX", "_ReshapedSavedOutput"))


#: A pair of names for one tensor: in the float model, and as its consumers see it in the QDQ model.
_Pair = tuple[str, str]


def _candidates(qdq: Any, skip: Collection[str]) -> dict[str, tuple[str, list[_Pair], _Pair]]:
    """Nodes of a QDQ graph that read a DequantizeLinear output (quantized weights or rounded
    activations): name -> (op type, activation inputs, output), each tensor as (float model name, QDQ
    model name). Inputs are named before their Q/DQ pair (``name|raw``), outputs after it.

    The output's QDQ side is what the next node reads (after rounding), not the raw tensor: ONNX
    Runtime folds a Relu into the uint8 range of the Conv before it, so the raw Conv output still holds
    the negatives. A graph output keeps its name on the DequantizeLinear output; the raw one is
    ``X_QuantizeLinear_Input``.
    """
    graph = qdq.graph
    producer = {o: n for n in graph.node for o in n.output}
    initializers = {i.name for i in graph.initializer}
    by_input: dict[str, Any] = {}
    for node in graph.node:
        if node.op_type in _QDQ_OPS:
            by_input.setdefault(node.input[0], node)

    def after_qdq(raw: str) -> str:
        q = by_input.get(raw)
        dq = by_input.get(q.output[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        return str(dq.output[0]) if dq is not None and dq.op_type == "DequantizeLinear" else raw

    suffix = "_QuantizeLinear_Input"
    found: dict[str, tuple[str, list[_Pair], _Pair]] = {}
    for node in graph.node:
        if node.op_type in _QDQ_OPS or node.name in skip or not node.output:
            continue
        fed = [producer[i] for i in node.input if i in producer and producer[i].op_type == "DequantizeLinear"]
        if not fed:
            continue  # a float node: nothing to give back
        inputs: list[_Pair] = []
        for name in node.input:
            src = producer.get(name)
            if src is not None and src.op_type == "DequantizeLinear":
                q = producer.get(src.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    inputs.append((str(q.input[0]), str(q.input[0])))
                    inputs.append((str(q.input[0]), name))
                # else: a quantized initializer (weight, bias): its error shows in the output
            elif name and name not in initializers:
                inputs.append((name, name))
        raw = str(node.output[0])
        float_name = raw[: -len(suffix)] if raw.endswith(suffix) else raw
        found[node.name] = (node.op_type, inputs, (float_name, after_qdq(raw)))
    return found


class _Energies:
    """Running per-channel sums of signal and error energy per tensor (images stream one at a time)."""

    #: A channel's signal energy is floored at this fraction of the tensor's mean channel energy, so
    #: a nearly silent channel (a rarely active ReLU) does not turn its rounding into a huge ratio.
    FLOOR = 1e-3

    def __init__(self) -> None:
        self.signal: dict[str, np.ndarray] = {}
        self.noise: dict[str, np.ndarray] = {}

    def add(self, name: str, ref: np.ndarray, got: np.ndarray) -> None:
        if ref.shape != got.shape or ref.size == 0:
            return
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        # channels on axis 1 (NCHW, and YOLO's (b, 4 + classes, anchors) output)
        axes = tuple(a for a in range(ref64.ndim) if a != 1) if ref64.ndim >= 2 else None
        sig = np.atleast_1d(np.sum(ref64 * ref64, axis=axes))
        err = np.atleast_1d(np.sum((ref64 - got64) ** 2, axis=axes))
        if name in self.signal and self.signal[name].shape != sig.shape:
            return
        self.signal[name] = self.signal.get(name, 0.0) + sig
        self.noise[name] = self.noise.get(name, 0.0) + err

    def nsr(self, name: str) -> float:
        """Mean over channels of the noise-to-signal power ratio, 10 ** (-SQNR / 10) as
        ``qdq_loss_debug.compute_signal_to_quantization_noice_ratio`` defines SQNR (0: exact).

        Per channel, because one tensor may hold values of very different scales: YOLO's output
        concatenates pixel boxes (0-640) and 0-1 scores, and a whole-tensor ratio would hide scores
        rounded to nothing behind the boxes' energy.
        """
        if name not in self.noise:
            return 0.0
        sig, noise = self.signal[name], self.noise[name]
        floor = max(float(np.mean(sig)) * self.FLOOR, 1e-30)
        return float(min(np.mean(noise / np.maximum(sig, floor)), 1e6))


def rank_nodes(
    float_model: Path,
    qdq_model: Path,
    feeds: Iterable[dict[str, np.ndarray]],
    *,
    skip: Collection[str] = (),
    work: Path,
) -> list[dict[str, Any]]:
    """The quantized nodes of ``qdq_model``, worst first, by the quantization error each adds.

    Both models run on ``feeds`` with their intermediate tensors saved as outputs
    (``qdq_loss_debug.modify_model_output_intermediate_tensors``, run unoptimised as its
    ``collect_activations`` does, but one feed at a time so memory stays one image's tensors). A node's
    error is the noise-to-signal power ratio (NSR, per channel) of its output as the next node reads
    it, against the float model's same tensor, minus the largest NSR among its inputs before their
    rounding: what quantizing this node adds (the rounding of its inputs, its weights, its output's
    rounding), not what reached it from upstream. Weight SQNR alone would miss a weight whose rounding
    hits the inputs that matter; the output error does not. Nodes already float that read rounded
    inputs are ranked too: the search can make them read the unrounded tensors (:func:`unround_inputs`).

    Args:
        float_model: the float model that was quantized (node and tensor names shared with ``qdq_model``).
        qdq_model: its static QDQ quantization.
        feeds: session inputs (the calibration images, preprocessed).
        skip: node names not to rank (already float).
        work: a scratch folder for the two instrumented models.

    Returns:
        ``[{"node", "op_type", "error"}, ...]`` sorted by decreasing ``error`` (ties: graph order).
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    cands = _candidates(onnx.load(str(qdq_model)), skip)
    if not cands:
        return []
    pairs = {p for _, inputs, out in cands.values() for p in [*inputs, out]}
    suffix = _save_suffix()
    so = ort.SessionOptions()
    # unoptimised, as qdq_loss_debug.collect_activations runs them: fusions would drop the tensors
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sessions = []
    for side, src in enumerate((float_model, qdq_model)):
        aug = work / f"{src.stem}.saved.onnx"
        modify_model_output_intermediate_tensors(str(src), str(aug))
        sess = ort.InferenceSession(str(aug), sess_options=so, providers=["CPUExecutionProvider"])
        aug.unlink(missing_ok=True)
        outputs = {o.name for o in sess.get_outputs()}
        sessions.append((sess, outputs, side))
    (ref_sess, ref_names, _), (q_sess, q_names, _) = sessions

    def saved(name: str, names: set[str]) -> str | None:
        return name if name in names else (f"{name}{suffix}" if f"{name}{suffix}" in names else None)

    measured = []
    for f, q in sorted(pairs):
        a, b = saved(f, ref_names), saved(q, q_names)
        if a is not None and b is not None:
            measured.append(((f, q), a, b))
    energies = _Energies()
    for feed in feeds:
        ref = ref_sess.run([a for _, a, _ in measured], feed)
        got = q_sess.run([b for _, _, b in measured], feed)
        for (pair, _, _), x, y in zip(measured, ref, got, strict=True):
            energies.add("|".join(pair), np.asarray(x), np.asarray(y))
    ranked = []
    for order, (name, (op, inputs, out)) in enumerate(cands.items()):
        # an input's error before its rounding: the smaller of the raw and the rounded tensor's, since
        # a folded Relu leaves the raw tensor with negatives the float one does not have
        per_input: dict[str, float] = {}
        for p in inputs:
            nsr = energies.nsr("|".join(p))
            per_input[p[0]] = min(per_input.get(p[0], nsr), nsr)
        before = max(per_input.values(), default=0.0)
        ranked.append((max(energies.nsr("|".join(out)) - before, 0.0), order, name, op))
    ranked.sort(key=lambda r: (-r[0], r[1]))
    return [{"node": n, "op_type": op, "error": float(f"{e:.4g}")} for e, _, n, op in ranked]


#: Activations ONNX Runtime's QDQ quantizer folds into the uint8 range of the tensor before them.
_FOLDED = frozenset({"Relu", "Clip"})


def unround_inputs(path: Path, nodes: Collection[str], float_model: Path) -> int:
    """Make ``nodes`` of the QDQ model at ``path`` read their activations before rounding; returns how
    many inputs were rewired.

    ``nodes_to_exclude`` alone keeps a node's weights float, but in QDQ format a tensor is rounded
    once for all its readers when its producer or any reader is quantized, so an excluded node still
    reads rounded activations. Rewiring it to the tensor before its QuantizeLinear makes it compute as
    the float model does; the other readers keep the rounded tensor (and their int8 kernels). Where
    the quantizer folded a Relu or Clip into that rounding (the raw tensor still holds what the
    activation removes), the activation is put back from ``float_model`` for the rewired reader.
    Q/DQ nodes nobody reads any more are dropped.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    reference = onnx.load(str(float_model)).graph
    float_producer = {o: n for n in reference.node for o in n.output}
    float_inits = {i.name: i for i in reference.initializer}
    present = {n.name for n in graph.node}
    inits = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    wanted = set(nodes)
    restored: dict[str, str] = {}  # raw tensor -> the folded activation's output, put back once
    rewired = 0
    for node in [n for n in graph.node if n.name in wanted]:
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear":
                continue
            raw = str(q.input[0])
            folded = float_producer.get(raw)
            if folded is not None and folded.name not in present:
                if folded.op_type not in _FOLDED:
                    continue  # removed for a reason we cannot undo: keep the rounded input
                if raw not in restored:
                    act = onnx.NodeProto()
                    act.CopyFrom(folded)
                    act.name = f"{folded.name}_vk_float"
                    act.input[0] = raw
                    del act.output[:]
                    act.output.append(f"{raw}_vk_float")
                    for extra in act.input[1:]:  # Clip's bounds
                        if extra and extra not in inits and extra in float_inits:
                            graph.initializer.append(float_inits[extra])
                            inits.add(extra)
                    graph.node.insert(list(graph.node).index(node), act)
                    restored[raw] = act.output[0]
                raw = restored[raw]
            node.input[i] = raw
            rewired += 1
    if rewired:
        outputs = {o.name for o in graph.output}
        for _ in range(2):  # DequantizeLinear first, then the QuantizeLinear it read
            read = {i for n in graph.node for i in n.input} | outputs
            dead = [n for n in graph.node if n.op_type in _QDQ_OPS and not (set(n.output) & read)]
            for n in dead:
                graph.node.remove(n)
        onnx.save(model, str(path))
    return rewired


def _step(
    index: int, nodes: Sequence[str], added: Sequence[str], result: dict[str, Any], max_drop: float
) -> dict[str, Any]:
    return {
        "step": index,
        "float_nodes": len(nodes),
        "added": list(added),
        "candidate": result["candidate"],
        "drop": result["drop"],
        "latency_ms": result.get("latency_ms"),
        "passed": result["drop"] <= max_drop,
    }


def search_float_nodes(
    quantize: Callable[[Sequence[str], Path], None],
    rank: Callable[[Path], list[dict[str, Any]]],
    score: Callable[[Path], dict[str, Any]],
    dst: Path,
    *,
    max_drop: float,
    iterations: int,
    backend_name: str,
) -> dict[str, Any]:
    """Quantize into ``dst`` keeping as few nodes float as the accuracy budget needs.

    Args:
        quantize: ``quantize(extra_float_nodes, path)`` writes an INT8 model with those nodes float
            (on top of the recipe's own).
        rank: ``rank(plain_int8_path)``: :func:`rank_nodes` on the calibration images.
        score: the gate's result for a model file, with ``latency_ms``.
        dst: where the accepted model goes.
        max_drop: the budget, in the gate's points.
        iterations: at most this many steps after the plain model.
        backend_name: for messages.

    Returns:
        The report: ``steps`` (per step: ``float_nodes``, ``added``, ``candidate``, ``drop``,
        ``latency_ms``, ``passed``), ``kept_float`` (the nodes the search kept float), ``ranking``
        (the worst nodes, with their error), ``gate`` (the accepted model's gate result), ``metric``,
        ``reference`` (the float model's score), ``reference_ms`` (its latency, when the scorer
        measures it), ``max_drop``, ``iterations``, ``seconds``.

    Raises:
        AccuracyGateError: no step holds the budget; the message lists every step.
    """
    t0 = time.perf_counter()
    steps: list[dict[str, Any]] = []
    ranking: list[dict[str, Any]] = []
    nodes: list[str] = []
    results: list[dict[str, Any]] = []

    def attempt(index: int, keep: list[str]) -> dict[str, Any] | None:
        path = dst.with_name(f"{dst.stem}.step{index}{dst.suffix}")
        quantize(keep, path)
        result = score(path)
        results.append(result)
        steps.append(_step(index, keep, keep[len(nodes) :], result, max_drop))
        if steps[-1]["passed"]:
            os.replace(path, dst)
            return result
        if index == 0:
            ranking.extend(rank(path))  # the plain model is what the nodes are ranked on
        path.unlink(missing_ok=True)
        return None

    accepted = attempt(0, [])
    sizes = step_sizes(len(ranking), iterations) if accepted is None else []
    for index, k in enumerate(sizes, start=1):
        keep = [r["node"] for r in ranking[:k]]
        accepted = attempt(index, keep)
        nodes = keep
        if accepted is not None:
            break
    if accepted is None:
        base = results[0]
        best = min(steps, key=lambda s: s["drop"])
        tried = "; ".join(
            f"step {s['step']} ({s['float_nodes']} float): drop {s['drop']:.2f}, {s['latency_ms']} ms"
            for s in steps
        )
        error = AccuracyGateError(
            f"INT8 {backend_name!r} at best drops {best['drop']:.2f} {base['metric']} points, more than "
            f"max_drop={max_drop}: fp32 scores {base['reference']:.2f} and int8 scores {best['candidate']:.2f} "
            f"at its best step, on {base['images']} images (against {base['against']}), after keeping up to "
            f"{steps[-1]['float_nodes']} of the {len(ranking)} ranked nodes float in {len(steps)} steps: "
            f"{tried}. Raise accuracy_control_iterations, calibrate on more images of your domain "
            "(calib=...), or use precision='fp32'."
        )
        error.search = {
            "max_drop": max_drop,
            "iterations": iterations,
            "steps": steps,
            "ranking": ranking[:REPORTED_RANKING],
            "ranked_nodes": len(ranking),
            "metric": base["metric"],
            "reference": base["reference"],
            "reference_ms": base.get("reference_ms"),
        }
        raise error
    return {
        "max_drop": max_drop,
        "iterations": iterations,
        "steps": steps,
        "kept_float": nodes if len(steps) > 1 else [],
        "ranking": ranking[:REPORTED_RANKING],
        "ranked_nodes": len(ranking),
        "gate": accepted,
        "metric": accepted.get("metric"),
        "reference": accepted.get("reference"),
        "reference_ms": accepted.get("reference_ms"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
