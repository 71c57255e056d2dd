"""Finding the numerically sensitive tail of an OpenVINO graph by walking it, not by op names.

ultralytics' OpenVINO INT8 export ignores the Detect module's ops by name prefix; here the same region
is found from the graph alone, so any backend naming ``ExportSpec.sensitive_outputs`` gets it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["COMPUTE_OPS", "float_compute_ops", "sensitive_ops"]

#: Ops with learned weights that do the heavy lifting: the walk stops at them (they stay quantizable).
COMPUTE_OPS = frozenset(
    {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul"}
)
#: Ops that read only the shape of their input, and leaves: the walk does not go through them.
_STOP = frozenset({"ShapeOf", "Constant", "Parameter"})


def _producers(op: Any) -> list[Any]:
    return [op.input_value(i).get_node() for i in range(op.get_input_size())]


def _consumers(op: Any) -> list[Any]:
    return [t.get_node() for out in op.outputs() for t in out.get_target_inputs()]


def _expectation(op: Any) -> bool:
    """A compute op fed by a softmax (through reshapes): an expectation over a distribution.

    YOLOv8's DFL is one (softmax over 16 bins, then a fixed 1x1 conv = the expected distance in pixels);
    its output is a box coordinate, so it belongs to the float tail, not to the quantizable body.
    """
    src = op.input_value(0).get_node()
    while src.get_type_name() in ("Reshape", "Transpose", "Squeeze", "Unsqueeze"):
        src = src.input_value(0).get_node()
    return bool(src.get_type_name() == "SoftMax" or src.get_type_name() == "Softmax")


def sensitive_ops(model: Any, outputs: Sequence[str]) -> list[str]:
    """Friendly names of the ops between the last compute ops and the model outputs named ``outputs``.

    The walk goes backwards from each output through every op until a compute op
    (:data:`COMPUTE_OPS`), which it leaves out, never following ``ShapeOf`` (a dynamic shape read would
    drag the backbone in). Then every op on a path between two ops already found is added (the region's
    hull), so a small compute op inside the tail, e.g. YOLO's DFL 1x1 convolution between its softmax
    and the box decode, stays float too. For YOLOv8: split/DFL/decode/sigmoid/concat after the branch convs.
    """
    results = {}
    for res in model.get_results():
        for name in res.input_value(0).get_names():
            results[name] = res
    unknown = [o for o in outputs if o not in results]
    if unknown:
        raise KeyError(f"{unknown} are not outputs of the model; outputs: {sorted(results)}")
    region: dict[str, Any] = {}
    stack = [results[o].input_value(0).get_node() for o in outputs]
    while stack:
        op = stack.pop()
        name = op.get_friendly_name()
        kind = op.get_type_name()
        if name in region or kind in _STOP or (kind in COMPUTE_OPS and not _expectation(op)):
            continue
        region[name] = op
        stack.extend(_producers(op))

    def closure(start: Iterable[Any], step: Any) -> set[str]:
        seen: set[str] = set()
        todo = list(start)
        while todo:
            op = todo.pop()
            name = op.get_friendly_name()
            if name in seen or op.get_type_name() in ("Constant", "Parameter", "Result"):
                continue
            seen.add(name)
            todo.extend(step(op))
        return seen

    seeds = list(region.values())
    hull = set(region) | (closure(seeds, _consumers) & closure(seeds, _producers))
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_friendly_name() in hull]


#: Ops that pass a quantized tensor on unchanged in scale (NNCF puts the FakeQuantize before them).
_AGNOSTIC = frozenset(
    {"Concat", "MaxPool", "Reshape", "Transpose", "Split", "VariadicSplit", "StridedSlice", "Slice",
     "Squeeze", "Unsqueeze", "Interpolate", "Pad", "Convert", "Gather", "DepthToSpace", "ShuffleChannels"}
)  # fmt: skip


def float_compute_ops(model: Any) -> tuple[list[str], int]:
    """Compute ops of a quantized model whose activations are not quantized, and how many compute ops.

    What actually stayed float after NNCF (ignored scope plus what accuracy control reverted): a
    compute op runs INT8 when its data input comes from a ``FakeQuantize``, possibly through ops that
    leave a quantized tensor quantized (concat, max-pool, reshape ...; all of a concat's inputs).
    """
    memo: dict[int, bool] = {}

    def quantized(op: Any) -> bool:
        key = id(op)
        if key not in memo:
            memo[key] = False  # cycles cannot occur in a model, but guard the recursion anyway
            kind = op.get_type_name()
            if kind == "FakeQuantize":
                memo[key] = True
            elif kind in _AGNOSTIC and op.get_input_size():
                data = _producers(op)
                data = data if kind == "Concat" else data[:1]
                memo[key] = all(quantized(p) for p in data)
        return memo[key]

    float_ops, total = [], 0
    for op in model.get_ordered_ops():
        if op.get_type_name() not in COMPUTE_OPS:
            continue
        total += 1
        if not quantized(op.input_value(0).get_node()):
            float_ops.append(op.get_friendly_name())
    return float_ops, total
