"""PyTorch fp32 vs ONNX Runtime fp32 vs ONNX Runtime INT8 on one backend (default: yolo), two resolutions.

The course lab "export a small ONNX model and run it with ONNX Runtime on CPU; measure median latency
at two input resolutions" is this one command::

    VISIONKIT_WEIGHTS=../shared/data/weights VISIONKIT_DATA=../shared/data \\
        python benchmarks/int8_tradeoffs.py --imgsz 640 320 --threads 2 --ap --json int8.json

Each (runtime, size) runs in a fresh subprocess (so peak RSS is that runtime's alone), in interleaved
rounds (every configuration once per round) so machine drift hits all alike; latency is the median and
p95 over all rounds of ``backend.forward`` on one preprocessed image at batch 1 (the swappable part),
plus the median of a whole ``detect`` call. ``bare-ort-*`` rows run the same cached .onnx files with
onnxruntime alone (no torch imported): the deployment footprint. Exports are built once into the
visionkit-onnx cache before timing. ``--ap`` adds COCO mAP50-95 on coco-mini (pycocotools, conf 0.001, 100 images) per configuration.
Without VISIONKIT_WEIGHTS the model is randomly initialised (latency and size still mean something; mAP not).

``--stage`` times another exported network of a multi-network backend, e.g. SAM's prompt decoder::

    python benchmarks/int8_tradeoffs.py --backend mobile-sam -O model_type=vit_t --stage decoder_forward --imgsz 1024

The stage's inputs come from its ExportSpec's ``calibration_inputs`` on a real image (for SAM: the
image embedding and a 3x3 grid of single clicks = 9 prompts per call), computed once with the fp32
ONNX model and fed to every configuration, so the table compares that network alone. ``output corr`` is the Pearson
correlation of each configuration's first output with torch-fp32's on that input (SAM: low-res mask
logits), which says how far INT8 strays where no labelled metric exists.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CONFIGS = {
    "torch-fp32": {"precision": "fp32", "runtime": None},
    "ort-fp32": {"precision": "fp32", "runtime": "onnxruntime"},
    "ort-int8": {"precision": "int8", "runtime": "onnxruntime"},
}
#: The cached .onnx files run by onnxruntime alone (no torch in the process): the deployment footprint.
BARE = {"bare-ort-fp32": "ort-fp32", "bare-ort-int8": "ort-int8"}


def _data() -> Path | None:
    root = os.environ.get("VISIONKIT_DATA")
    return Path(root) / "coco-mini" if root and (Path(root) / "coco-mini").is_dir() else None


def _weights(args: argparse.Namespace) -> str | None:
    if args.weights:
        return None if args.weights == "random" else args.weights
    if args.backend != "yolo":
        return None
    for d in filter(None, os.environ.get("VISIONKIT_WEIGHTS", "").split(os.pathsep)):
        p = Path(d) / "yolov8n-dq.pt"
        if p.exists():
            return str(p)
    return None


def _load(args: argparse.Namespace, config: str, imgsz: int) -> Any:
    import torch

    import visionkit
    from visionkit.cli._args import parse_kv

    torch.manual_seed(0)  # a random init must be the same network in every worker process
    cfg = CONFIGS[config]
    ropts: dict[str, Any] = {"threads": args.threads}
    data = _data()
    if args.calib or data:
        ropts["calib"] = args.calib or str(data / "images")  # type: ignore[operator]
    return visionkit.load(
        args.backend,
        weights=_weights(args),
        precision=cfg["precision"],
        runtime=cfg["runtime"],
        runtime_options=ropts if cfg["runtime"] else None,
        **{**_size_options(args.backend, imgsz, rect=args.rect), **parse_kv(args.option)},
    )


def _size_options(backend: str, size: int, rect: bool = False) -> dict[str, Any]:
    """The backend's own input-size options for ``size`` (YOLO: imgsz; torchvision classifiers: crop).

    ``rect``: YOLO's rect letterbox (exported runtimes take it too: dynamic H/W), else one square input.
    """
    from visionkit import get_registry
    from visionkit.registry import import_string

    spec = get_registry().get(backend)
    fields = set(import_string(spec.options, owner=spec.name).model_fields) if spec.options else set()
    if "imgsz" in fields:
        return {"imgsz": size, "rect": rect} if "rect" in fields else {"imgsz": size}
    if "crop_size" in fields:  # ImageNet convention: resize to 256/224 of the crop, then centre-crop
        return {"crop_size": size, "resize_size": round(size * 256 / 224)}
    if "image_size" in fields:  # SAM: the encoder's square input
        return {"image_size": size}
    raise SystemExit(
        f"don't know how to set the input size of backend {backend!r} (options: {sorted(fields)})"
    )


def _images(n: int) -> list[Any]:
    from visionkit import load_image

    data = _data()
    if data is None:
        from visionkit_onnx._calib import synthetic_images

        return synthetic_images(n, seed=11)
    return [load_image(p) for p in sorted((data / "images").iterdir())[:n]]


def _coco_ap(backend: Any, imgsz: int) -> float | None:
    data = _data()
    if data is None:
        return None
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from visionkit import load_image

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        gt = COCO(str(data / "instances.json"))
    name_to_id = {c["name"]: c["id"] for c in gt.loadCats(gt.getCatIds())}
    dets = []
    for img in gt.loadImgs(gt.getImgIds()):
        r = backend.detect(load_image(data / "images" / img["file_name"]), conf=0.001, max_det=300)
        for b, s, n in zip(r.xyxy, r.confidence, r.class_name, strict=True):
            if n in name_to_id:
                x1, y1, x2, y2 = map(float, b)
                dets.append(
                    {
                        "image_id": img["id"],
                        "category_id": name_to_id[n],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": float(s),
                    }
                )
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def _spec(be: Any, stage: str) -> Any:
    from visionkit.export import export_specs_of

    for spec in export_specs_of(be):
        if spec.stage == stage:
            return spec
    raise SystemExit(f"backend {be.name!r} has no exported stage {stage!r}")


def _stage_inputs(be: Any, stage: str, img: Any) -> tuple[Any, ...]:
    """What the timed stage takes, as a tuple of tensors: preprocess for ``forward``, else the spec's
    calibration_inputs (the backend's own way from an image to that network's inputs)."""
    if stage == "forward":
        x = be.preprocess([img], be.options).inputs
        return tuple(x) if isinstance(x, (tuple, list)) else (x,)
    spec = _spec(be, stage)
    if spec.calibration_inputs is None:
        raise SystemExit(f"stage {stage!r} of {be.name!r} has no calibration_inputs to build its inputs from")
    return tuple(spec.calibration_inputs([img]))


def _call(fn: Any, inputs: tuple[Any, ...], stage: str) -> Any:
    return fn(inputs[0]) if stage == "forward" and len(inputs) == 1 else fn(inputs)


def _first_output(out: Any) -> Any:
    import numpy as np

    first = out[0] if isinstance(out, (tuple, list)) else out
    return np.asarray(first.detach().cpu() if hasattr(first, "detach") else first, dtype=np.float32)


def _peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )  # macOS: bytes, close enough as a fallback


def bare_worker(args: argparse.Namespace) -> None:
    """Only onnxruntime + numpy: the exported model on a saved preprocessed input."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(args.model, sess_options=so, providers=["CPUExecutionProvider"])
    saved = np.load(args.input)
    feed = {i.name: saved[f"arr_{k}"] for k, i in enumerate(sess.get_inputs())}
    x = feed[sess.get_inputs()[0].name]
    for _ in range(args.warmup):
        sess.run(None, feed)
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        result = sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    np.save(args.output, result[0].astype(np.float32))
    out = {
        "config": args.worker,
        "imgsz": args.size,
        "input": list(x.shape),
        "forward_ms": times,
        "detect_ms": [],
        "file_bytes": Path(args.model).stat().st_size,
        "peak_rss_mib": _peak_rss_mib(),
        "ap": None,
    }
    print("RESULT " + json.dumps(out))


