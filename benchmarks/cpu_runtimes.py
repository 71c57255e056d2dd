"""CPU runtimes side by side on yolov8n-dq: torch, ONNX Runtime, OpenVINO and ultralytics ``predict``.

Every contender runs the same real coco-mini photos (decoded once: numpy in, so JPEG decoding is out of
every number) at imgsz 640 with rect letterboxing, batch 1, ``--threads`` threads everywhere (torch's
are reset before each call: ultralytics' first predict drops them to ``cpu_count - 1``). Rounds are
interleaved so machine drift hits all alike; medians are reported, with ratios to torch fp32 and to
ultralytics ``predict``, and each runtime's end to end over its bare ``forward`` on the same inputs
(target: <= 1.10x). ``--ap`` adds mAP50-95 on coco-mini (slower).

    VISIONKIT_WEIGHTS=../shared/data/weights VISIONKIT_DATA=../shared/data \
        python benchmarks/cpu_runtimes.py --rounds 5 --images 12 --threads 2 [--ap] [--json out.json]

Contenders that are not installed (onnxruntime, openvino) are skipped with a note. ``backend.runtime``
of each says what actually ran (e.g. OpenVINO bf16 falls back to fp32 on CPUs without bf16 units).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "false")

import numpy as np
import torch

import visionkit


def _data() -> tuple[Path, Path]:
    weights = next(
        (
            Path(d) / "yolov8n-dq.pt"
            for d in os.environ.get("VISIONKIT_WEIGHTS", "").split(os.pathsep)
            if d and (Path(d) / "yolov8n-dq.pt").is_file()
        ),
        None,
    )
    data = Path(os.environ.get("VISIONKIT_DATA", "")) / "coco-mini"
    if weights is None or not (data / "images").is_dir():
        sys.exit("needs VISIONKIT_WEIGHTS (with yolov8n-dq.pt) and VISIONKIT_DATA (with coco-mini/)")
    return weights, data


def _contenders(
    weights: Path, data: Path, threads: int, imgsz: int, calib: int, bf16: bool
) -> dict[str, Any]:
    """name -> loaded visionkit backend (or the ultralytics model)."""
    import importlib.util

    kw: dict[str, Any] = {"weights": str(weights), "imgsz": imgsz}
    ro = {"threads": threads, "calib": data / "images", "calib_images": calib}
    out: dict[str, Any] = {"torch fp32": visionkit.load("yolo", **kw)}
    if bf16:
        out["torch bf16"] = visionkit.load("yolo", precision="bf16", **kw)
    else:
        print(
            "note: this CPU has no bf16 units (emulated bf16 is several times slower): bf16 rows skipped, --bf16 adds them"
        )
    if importlib.util.find_spec("onnxruntime") and "onnxruntime" in visionkit.get_registry().runtimes:
        out["onnxruntime int8"] = visionkit.load(
            "yolo", precision="int8", runtime="onnxruntime", runtime_options=ro, **kw
        )
    else:
        print("note: onnxruntime runtime not installed; skipped")
    if importlib.util.find_spec("openvino") and "openvino" in visionkit.get_registry().runtimes:
        for p in ("fp32", "bf16", "int8") if bf16 else ("fp32", "int8"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # bf16 fallback: reported below instead
                out[f"openvino {p}"] = visionkit.load(
                    "yolo", precision=p, runtime="openvino", runtime_options=ro, **kw
                )
    else:
        print("note: openvino runtime not installed (pip install visionkit-openvino); skipped")
    from ultralytics import YOLO

    out["ultralytics predict"] = YOLO(str(weights))
    return out


def _time(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds over the images")
    ap.add_argument("--images", type=int, default=12, help="coco-mini photos per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--calib", type=int, default=32, help="coco-mini calibration images for INT8")
    ap.add_argument("--ap", action="store_true", help="also mAP50-95 on all of coco-mini (slower)")
    ap.add_argument("--json", type=Path, help="write the table here")
    ap.add_argument("--bf16", action="store_true", help="time bf16 rows even on a CPU without bf16 units")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    weights, data = _data()
    files = sorted((data / "images").glob("*.jpg"))[: args.images]
    images = [visionkit.load_image(f) for f in files]
    from visionkit.devices import cpu_has_bf16

    models = _contenders(weights, data, args.threads, args.imgsz, args.calib, args.bf16 or cpu_has_bf16())

    e2e: dict[str, list[float]] = {k: [] for k in models}
    bare: dict[str, list[float]] = {k: [] for k in models if k != "ultralytics predict"}
    inputs = {
        k: [m.preprocess([im], m.options).inputs for im in images] for k, m in models.items() if k in bare
    }
    bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]  # ultralytics reads numpy as BGR
    yolo = models["ultralytics predict"]
    for _ in range(2):  # warm-up: first calls compile, allocate, fill caches
        for k, m in models.items():
            torch.set_num_threads(args.threads)
            if k == "ultralytics predict":
                m.predict(bgr[0], imgsz=args.imgsz, verbose=False)
            else:
                m.detect(images[0])
    for _ in range(args.rounds):
        for i, im in enumerate(images):
            for k, m in models.items():
                torch.set_num_threads(args.threads)
                if k == "ultralytics predict":
                    e2e[k].append(
                        _time(lambda m=m, i=i: yolo.predict(bgr[i], imgsz=args.imgsz, verbose=False))
                    )
                    continue
                e2e[k].append(_time(lambda m=m, im=im: m.detect(im)))
                bare[k].append(_time(lambda m=m, x=inputs[k][i]: m.forward(x)))

    aps: dict[str, float | None] = {}
    if args.ap:
        from visionkit.evaluation import evaluate_coco

        for k, m in models.items():
            if k == "ultralytics predict":
                continue  # the same network as torch fp32; its own val() is another protocol
            torch.set_num_threads(args.threads)
            aps[k] = evaluate_coco(m, data / "instances.json", data / "images", progress_bar=False).bbox.ap

    med = {k: statistics.median(v) for k, v in e2e.items()}
    bmed = {k: statistics.median(v) for k, v in bare.items()}
    base, ul = med["torch fp32"], med["ultralytics predict"]
    print(
        f"\nyolov8n-dq, coco-mini ({len(images)} photos x {args.rounds} rounds), imgsz {args.imgsz} rect, "
        f"batch 1, {args.threads} threads; medians\n"
    )
    head = "| runtime | ran as | e2e ms | x torch fp32 | x ultralytics | bare forward ms | e2e / bare |"
    if args.ap:
        head += " mAP50-95 |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    rows = []
    for k in models:
        rt = getattr(models[k], "runtime", None) or {}
        ran = f"{rt.get('name', 'torch' if k.startswith('torch') else 'ultralytics')} {rt.get('precision', getattr(models[k], 'precision', 'fp32'))}"
        row = {
            "runtime": k,
            "ran_as": ran,
            "e2e_ms": round(med[k], 2),
            "x_torch_fp32": round(med[k] / base, 3),
            "x_ultralytics": round(med[k] / ul, 3),
            "bare_ms": round(bmed[k], 2) if k in bmed else None,
            "e2e_over_bare": round(med[k] / bmed[k], 3) if k in bmed else None,
            "ap": aps.get(k),
        }
        rows.append(row)
        line = (
            f"| {k} | {ran} | {row['e2e_ms']:.1f} | {row['x_torch_fp32']:.2f} | {row['x_ultralytics']:.2f} | "
            f"{row['bare_ms'] if row['bare_ms'] is not None else '—'} | "
            f"{row['e2e_over_bare'] if row['e2e_over_bare'] is not None else '—'} |"
        )
        if args.ap:
            line += f" {row['ap']:.4f} |" if row["ap"] is not None else " — |"
        print(line)
    for k, m in models.items():
        rt = getattr(m, "runtime", None)
        if rt and rt.get("name") == "openvino":
            print(
                f"{k}: inference precision {rt['inference_precision']}, threads {rt['threads']}, "
                f"streams {rt['streams']}, hint {rt['performance_hint']}, float ops {rt.get('float_ops')}"
            )
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
