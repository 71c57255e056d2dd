"""Deploy without torch: footprint and speed of a visionkit deploy artifact vs the torch paths (issue 14).

::

    VISIONKIT_WEIGHTS=../shared/data/weights VISIONKIT_DATA=../shared/data \\
        python benchmarks/deploy_footprint.py --rounds 3 --images 20 --json deploy.json

yolov8n-dq exported once (fp32 and INT8, 640, rect letterbox) with ``visionkit export``'s exporter, then
every configuration runs in a **fresh process**, in interleaved rounds (each configuration once per
round), batch 1, 2 threads, on real coco-mini photos decoded before timing:

* ``deploy-fp32`` / ``deploy-int8``: ``visionkit.load("file.onnx").detect(image)`` (onnxruntime + numpy +
  OpenCV; the worker checks that torch was never imported);
* ``bare-fp32`` / ``bare-int8``: ``InferenceSession.run`` alone on the same file and the same
  preprocessed tensors (the floor; NMS is in the graph, so it is part of the floor too);
* ``ov-deploy-fp32`` / ``ov-deploy-int8``: ``visionkit.load("file.xml").detect(image)``, the OpenVINO IR
  written by ``visionkit export yolo --runtime openvino`` (OpenVINO + numpy + OpenCV, no torch; INT8 by
  NNCF with the head's tail float, calibrated on the same photos as the ONNX INT8);
* ``ov-bare-fp32`` / ``ov-bare-int8``: the IR's compiled model alone on the preprocessed tensors;
* ``ultralytics``: ``YOLO(pt).predict(image)`` (threads reset to 2 before each call);
* ``sdk-fp32``: ``visionkit.load("yolo", weights=pt).detect(image)`` (torch eager).

Reported per configuration (medians over rounds): peak RSS of the process, cold start (import + load +
first result, the file already exported), median per-image latency. Ratios: deploy / bare, deploy /
ultralytics, deploy / sdk-fp32, OpenVINO IR deploy / ONNX Runtime deploy. With ``--ap-images N``
(default 100, 0 skips), the bbox AP of each deploy file on the first N coco-mini images (conf 0.001). Also the size on disk of the runtime-only environment (the
distributions visionkit-onnx needs, found from its requirements) next to the whole environment.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CONFIGS = (
    "deploy-fp32",
    "deploy-int8",
    "bare-fp32",
    "bare-int8",
    "ov-deploy-fp32",
    "ov-deploy-int8",
    "ov-bare-fp32",
    "ov-bare-int8",
    "ultralytics",
    "sdk-fp32",
)
HEAVY = ("torch", "torchvision", "ultralytics", "transformers", "segment_anything")


def _peak_mib() -> float:
    """This process's peak RSS. ``VmHWM``: ``ru_maxrss`` keeps the parent's peak across fork + exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _images(n: int) -> list[Path]:
    root = Path(os.environ["VISIONKIT_DATA"]) / "coco-mini" / "images"
    return sorted(root.glob("*.jpg"))[:n]