def worker(args: argparse.Namespace) -> None:
    """One configuration in this (fresh) process; prints one JSON line."""
    if args.worker in BARE:
        bare_worker(args)
        return
    import torch

    torch.set_num_threads(args.threads)
    be = _load(args, args.worker, args.size)
    img = _images(1)[0]
    stage = getattr(be, args.stage)
    with torch.inference_mode():
        if args.stage == "forward":
            inputs = _stage_inputs(be, args.stage, img)
        else:  # one saved input for every configuration, so the table compares this network alone
            import numpy as np

            saved = np.load(args.input)
            inputs = tuple(torch.from_numpy(saved[f"arr_{k}"]) for k in range(len(saved.files)))
        for _ in range(args.warmup):
            _call(stage, inputs, args.stage)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            result = _call(stage, inputs, args.stage)
            times.append((time.perf_counter() - t0) * 1e3)
        import numpy as np

        np.save(args.output, _first_output(result))
        e2e = []
        if args.stage == "forward":  # the whole task call: detect for detectors, classify for classifiers ...
            verb = getattr(be, be.tasks[0].value)
            for _ in range(max(3, args.runs // 3)):
                t0 = time.perf_counter()
                verb(img)
                e2e.append((time.perf_counter() - t0) * 1e3)
        ap = _coco_ap(be, args.size) if args.ap else None
    rt = getattr(be, "runtime", None) or {}
    size = (rt.get("stages") or {}).get(args.stage, {}).get("size_bytes")
    if size is None and args.stage == "forward" and isinstance(be.weights, str) and Path(be.weights).exists():
        size = Path(be.weights).stat().st_size
    if size is None:  # torch, random init: the network's parameters as fp32
        size = sum(p.numel() * p.element_size() for p in _spec(be, args.stage).module.parameters())
    x = inputs[0]
    out = {
        "config": args.worker,
        "imgsz": args.size,
        "input": list(x.shape),
        "forward_ms": times,
        "detect_ms": e2e,
        "file_bytes": size,
        "peak_rss_mib": _peak_rss_mib(),
        "ap": ap,
        "float_nodes": (rt.get("stages") or {}).get(args.stage, {}).get("float_nodes"),
        "threads": args.threads,
    }
    print("RESULT " + json.dumps(out))


def _run_worker(args: argparse.Namespace, config: str, size: int, ap: bool) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        config,
        "--size",
        str(size),
        "--backend",
        args.backend,
        "--threads",
        str(args.threads),
        "--runs",
        str(args.runs),
        "--warmup",
        str(args.warmup),
        "--stage",
        args.stage,
        "--output",
        str(args.tmp / f"{config}-{size}.npy"),
    ]
    if args.weights:
        cmd += ["--weights", args.weights]
    if args.calib:
        cmd += ["--calib", args.calib]
    if args.rect:
        cmd += ["--rect"]
    for item in args.option:
        cmd += ["--option", item]
    if ap:
        cmd.append("--ap")
    cmd += ["--input", args.inputs[size]]
    if config in BARE:
        cmd += ["--model", args.models[(BARE[config], size)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"worker {config}@{size} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])  # type: ignore[no-any-return]


def _corr(a: Path, b: Path) -> float | None:
    """Pearson correlation of two saved outputs (None when either is missing or shapes differ)."""
    import numpy as np

    if not (a.exists() and b.exists()):
        return None
    x, y = np.load(a).ravel(), np.load(b).ravel()
    return float(np.corrcoef(x, y)[0, 1]) if x.shape == y.shape and x.size > 1 else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="yolo")
    p.add_argument(
        "--weights",
        default=None,
        help="weights file, or 'random' (default: yolov8n-dq.pt from VISIONKIT_WEIGHTS for yolo, else random init)",
    )
    p.add_argument("--imgsz", type=int, nargs="+", default=[640, 320])
    p.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads (same for both)")
    p.add_argument("--runs", type=int, default=10, help="timed forwards per configuration per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--calib",
        default=None,
        help="calibration folder (default: VISIONKIT_DATA coco-mini, else visionkit-onnx's bundled photos)",
    )
    p.add_argument(
        "--rect", action="store_true", help="YOLO: rect letterbox (4:3 photos run 640x480), not square"
    )
    p.add_argument("--ap", action="store_true", help="COCO mAP50-95 on coco-mini (needs VISIONKIT_DATA)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument(
        "--stage",
        default="forward",
        help="exported network to time (default forward; SAM's prompt decoder: decoder_forward)",
    )
    p.add_argument("--output", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "-O", "--option", action="append", default=[], help="backend option KEY=VALUE, e.g. model_type=vit_t"
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=640, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--input", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    # build (or fetch) every export once, outside the timed workers; keep one preprocessed input per size
    import tempfile

    import numpy as np
    import torch

    args.models, args.inputs = {}, {}
    tmp = args.tmp = Path(tempfile.mkdtemp(prefix="vk-bench-"))
    for size in args.imgsz:
        for config in ("ort-fp32", "ort-int8"):
            t0 = time.perf_counter()
            be = _load(args, config, size)
            built = be.runtime["stages"][args.stage]
            args.models[(config, size)] = built["model_path"]
            if config == "ort-fp32":  # the shared input (a later stage's inputs come from fp32 networks)
                with torch.inference_mode():
                    inputs = _stage_inputs(be, args.stage, _images(1)[0])
                args.inputs[size] = str(tmp / f"x{size}.npz")
                np.savez(args.inputs[size], *[t.detach().cpu().numpy() for t in inputs])
            print(
                f"# {config}@{size}: model ready in {time.perf_counter() - t0:.1f}s "
                f"(cache hit: {built['cache_hit']}, {built['model_path']})",
                flush=True,
            )
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        for size in args.imgsz:
            for config in [*CONFIGS, *BARE]:
                res = _run_worker(args, config, size, ap=args.ap and r == 0)
                results.setdefault((config, size), []).append(res)
                print(
                    f"# round {r + 1}/{args.rounds} {config}@{size}: "
                    f"{statistics.median(res['forward_ms']):.1f} ms",
                    flush=True,
                )

    rows = []
    for (config, size), runs in results.items():
        fwd = sorted(t for run in runs for t in run["forward_ms"])
        e2e = [t for run in runs for t in run["detect_ms"]] or [float("nan")]
        rows.append(
            {
                "config": config,
                "imgsz": size,
                "input": runs[0]["input"],
                "median_ms": statistics.median(fwd),
                "p95_ms": fwd[min(len(fwd) - 1, round(0.95 * (len(fwd) - 1)))],
                "detect_median_ms": statistics.median(e2e),
                "file_mb": runs[0]["file_bytes"] / 1e6 if runs[0]["file_bytes"] else None,
                "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
                "ap": next((run["ap"] for run in runs if run["ap"] is not None), None),
                "output_corr": _corr(tmp / f"{config}-{size}.npy", tmp / f"torch-fp32-{size}.npy"),
            }
        )
    base = {r["imgsz"]: r["median_ms"] for r in rows if r["config"] == "torch-fp32"}
    print(
        f"\nbackend={args.backend} stage={args.stage} weights={_weights(args) or 'random init'} threads={args.threads} "
        f"rounds={args.rounds} runs/round={args.runs}"
    )
    print(
        f"| runtime | imgsz | {args.stage} median ms | p95 ms | x torch | end-to-end median ms | file MB "
        "| peak RSS MiB | mAP50-95 | output corr |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        r["vs_torch"] = r["median_ms"] / base[r["imgsz"]] if r["imgsz"] in base else None
        ap = f"{r['ap']:.3f}" if r["ap"] is not None else ""
        mb = f"{r['file_mb']:.1f}" if r["file_mb"] else ""
        corr = f"{r['output_corr']:.4f}" if r["output_corr"] is not None else ""
        print(
            f"| {r['config']} | {r['imgsz']} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | {r['vs_torch']:.2f} "
            f"| {r['detect_median_ms']:.1f} | {mb} | {r['peak_rss_mib']:.0f} | {ap} | {corr} |"
        )
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("models", "inputs", "tmp")}
        Path(args.json).write_text(json.dumps({"args": settings, "rows": rows}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
