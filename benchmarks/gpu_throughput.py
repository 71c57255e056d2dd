"""visionkit ``yolo`` vs ``ultralytics.YOLO.predict`` on one accelerator: img/s at batch 1 and 32, AP parity.

One command on a lent GPU, a few minutes::

    VISIONKIT_WEIGHTS=../shared/data/weights VISIONKIT_DATA=../shared/data \\
        python benchmarks/gpu_throughput.py --json gpu_throughput.json

and a smoke test on CPU (small, same code path as the GPU's with ``--pad-batch``)::

    python benchmarks/gpu_throughput.py --device cpu --images 4 --batches 1 4 --runs 2 --ap-images 8

Both sides get the same decoded coco-mini images (numpy arrays, so JPEG decoding is out of every number),
the same weights (``yolov8n-dq.pt``, or a random ``yolov8n.yaml`` without ``VISIONKIT_WEIGHTS``) and the
same device. Batch 1 runs the images one call at a time; batch B hands both sides lists of B images (one
ultralytics batch, one visionkit call with ``batch_size=B``). Contenders are interleaved per round and
medians reported; ratios are visionkit img/s over ultralytics img/s (> 1: visionkit faster). Each
visionkit row also reports its stage split (``last_timing``) and peak device memory. ``--ap-images``
evaluates bbox AP with ``visionkit.evaluate`` on the device and on CPU (target: within 0.001).

Prints a table and writes JSON to ``--json`` (default ``$OUT/gpu_throughput.json`` when ``OUT`` is set).
Issue #20 targets: batch 32 >= 1.2x ultralytics img/s; batch 1 latency <= 0.9x (img/s >= 1.11x).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "false")
os.environ.setdefault("VISIONKIT_OFFLINE", "1")

import numpy as np
import torch

import visionkit


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def _coco() -> Path | None:
    root = Path(os.environ.get("VISIONKIT_DATA", "")) / "coco-mini"
    return root if (root / "images").is_dir() and os.environ.get("VISIONKIT_DATA") else None


def _images(n: int) -> list[np.ndarray]:
    root = _coco()
    files = sorted((root / "images").iterdir())[:n] if root else []
    if not files:
        from ultralytics.utils import ASSETS

        files = [ASSETS / "bus.jpg", ASSETS / "zidane.jpg"]
    ims = [visionkit.load_image(f) for f in files]
    return [ims[i % len(ims)] for i in range(n)]


def _weights(tmp: Path) -> str:
    for d in os.environ.get("VISIONKIT_WEIGHTS", "").split(os.pathsep):
        if d and (Path(d) / "yolov8n-dq.pt").is_file():
            return str(Path(d) / "yolov8n-dq.pt")
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    path = tmp / "yolov8n-random.pt"
    torch.save(
        {"model": DetectionModel("yolov8n.yaml", verbose=False), "train_args": {"task": "detect"}}, path
    )
    return str(path)


def _contenders(
    weights: str, device: str, imgsz: int, pad_batch: bool | None, fp16: bool
) -> dict[str, tuple[Callable[[list[np.ndarray], int], Any], Any]]:
    """name -> (run(images, batch), visionkit backend or None)."""
    from ultralytics import YOLO

    out: dict[str, tuple[Callable[[list[np.ndarray], int], Any], Any]] = {}
    precisions = ["fp32"] + (["fp16"] if fp16 else [])
    for prec in precisions:
        vk = visionkit.load(
            "yolo", weights=weights, device=device, precision=prec, imgsz=imgsz, pad_batch=pad_batch
        )

        def run_vk(ims: list[np.ndarray], b: int, vk: Any = vk) -> Any:
            if b == 1:
                return [vk.detect(im) for im in ims]
            return vk.detect(ims, batch_size=b)

        out[f"visionkit {prec}"] = (run_vk, vk)
        ul = YOLO(weights)
        half = prec == "fp16"

        def run_ul(ims: list[np.ndarray], b: int, ul: Any = ul, half: bool = half) -> Any:
            bgr = [np.ascontiguousarray(im[..., ::-1]) for im in ims]  # ultralytics wants BGR
            res = []
            for i in range(0, len(bgr), b):
                res += ul.predict(bgr[i : i + b], imgsz=imgsz, device=device, half=half, verbose=False)
            return res

        out[f"ultralytics {prec}"] = (run_ul, None)
    return out


def _throughput(args: argparse.Namespace, weights: str, report: dict[str, Any]) -> None:
    images = _images(args.images)
    print(f"\n{len(images)} images ({len({im.shape for im in images})} distinct shapes), imgsz {args.imgsz}")
    contenders = _contenders(weights, args.device, args.imgsz, args.pad_batch, args.fp16)
    threads = torch.get_num_threads()
    for b in args.batches:
        times: dict[str, list[float]] = {name: [] for name in contenders}
        stages: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
        for _, (run, _bk) in contenders.items():  # warm-up: kernels, cudnn autotune, anchors
            run(images[: max(b, 1)], b)
        for _ in range(args.runs):
            for name, (run, bk) in contenders.items():
                torch.set_num_threads(threads)  # ultralytics lowers it on its first predict
                _sync(args.device)
                t = time.perf_counter()
                run(images, b)
                _sync(args.device)
                times[name].append(time.perf_counter() - t)
                if bk is not None and b > 1:
                    stages[name].append(dict(bk.last_timing))
        row: dict[str, Any] = {}
        for name, ts in times.items():
            med = statistics.median(ts)
            row[name] = {"img_per_s": len(images) / med, "ms_per_batch": med * 1e3 * b / len(images)}
            if stages[name]:
                row[name]["stages_ms_per_batch"] = {
                    k: statistics.median(s[k] for s in stages[name]) * b / len(images)
                    for k in stages[name][0]
                }
        for prec in ["fp32"] + (["fp16"] if args.fp16 else []):
            vk, ul = row[f"visionkit {prec}"], row[f"ultralytics {prec}"]
            row[f"ratio {prec}"] = vk["img_per_s"] / ul["img_per_s"]
        report["batches"][str(b)] = row
        print(f"\nbatch {b} (median of {args.runs})")
        for name, r in row.items():
            if name.startswith("ratio"):
                print(f"  {name:<22} visionkit/ultralytics img/s = {r:.2f}x")
            else:
                st = r.get("stages_ms_per_batch")
                split = " ".join(f"{k[:4]} {v:.1f}" for k, v in st.items()) if st else ""
                print(f"  {name:<22}{r['img_per_s']:>8.1f} img/s {r['ms_per_batch']:>8.1f} ms/batch  {split}")
    if args.device.startswith("cuda"):
        report["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
        report["device_name"] = torch.cuda.get_device_name()
        print(f"\npeak torch allocator memory {report['peak_device_mib']:.0f} MiB on {report['device_name']}")


def _ap(args: argparse.Namespace, weights: str, report: dict[str, Any]) -> None:
    coco = _coco()
    if coco is None or not args.ap_images:
        print("\nAP parity skipped (needs VISIONKIT_DATA with coco-mini and --ap-images > 0)")
        return
    ap = {}
    for device in dict.fromkeys([args.device, "cpu"]):  # with --device cpu: one run, for the smoke test
        t = time.perf_counter()
        rep = visionkit.evaluate(
            "yolo",
            coco=coco / "instances.json",
            images=coco / "images",
            weights=weights,
            device=device,
            limit=args.ap_images,
            options={"imgsz": args.imgsz},
            progress=False,
        )
        ap[device] = rep.bbox.ap  # type: ignore[union-attr]
        print(f"AP {device}: {ap[device]:.4f} ({time.perf_counter() - t:.1f} s, {args.ap_images} images)")
    report["ap"] = ap
    report["ap_diff"] = abs(ap[args.device] - ap["cpu"])
    print(f"|AP {args.device} - AP cpu| = {report['ap_diff']:.4f} (target <= 0.001)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, help="coco-mini images per timed pass (default 32; 8 on CPU)")
    ap.add_argument("--batches", type=int, nargs="+", help="batch sizes (default 1 32; 1 8 on CPU)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument(
        "--runs", type=int, help="timed passes per contender and batch size (default 10; 3 on CPU)"
    )
    ap.add_argument(
        "--fp16", action="store_true", help="also compare fp16 (visionkit) with half=True (ultralytics)"
    )
    ap.add_argument(
        "--pad-batch",
        type=lambda v: {"auto": None, "on": True, "off": False}[v],
        default=None,
        help="auto (the backend's default: padded on cuda/mps), on, or off",
    )
    ap.add_argument(
        "--ap-images", type=int, help="coco-mini images for AP parity, device vs CPU (default 100; 0: skip)"
    )
    out = (
        Path(os.environ["OUT"]) / "gpu_throughput.json"
        if os.environ.get("OUT")
        else Path("gpu_throughput.json")
    )
    ap.add_argument("--json", type=Path, default=out)
    args = ap.parse_args()
    cpu = args.device == "cpu"  # `make bench` runs this with no arguments: keep the CPU run short
    args.images = args.images or (8 if cpu else 32)
    args.batches = args.batches or ([1, 8] if cpu else [1, 32])
    args.runs = args.runs or (3 if cpu else 10)
    args.ap_images = (0 if cpu else 100) if args.ap_images is None else args.ap_images

    with tempfile.TemporaryDirectory() as tmp:
        weights = _weights(Path(tmp))
        report: dict[str, Any] = {
            "device": args.device,
            "weights": weights,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "batches": {},
        }
        print(f"device={args.device} weights={weights} torch={torch.__version__} threads={report['threads']}")
        t0 = time.perf_counter()
        _throughput(args, weights, report)
        _ap(args, weights, report)
        report["seconds"] = time.perf_counter() - t0
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.json} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