def worker(config: str, artifact: str, weights: str, n: int, threads: int) -> dict[str, Any]:
    """One configuration in this (fresh) process; returns its numbers."""
    t0 = time.perf_counter()
    files = _images(n)
    items: list[Any]
    if config.startswith(("deploy", "bare", "ov-")):
        import cv2

        import visionkit

        det = visionkit.load(artifact, threads=threads)
        first = cv2.cvtColor(cv2.imread(str(files[0])), cv2.COLOR_BGR2RGB)
        opts = det.resolved(det.options)
        if "deploy" in config:
            det.detect(first)
            cold = time.perf_counter() - t0
            items = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
            run = det.detect
        else:
            det.session.run(None, det.preprocess([first], opts).inputs[0])
            cold = time.perf_counter() - t0
            rgb = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
            items = [det.preprocess([a], opts).inputs[0] for a in rgb]  # the preprocessed feeds
            names = [det.raw_name, det.selected_name]

            def run(feed: Any) -> Any:
                return det.session.run(names, feed)

    elif config == "ultralytics":
        import cv2
        import torch
        from ultralytics import YOLO

        model = YOLO(weights)
        torch.set_num_threads(threads)
        model.predict(cv2.imread(str(files[0])), imgsz=640, verbose=False)
        cold = time.perf_counter() - t0
        items = [cv2.imread(str(f)) for f in files]  # ultralytics takes BGR arrays

        def run(a: Any) -> Any:
            torch.set_num_threads(threads)  # its predictor resets threads to cpu_count - 1
            return model.predict(a, imgsz=640, verbose=False)

    else:
        import cv2
        import torch

        import visionkit

        torch.set_num_threads(threads)
        det = visionkit.load("yolo", weights=weights)
        det.detect(cv2.cvtColor(cv2.imread(str(files[0])), cv2.COLOR_BGR2RGB))
        cold = time.perf_counter() - t0
        items = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
        run = det.detect
    for a in items[:2]:  # warm-up
        run(a)
    times = []
    for a in items:
        t = time.perf_counter()
        run(a)
        times.append((time.perf_counter() - t) * 1e3)
    heavy = [m for m in HEAVY if m in sys.modules]
    return {
        "config": config,
        "cold_s": cold,
        "ms": statistics.median(times),
        "peak_mib": _peak_mib(),
        "heavy_imports": heavy,
    }


def _dist_size(dist: md.Distribution) -> int:
    total = 0
    for f in dist.files or []:
        p = Path(str(dist.locate_file(f)))
        if p.is_file():
            total += p.stat().st_size
    return total


