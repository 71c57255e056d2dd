"""Finding the numerically sensitive tail of a graph by walking it, not by node names."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["COMPUTE_OPS", "SHAPE_OPS", "boundary_nodes", "ensure_node_names", "sensitive_nodes"]

#: Ops that carry learned weights and do the heavy lifting: the walk stops at them (they stay quantized).
COMPUTE_OPS = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "MatMulInteger", "Attention"}
)

#: Ops that read only their input's shape; the walk does not follow them.
SHAPE_OPS = frozenset({"Shape", "Size"})


def ensure_node_names(model: Any) -> None:
    """Name unnamed nodes: quantization excludes nodes by name."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_vk{i}"
        seen.add(node.name)


def sensitive_nodes(model: Any, outputs: Sequence[str]) -> list[str]:
    """Names of the nodes between the last compute ops and ``outputs``.

    The walk goes backwards from each output through every node until it reaches a compute op
    (:data:`COMPUTE_OPS`), which it leaves out. Then it adds every node lying on a path between two
    nodes already found (the region's convex hull), so a small op inside the tail, e.g. the 1x1 Conv of
    YOLO's distribution focal loss between its softmax and the box decode, stays float as well.
    For YOLOv8 this yields the concat/split/DFL/decode/sigmoid/concat after the three branches' last Convs.
    """
    graph = model.graph
    producer: dict[str, Any] = {}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for out in node.output:
            producer[out] = node
        for inp in node.input:
            consumers[inp].append(node)
    names = {o.name for o in graph.output}
    unknown = [o for o in outputs if o not in names]
    if unknown:
        raise KeyError(f"{unknown} are not outputs of the graph; outputs: {sorted(names)}")

    region: dict[str, Any] = {}
    stack = [producer[o] for o in outputs if o in producer]
    while stack:
        node = stack.pop()
        if node.name in region or node.op_type in COMPUTE_OPS:
            continue
        if node.op_type in SHAPE_OPS:
            # reads only the shape of its input (e.g. a dynamic batch size): not part of the value path,
            # and following it would drag the backbone tensor it measures into the region
            continue
        region[node.name] = node
        stack.extend(producer[i] for i in node.input if i in producer)

    def closure(start: Iterable[Any], step: Any) -> set[str]:
        seen: set[str] = set()
        todo = list(start)
        while todo:
            node = todo.pop()
            if node.name in seen:
                continue
            seen.add(node.name)
            todo.extend(step(node))
        return seen

    seeds = list(region.values())
    down = closure(seeds, lambda n: [c for o in n.output for c in consumers.get(o, [])])
    up = closure(seeds, lambda n: [producer[i] for i in n.input if i in producer])
    hull = set(region) | (down & up)
    return [n.name for n in graph.node if n.name in hull]


def boundary_nodes(model: Any, region: Sequence[str]) -> list[str]:
    """The compute ops whose outputs feed ``region`` directly (e.g. YOLO's last 1x1 class/box convs).

    Kept float with the region: their uint8 outputs put class logits on a grid of ~0.1-0.16, so every
    score near 0.5 snapped to sigmoid(0) = 0.5 exactly (issue 18 item 8). They are a few small convs.
    """
    inside = set(region)
    producer = {out: node for node in model.graph.node for out in node.output}
    found: dict[str, None] = {}
    for node in model.graph.node:
        if node.name not in inside:
            continue
        for inp in node.input:
            src = producer.get(inp)
            if src is not None and src.op_type in COMPUTE_OPS and src.name not in inside:
                found[src.name] = None
    return [n.name for n in model.graph.node if n.name in found]
