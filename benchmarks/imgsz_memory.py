"""Why does resolution grow memory? Activation memory per input size, as a table and a plot.

    VISIONKIT_WEIGHTS=../shared/data/weights python benchmarks/imgsz_memory.py \\
        --imgsz 320 640 960 1280 --threads 1 --plot docs/imgsz-memory.png
    python benchmarks/imgsz_memory.py --device cuda ...      # on a GPU: the torch allocator's own peak

Each size runs in a fresh process (``visionkit.benchmark`` isolation) on a synthetic ``imgsz × imgsz``
image, batch 1. Three measures of what running the model adds on top of the loaded model:

- ``tensor MB`` (CPU, torch backends): the peak of live tensor bytes during one ``forward`` at that size,
  from ``torch.profiler`` memory events (``self_cpu_memory_usage`` summed in time order). Exact and
  repeatable: it counts activations only.
- ``RSS act MB``: the fresh process's peak RSS minus its RSS after loading. Noisy on CPU: the allocator
  reuses memory freed while loading, and one-off runtime buffers count too; read the growth.
- ``dev act MB`` (CUDA): ``torch.cuda.max_memory_allocated`` minus what was allocated after loading.

Feature maps have ``C × H/s × W/s`` elements at every stride ``s``, so activations grow with the pixel
count, the square of ``imgsz``: twice the side is four times the memory, while the weights stay the
same. ``x pixels`` is that expectation; the ``x`` columns are what was measured. Without
VISIONKIT_WEIGHTS (and no ``--weights``) the model is randomly initialised: memory is the same.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

import visionkit
from visionkit.bench import IMGSZ_OPTIONS


def tensor_peak_mb(backend: Any, size: int, batch: int) -> float | None:
    """Peak live tensor MB of one ``forward`` at ``size`` (torch.profiler memory events); None if not torch."""
    key = next((k for k in IMGSZ_OPTIONS if k in type(backend.options).model_fields), None)
    if key is None or not hasattr(backend, "preprocess"):
        return None
    import torch
    from torch.profiler import ProfilerActivity, profile

    img = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    inputs = backend.preprocess([img] * batch, backend.with_options({key: size})).inputs
    backend.forward(inputs)  # warm-up: one-off caches are not activations
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        backend.forward(inputs)
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live = np.cumsum([e.self_cpu_memory_usage for e in events]) if events else np.zeros(1)
    return float(live.max()) / 2**20


def _plot(path: str, title: str, sizes: list[int], series: dict[str, list[float]]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for (label, ys), style in zip(series.items(), ("o-", "s:"), strict=False):
        ax.plot(sizes, ys, style, label=label)
    first = next(iter(series.values()))
    scale = first[0] / sizes[0] ** 2
    ax.plot(sizes, [scale * s**2 for s in sizes], "--", alpha=0.6, label="∝ imgsz² (pixel count)")
    ax.set_xlabel("input size imgsz (square, px)")
    ax.set_ylabel("MB added by running the model")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="yolo")
    ap.add_argument("--weights", default=None, help="weights file or name (default: yolov8n-dq.pt if found)")
    ap.add_argument("--imgsz", type=int, nargs="+", default=[320, 640, 960, 1280])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--plot", default=None, help="write a PNG of activation memory vs imgsz")
    ap.add_argument("--json", default=None, help="write the BenchReport JSON here")
    args = ap.parse_args(argv)
    weights = args.weights
    if weights is None and args.backend == "yolo":
        dirs = [d for d in os.environ.get("VISIONKIT_WEIGHTS", "").split(os.pathsep) if d]
        weights = next(
            (str(Path(d) / "yolov8n-dq.pt") for d in dirs if (Path(d) / "yolov8n-dq.pt").is_file()), None
        )
    sizes = sorted(args.imgsz)
    report = visionkit.benchmark(
        args.backend,
        imgsz=sizes,
        batch=args.batch,
        runs=args.runs,
        warmup=1,
        device=args.device,
        precision=args.precision,
        weights=weights,
        threads=args.threads,
        isolate=True,
    )
    if args.json:
        Path(args.json).write_text(report.to_json())
    for r in report.results:
        if r.error:
            print(f"imgsz {r.imgsz}: error: {r.error}")
    rows = [r for r in report.results if r.error is None and r.activation_mb is not None]
    if not rows:
        return 1
    on_device = all(r.device_peak_mb is not None for r in rows)
    tensor: dict[int, float | None] = {}
    if not on_device and args.device == "cpu":
        try:
            loaded = visionkit.load(args.backend, weights=weights, precision=args.precision)
            if args.threads:
                import torch

                torch.set_num_threads(args.threads)
            tensor = {int(r.imgsz or 0): tensor_peak_mb(loaded, int(r.imgsz or 0), args.batch) for r in rows}
        except Exception as exc:  # a backend without torch stages: RSS only
            print(f"torch profiler measure skipped: {type(exc).__name__}: {exc}")
    where = rows[0].device_name or rows[0].device or "?"
    print(f"{args.backend} ({weights or 'random init'}), {args.precision}, batch {args.batch}, on {where}")
    act = "dev act MB" if on_device else "RSS act MB"
    head = f"{'imgsz':>6}{'x pixels':>10}{'input MB':>10}{'tensor MB':>11}{'x':>6}{act:>12}{'x':>6}{'median ms':>11}"
    print(head)
    print("-" * len(head))
    s0, t0, a0 = int(rows[0].imgsz or 1), tensor.get(int(rows[0].imgsz or 0)), rows[0].activation_mb or 0.0
    for r in rows:
        s, t, a = int(r.imgsz or 0), tensor.get(int(r.imgsz or 0)), r.activation_mb or 0.0
        print(
            f"{s:>6}{(s / s0) ** 2:>10.2f}{3 * 4 * args.batch * s * s / 2**20:>10.1f}"
            + (f"{t:>11.1f}{t / t0:>6.2f}" if t is not None and t0 else f"{'-':>11}{'-':>6}")
            + f"{a:>12.1f}{(a / a0 if a0 > 0 else float('nan')):>6.2f}"
            + f"{(r.latency.median_ms if r.latency else float('nan')):>11.1f}"
        )
    if args.plot:
        xs = [int(r.imgsz or 0) for r in rows]
        series: dict[str, list[float]] = {}
        if on_device:
            series["device allocator peak − allocated after load"] = [r.activation_mb or 0.0 for r in rows]
        else:
            if all(tensor.get(x) is not None for x in xs):
                series["peak live tensors in forward (torch.profiler)"] = [
                    float(tensor[x] or 0.0) for x in xs
                ]
            series["process peak RSS − RSS after load (noisy)"] = [r.activation_mb or 0.0 for r in rows]
        _plot(args.plot, f"{args.backend}: activation memory vs input size, on {where}", xs, series)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