def env_sizes() -> dict[str, Any]:
    """MB on disk: the runtime-only closure of visionkit-onnx's requirements vs the whole environment."""
    dists = {d.metadata["Name"].lower().replace("_", "-"): d for d in md.distributions()}
    todo, seen = ["visionkit-onnx"], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        for req in dists[name].requires or []:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0].lower().replace("_", "-"))
    runtime = sum(_dist_size(dists[n]) for n in seen)
    full = sum(_dist_size(d) for d in dists.values())
    return {"runtime_only_mb": runtime / 1e6, "runtime_dists": sorted(seen), "full_env_mb": full / 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", default="/tmp/visionkit-deploy-bench")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma-separated subset of the configurations"
    )
    ap.add_argument("--ap-images", type=int, default=100, help="coco-mini images for each deploy file's AP")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--artifact", help=argparse.SUPPRESS)
    args = ap.parse_args()
    wdir, ddir = os.environ.get("VISIONKIT_WEIGHTS"), os.environ.get("VISIONKIT_DATA")
    if not wdir or not ddir:
        print("set VISIONKIT_WEIGHTS and VISIONKIT_DATA (e.g. ../shared/data)", file=sys.stderr)
        return 2
    weights = str(Path(wdir.split(os.pathsep)[0]) / "yolov8n-dq.pt")
    if args.worker:
        print(json.dumps(worker(args.worker, args.artifact, weights, args.images, args.threads)))
        return 0

    import visionkit_onnx
    from visionkit_onnx._export import export

    import visionkit

    configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        print(f"unknown configurations {unknown}; known: {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # both runtimes calibrate INT8 on the photos visionkit-onnx bundles (the OpenVINO default is synthetic)
    calib = Path(visionkit_onnx.__file__).parent / "calibration"
    artifacts = {}
    for precision in ("fp32", "int8"):
        path = out / f"yolov8n-dq-{precision}.onnx"
        be = visionkit.load("yolo", weights=weights, imgsz=640)
        rep = export(be, precision=precision, output=path, threads=args.threads)
        artifacts[precision] = (str(path), rep)
        print(f"exported {path} ({rep['size_bytes'] / 1e6:.1f} MB, calibration: {rep['calibration']})")
    if any(c.startswith("ov-") for c in configs):
        from visionkit_openvino._export import export as export_ir

        for precision in ("fp32", "int8"):
            path = out / f"yolov8n-dq-{precision}.xml"
            be = visionkit.load("yolo", weights=weights, imgsz=640)
            rep = export_ir(be, precision=precision, output=path, threads=args.threads, calib=calib)
            artifacts[f"ov-{precision}"] = (str(path), rep)
            print(f"exported {path} ({rep['size_bytes'] / 1e6:.1f} MB, calibration: {rep['calibration']})")
    ap: dict[str, float] = {}
    if args.ap_images > 0:
        coco = Path(ddir) / "coco-mini"
        for key, (path, _) in artifacts.items():
            t = time.perf_counter()
            report = visionkit.evaluate(
                path,
                coco=coco / "instances.json",
                images=coco / "images",
                limit=args.ap_images,
                options={"threads": args.threads},
            )
            ap[key] = float(report.bbox.ap or 0.0)
            print(f"AP {Path(path).name}: {ap[key]:.4f} ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for r in range(args.rounds):
        for config in configs:
            precision = "int8" if config.endswith("int8") else "fp32"
            artifact = artifacts[f"ov-{precision}" if config.startswith("ov-") else precision][0]
            cmd = [sys.executable, __file__, "--worker", config, "--artifact", artifact]
            cmd += ["--images", str(args.images), "--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if res.returncode != 0:
                print(f"{config} failed:\n{res.stderr[-2000:]}", file=sys.stderr)
                return 1
            runs[config].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {config}: {runs[config][-1]}", file=sys.stderr)
    med = {
        c: {k: statistics.median(x[k] for x in rs) for k in ("cold_s", "ms", "peak_mib")}
        | {"heavy_imports": sorted({m for x in rs for m in x["heavy_imports"]})}
        for c, rs in runs.items()
    }
    sizes = env_sizes()
    ap_of = {
        "deploy-fp32": "fp32",
        "deploy-int8": "int8",
        "ov-deploy-fp32": "ov-fp32",
        "ov-deploy-int8": "ov-int8",
    }
    print(f"\n{'config':<15} {'peak MiB':>9} {'cold s':>7} {'ms/img':>7} {'AP':>7}  heavy imports")
    for c, m in med.items():
        heavy = ", ".join(m["heavy_imports"]) or "none"
        a = ap.get(ap_of.get(c, ""))
        print(
            f"{c:<15} {m['peak_mib']:>9.0f} {m['cold_s']:>7.2f} {m['ms']:>7.1f} "
            f"{'' if a is None else f'{a:.4f}':>7}  {heavy}"
        )
    ratios: dict[str, dict[str, float]] = {}
    for p in ("fp32", "int8"):
        for prefix, bare, name in (("deploy", "bare", "ORT"), ("ov-deploy", "ov-bare", "OpenVINO")):
            key = f"{prefix}-{p}"
            if key not in med:
                continue
            d = med[key]["ms"]
            r = {
                f"vs_{o.replace('-', '_')}": d / med[o]["ms"]
                for o in (f"{bare}-{p}", "ultralytics", "sdk-fp32", f"deploy-{p}")
                if o in med and o != key
            }
            r |= {
                f"{k}_vs_ort_deploy": med[key][k] / med[f"deploy-{p}"][k]
                for k in ("peak_mib", "cold_s")
                if prefix == "ov-deploy" and f"deploy-{p}" in med
            }
            ratios[key] = r
            print(f"{key} ({name}): " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items()))
    print(
        f"runtime-only environment {sizes['runtime_only_mb']:.0f} MB "
        f"({len(sizes['runtime_dists'])} distributions) vs the whole one {sizes['full_env_mb']:.0f} MB"
    )
    result = {
        "rounds": args.rounds,
        "images": args.images,
        "threads": args.threads,
        "medians": med,
        "ratios": ratios,
        "ap": ap,
        "env": sizes,
        "runs": runs,
        "artifacts": {p: {"path": a, "size_bytes": rep["size_bytes"]} for p, (a, rep) in artifacts.items()},
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
