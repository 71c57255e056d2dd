"""visionkit vs the library each backend wraps, on one accelerator: YOLO, DETR, SAM, torchvision.

One command on a lent GPU, under 5 minutes on an H200 (``--suite`` picks sections; default all)::

    VISIONKIT_WEIGHTS=../shared/data/weights VISIONKIT_DATA=../shared/data \\
        python benchmarks/gpu_throughput.py --json gpu_throughput.json

and a smoke test on CPU (small; tiny random DETR and SAM; ``--pad-batch on`` takes YOLO's GPU path)::

    python benchmarks/gpu_throughput.py --device cpu --images 4 --batches 1 4 --runs 2 --ap-images 8

Sections (each one skips with a note when its library is missing; an error in one is recorded and the
others still run):

- ``yolo``: visionkit ``yolo`` vs ``ultralytics.YOLO.predict``. Both sides get the same decoded coco-mini
  images (numpy arrays, so JPEG decoding is out of every number), the same weights (``yolov8n-dq.pt``,
  or a random ``yolov8n.yaml`` without ``VISIONKIT_WEIGHTS``) and the same device. Batch 1 runs the
  images one call at a time; batch B hands both sides lists of B images (one ultralytics batch, one
  visionkit call with ``batch_size=B``). Each visionkit row also reports its stage split
  (``last_timing``). ``--ap-images`` evaluates bbox AP with ``visionkit.evaluate`` on the device and on
  CPU (target: within 0.001). Needs ultralytics (and pycocotools for AP).
- ``detr``: visionkit ``detr`` vs ``transformers.pipeline("object-detection")`` on one checkpoint
  (random DETR-R50 at 800/1333 saved to a temporary folder: ``--detr-model full``; ``tiny`` on CPU by
  default), batch 1 and batch B (``pipeline(..., batch_size=B)``; the pipeline stacks only images that
  process to one size, so both sides get images of one shape). Threshold 0: every query is kept, so
  post-processing is timed at its worst. Parity: boxes of the top detections, visionkit on the device
  vs on CPU (same class, max px difference).
- ``sam``: visionkit ``sam`` (random ``vit_b``; ``--sam-model``) vs ``segment_anything.SamPredictor``
  on the same network and image: one cached point prompt and one box prompt (embedding computed once)
  vs ``SamPredictor.predict`` after ``set_image``, and the encoder (``embed`` vs ``set_image``); mask
  IoU visionkit vs SamPredictor and device vs CPU. Needs segment-anything (vit_t also ultralytics).
- ``torchvision``: ``--tv-models`` (random ``resnet50`` and ``fasterrcnn-mobilenet``) at fp32 and
  ``precision="bf16"`` (autocast, float32 tails): img/s, and bf16's agreement with fp32 on the same
  weights (classifier: top-1 agreement and top-5 overlap; detector: IoU of the fp32 top boxes with the
  best same-class bf16 box). Shows the accelerator's bf16 path ran.

Contenders are interleaved per round (who goes first rotates) and medians reported; ratios are
visionkit over the reference (img/s: > 1 visionkit faster; ms: < 1 visionkit faster). Outside YOLO,
each timing loop stops after the round that passes ``--budget-s`` (at least one round), so the whole
run fits a lease. Every section reports the peak torch allocator memory on CUDA.

Prints tables and writes JSON to ``--json`` (default ``$OUT/gpu_throughput.json`` when ``OUT`` is set).
Issue #20 targets: YOLO batch 32 >= 1.2x ultralytics img/s, batch 1 latency <= 0.9x (img/s >= 1.11x);
SAM cached prompt <= 1.0x ``SamPredictor``; AP on cuda within 0.001 of CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "false")
os.environ.setdefault("VISIONKIT_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import torch

import visionkit

SUITES = ("yolo", "detr", "sam", "torchvision")

#: DETR-R50 as ``facebook/detr-resnet-50`` builds it, with transformers' own ResNet-50 (no timm, random);
#: the same configuration as ``benchmarks/detr_vs_transformers.py --full``.
FULL_DETR_R50: dict[str, Any] = {
    "backbone_config": {"model_type": "resnet", "out_features": ["stage4"]},
    "d_model": 256,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_ffn_dim": 2048,
    "decoder_ffn_dim": 2048,
    "encoder_attention_heads": 8,
    "decoder_attention_heads": 8,
    "num_queries": 100,
}

#: What to carry to a machine that lacks a section's library (wheels, see the device notes).
CARRY = {
    "ultralytics": "ultralytics + ultralytics-thop wheels",
    "pycocotools": "a pycocotools wheel (cp312 manylinux)",
    "segment_anything": "the segment-anything wheel (pure Python)",
    "transformers": "transformers (+ tokenizers, safetensors, huggingface-hub) wheels",
    "torchvision": "a torchvision wheel matching torch",
}


class Skip(Exception):
    """A section cannot run here (a library is missing): a note in the report, not an error."""


def _need(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise Skip(f"{', '.join(missing)} not installed; carry {'; '.join(CARRY.get(m, m) for m in missing)}")


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
    if not files and importlib.util.find_spec("ultralytics") is not None:
        from ultralytics.utils import ASSETS

        files = [ASSETS / "bus.jpg", ASSETS / "zidane.jpg"]
    ims = [visionkit.load_image(f) for f in files] or _synthetic()
    return [ims[i % len(ims)] for i in range(n)]


def _synthetic() -> list[np.ndarray]:
    """Two synthetic photos-sized images of different shapes (no coco-mini, no ultralytics assets)."""
    from visionkit.testing import make_test_image

    return [make_test_image(480, 640, seed=0), make_test_image(360, 640, seed=1)]


def _same_shape_images(n: int) -> list[np.ndarray]:
    """``n`` images of one shape: coco-mini's most common one, else synthetic 480x640.

    transformers' pipeline batches (``batch_size > 1``) only stack images that process to one size, so
    the DETR rows use these for both sides.
    """
    ims = _images(max(n, 32)) if _coco() else []
    if ims:
        common = Counter(im.shape for im in ims).most_common(1)[0][0]
        ims = [im for im in ims if im.shape == common]
    if not ims:
        from visionkit.testing import make_test_image

        ims = [make_test_image(480, 640, seed=i) for i in range(4)]
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


# -- shared by the detr, sam and torchvision sections ---------------------------------------------------
def _interleaved(
    runners: dict[str, Callable[[], Any]], args: argparse.Namespace, threads: int
) -> tuple[dict[str, float], int]:
    """Median seconds per call of each runner over interleaved rounds, and the rounds run.

    Each runner is called once first (warm-up: kernels, cudnn autotune, caches). Then up to ``args.runs``
    rounds, who goes first rotating; the loop stops after the round that passes ``args.budget_s``.
    """
    for run in runners.values():
        run()
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    t0 = time.perf_counter()
    for r in range(args.runs):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            torch.set_num_threads(threads)  # a library may change it on its first call
            _sync(args.device)
            t = time.perf_counter()
            runners[name]()
            _sync(args.device)
            times[name].append(time.perf_counter() - t)
        if time.perf_counter() - t0 > args.budget_s:
            break
    return {n: statistics.median(ts) for n, ts in times.items()}, len(times[names[0]])


def _vk_runner(fn: Callable[..., Any], ims: list[np.ndarray], b: int) -> Callable[[], Any]:
    """A visionkit runner: batch 1 calls ``fn(image)`` image by image, else ``fn(ims, batch_size=b)``."""
    if b == 1:
        return lambda: [fn(im) for im in ims]
    return lambda: fn(ims, batch_size=b)


def _box_parity(a: Any, b: Any, top: int) -> dict[str, Any]:
    """``a``'s ``top`` most confident boxes against the closest same-class box of ``b`` (max px, conf).

    Matching by position rather than by rank: random weights give near-tied scores whose order may
    differ between devices while the boxes agree.
    """
    xa, xb = np.asarray(a.xyxy, np.float64), np.asarray(b.xyxy, np.float64)
    ca, cb = np.asarray(a.class_id), np.asarray(b.class_id)
    sa, sb = np.asarray(a.confidence, np.float64), np.asarray(b.confidence, np.float64)
    out: dict[str, Any] = {"count": [len(xa), len(xb)]}
    if len(xa) == 0:
        return out | {"max_px": 0.0, "max_conf": 0.0}
    px, conf = [], []
    for i in np.argsort(-sa, kind="stable")[:top]:
        same = np.flatnonzero(cb == ca[i])
        if len(same) == 0:
            px.append(float("inf"))
            continue
        d = np.abs(xb[same] - xa[i]).max(axis=1)
        j = same[int(d.argmin())]
        px.append(float(d.min()))
        conf.append(abs(float(sb[j] - sa[i])))
    return out | {"max_px": max(px), "max_conf": max(conf, default=float("inf"))}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float((a & b).sum() / max(int((a | b).sum()), 1))


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box ``a`` (4,) with boxes ``b`` (n, 4), xyxy."""
    lt, rb = np.maximum(a[:2], b[:, :2]), np.minimum(a[2:], b[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda x: np.prod(np.clip(x[..., 2:] - x[..., :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def _ratio_rows(title: str, rows: dict[str, dict[str, float]], ratios: dict[str, float]) -> None:
    print(f"\n{title}")
    for name, r in rows.items():
        print(f"  {name:<28}{r['img_per_s']:>9.1f} img/s {r['ms_per_image']:>9.2f} ms/image")
    for name, v in ratios.items():
        print(f"  {name:<40} {v:.2f}x")


# -- detr ----------------------------------------------------------------------------------------------
def _detr(args: argparse.Namespace, rep: dict[str, Any], tmp: Path, threads: int) -> None:
    _need("transformers")
    from PIL import Image
    from transformers import DetrImageProcessor, pipeline
    from visionkit_transformers._tiny import tiny_model

    full = args.detr_model == "full"
    torch.manual_seed(0)
    model, processor = tiny_model("detr", FULL_DETR_R50 if full else None)
    if full:  # DETR-R50's own processor sizes (the tiny one resizes to 96-160 px)
        processor = DetrImageProcessor(size={"shortest_edge": 800, "longest_edge": 1333})
    ckpt = tmp / "detr"
    model.save_pretrained(ckpt)  # one checkpoint that visionkit and the pipeline both load
    processor.save_pretrained(ckpt)
    del model
    thr = 0.0
    vk = visionkit.load("detr", weights=ckpt, device=args.device, threshold=thr)
    pipe = pipeline("object-detection", model=str(ckpt), device=args.device)
    images = _same_shape_images(args.images)
    pils = [Image.fromarray(im) for im in images]  # the pipeline's input type, converted outside the clock
    rep |= {
        "model": "random DETR-R50, 800/1333" if full else "tiny random DETR",
        "params": sum(p.numel() for p in vk.model.parameters()),
        "images": f"{len(images)} of shape {images[0].shape}",
        "threshold": thr,
        "batches": {},
    }
    print(f"\n[detr] {rep['model']}, {rep['params']:,} params, {rep['images']}")
    for b in args.batches:
        runners = {
            "visionkit": _vk_runner(vk.detect, images, b),
            "pipeline": (
                (lambda: [pipe(p, threshold=thr) for p in pils])
                if b == 1
                else (lambda b=b: pipe(pils, threshold=thr, batch_size=b))
            ),
        }
        med, rounds = _interleaved(runners, args, threads)
        rows = {
            k: {"img_per_s": len(images) / v, "ms_per_image": v * 1e3 / len(images)} for k, v in med.items()
        }
        ratio = rows["visionkit"]["img_per_s"] / rows["pipeline"]["img_per_s"]
        rep["batches"][str(b)] = rows | {"ratio_img_per_s": ratio, "rounds": rounds}
        _ratio_rows(f"[detr] batch {b} (median of {rounds})", rows, {"visionkit/pipeline img/s": ratio})
    # parity: the same checkpoint on CPU, top detections matched by class and position
    cpu = visionkit.load("detr", weights=ckpt, device="cpu", threshold=thr)
    rows = [
        _box_parity(cpu.detect(im), vk.detect(im), args.parity_top) for im in images[: args.parity_images]
    ]
    rep["parity_vs_cpu"] = {
        "images": len(rows),
        "top": args.parity_top,
        "same_counts": all(r["count"][0] == r["count"][1] for r in rows),
        "max_px": max(r["max_px"] for r in rows),
        "max_conf": max(r["max_conf"] for r in rows),
    }
    p = rep["parity_vs_cpu"]
    print(
        f"[detr] {args.device} vs cpu, top {p['top']} boxes of {p['images']} images: max {p['max_px']:.3f} px, "
        f"max conf {p['max_conf']:.4f}, same counts {p['same_counts']}"
    )


# -- sam -----------------------------------------------------------------------------------------------
def _sam(args: argparse.Namespace, rep: dict[str, Any], tmp: Path, threads: int) -> None:
    _need("segment_anything", *(["ultralytics"] if args.sam_model == "vit_t" else []))
    from segment_anything import SamPredictor

    torch.manual_seed(0)
    cpu = visionkit.load("sam", weights=None, model_type=args.sam_model, device="cpu")
    path = tmp / f"sam_{args.sam_model}.pth"
    torch.save(cpu.model.state_dict(), path)  # one network for every contender
    vk = visionkit.load("sam", weights=path, device=args.device)
    pred = SamPredictor(vk.model)  # the very module visionkit runs: same weights, same device
    image = _images(1)[0]
    h, w = image.shape[:2]
    point = (w / 2, h / 2)
    box = [w * 0.2, h * 0.2, w * 0.7, h * 0.8]
    pred.set_image(image)
    vk.embed(image)

    def encoder_vk() -> Any:
        vk.clear_cache()
        return vk.embed(image)

    runners: dict[str, Callable[[], Any]] = {
        "point visionkit (cached)": lambda: vk.segment_prompt(image, points=[point]),
        "point SamPredictor.predict": lambda: pred.predict(
            point_coords=np.array([point]), point_labels=np.array([1]), multimask_output=True
        ),
        "box visionkit (cached)": lambda: vk.segment_prompt(image, boxes=[box]),
        "box SamPredictor.predict": lambda: pred.predict(box=np.array(box), multimask_output=False),
        "encoder visionkit embed": encoder_vk,
        "encoder SamPredictor.set_image": lambda: pred.set_image(image),
    }
    med, rounds = _interleaved(runners, args, threads)
    ms = {k: v * 1e3 for k, v in med.items()}
    ratios = {
        "point: visionkit/SamPredictor ms": ms["point visionkit (cached)"] / ms["point SamPredictor.predict"],
        "box: visionkit/SamPredictor ms": ms["box visionkit (cached)"] / ms["box SamPredictor.predict"],
        "encoder: visionkit/SamPredictor ms": ms["encoder visionkit embed"]
        / ms["encoder SamPredictor.set_image"],
    }
    vk_box = np.asarray(vk.segment_prompt(image, boxes=[box]).mask)[0]
    ref_box = pred.predict(box=np.array(box), multimask_output=False)[0][0]
    cpu_box = np.asarray(cpu.segment_prompt(image, boxes=[box]).mask)[0]
    rep |= {
        "model": f"random {args.sam_model}",
        "image": list(image.shape),
        "median_ms": ms,
        "rounds": rounds,
        "ratios": ratios,
        "box_mask_iou_vs_SamPredictor": _iou(vk_box, ref_box),
        "box_mask_iou_vs_cpu": _iou(vk_box, cpu_box),
    }
    print(f"\n[sam] random {args.sam_model}, image {image.shape}, median of {rounds}")
    for k, v in ms.items():
        print(f"  {k:<34}{v:>9.2f} ms")
    for k, v in ratios.items():
        print(f"  {k:<40} {v:.2f}x" + ("  (target <= 1.0)" if k.startswith("point") else ""))
    print(
        f"  box mask IoU: visionkit vs SamPredictor {rep['box_mask_iou_vs_SamPredictor']:.4f}, "
        f"{args.device} vs cpu {rep['box_mask_iou_vs_cpu']:.4f}"
    )


# -- torchvision ---------------------------------------------------------------------------------------
def _agreement(verb: str, fp32: list[Any], bf16: list[Any], top: int) -> dict[str, Any]:
    """How far bf16 results are from fp32 ones on the same images."""
    if verb == "classify":
        top1 = [int(a.class_id[0] == b.class_id[0]) for a, b in zip(fp32, bf16, strict=True)]
        top5 = [len(set(a.class_id[:5]) & set(b.class_id[:5])) / 5 for a, b in zip(fp32, bf16, strict=True)]
        return {"top1_agree": float(np.mean(top1)), "top5_overlap": float(np.mean(top5))}
    ious = []
    for a, b in zip(fp32, bf16, strict=True):
        xa, xb = np.asarray(a.xyxy, np.float64), np.asarray(b.xyxy, np.float64)
        ca, cb = np.asarray(a.class_id), np.asarray(b.class_id)
        for i in np.argsort(-np.asarray(a.confidence), kind="stable")[:top]:
            same = cb == ca[i]
            ious.append(float(_box_iou(xa[i], xb[same]).max()) if same.any() else 0.0)
    if not ious:
        return {"boxes": 0, "note": "no fp32 detections above the threshold (random weights)"}
    return {
        "boxes": len(ious),
        "median_iou": float(np.median(ious)),
        "matched_iou_ge_0.9": float(np.mean(np.asarray(ious) >= 0.9)),
        # a random RPN scores its anchors near-equally: bf16 rounding reorders them, other proposals
        # survive and boxes move; read this as "bf16 ran", the classifier rows for agreement
        "note": "random weights: near-tied proposals, low IoU expected",
    }


def _tv_model(
    name: str, args: argparse.Namespace, images: list[np.ndarray], tmp: Path, threads: int
) -> dict[str, Any]:
    """One torchvision backend at fp32 and bf16: img/s per batch size, bf16 agreement with fp32."""
    detector = "rcnn" in name or name in ("retinanet", "ssdlite")
    verb = "detect" if detector else "classify"
    # random weights put every class near 1/91: a low threshold keeps boxes to compare
    opts: dict[str, Any] = {"score_threshold": args.tv_score_threshold} if detector else {}
    torch.manual_seed(0)
    fp32 = visionkit.load(name, weights=None, device=args.device, **opts)
    path = tmp / f"{name}.pth"
    torch.save(fp32.model.state_dict(), path)  # bf16 gets the very same weights
    bf16 = visionkit.load(name, weights=str(path), device=args.device, precision="bf16", **opts)
    out: dict[str, Any] = {"verb": verb, "float32_tail": list(bf16.float32_tail), "batches": {}}
    print(f"\n[torchvision] random {name} ({verb}), bf16 float32 tail: {', '.join(bf16.float32_tail)}")
    for b in args.batches:
        runners = {"fp32": _vk_runner(getattr(fp32, verb), images, b)}
        runners["bf16"] = _vk_runner(getattr(bf16, verb), images, b)
        med, rounds = _interleaved(runners, args, threads)
        rows = {
            k: {"img_per_s": len(images) / v, "ms_per_image": v * 1e3 / len(images)} for k, v in med.items()
        }
        ratio = rows["bf16"]["img_per_s"] / rows["fp32"]["img_per_s"]
        out["batches"][str(b)] = rows | {"bf16_over_fp32_img_per_s": ratio, "rounds": rounds}
        _ratio_rows(f"[torchvision] {name} batch {b} (median of {rounds})", rows, {"bf16/fp32 img/s": ratio})
    n = args.parity_images
    out["bf16_vs_fp32"] = _agreement(
        verb,
        getattr(fp32, verb)(images[:n], batch_size=n),
        getattr(bf16, verb)(images[:n], batch_size=n),
        args.parity_top,
    )
    print(f"[torchvision] {name} bf16 vs fp32 on {n} images: {out['bf16_vs_fp32']}")
    return out


def _torchvision(args: argparse.Namespace, rep: dict[str, Any], tmp: Path, threads: int) -> None:
    _need("torchvision")
    images = _images(args.images)
    rep |= {"images": f"{len(images)} ({len({im.shape for im in images})} distinct shapes)", "models": {}}
    for name in args.tv_models:
        try:
            rep["models"][name] = _tv_model(name, args, images, tmp, threads)
        except Exception as exc:  # the next model still runs
            rep["models"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"\n[torchvision] {name} ERROR {rep['models'][name]['error']}")


# -- driver --------------------------------------------------------------------------------------------
def _yolo(args: argparse.Namespace, rep: dict[str, Any], tmp: Path, threads: int) -> None:
    _need("ultralytics")
    rep |= {"weights": _weights(tmp), "batches": {}}
    print(f"\n[yolo] weights={rep['weights']}")
    _throughput(args, rep["weights"], rep)
    if importlib.util.find_spec("pycocotools") is None and args.ap_images:
        print(f"\nAP parity skipped: pycocotools not installed; carry {CARRY['pycocotools']}")
        rep["ap"] = {"skipped": "pycocotools not installed"}
        return
    _ap(args, rep["weights"], rep)


SECTIONS: dict[str, Callable[[argparse.Namespace, dict[str, Any], Path, int], None]] = {
    "yolo": _yolo,
    "detr": _detr,
    "sam": _sam,
    "torchvision": _torchvision,
}


def _run_section(name: str, args: argparse.Namespace, report: dict[str, Any], tmp: Path) -> None:
    """Run one section; a missing library is a note, any other error is recorded and the run goes on."""
    rep: dict[str, Any] = {}
    report[name] = rep
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    threads = report["threads"]
    t = time.perf_counter()
    try:
        SECTIONS[name](args, rep, tmp, threads)
    except Skip as exc:
        rep["skipped"] = str(exc)
        print(f"\n[{name}] skipped: {exc}")
    except Exception as exc:  # one broken section must not cost the lease the others
        rep["error"] = f"{type(exc).__name__}: {exc}"
        rep["trace"] = traceback.format_exc()[-2000:]
        print(f"\n[{name}] ERROR {rep['error']}\n{rep['trace']}")
    finally:
        torch.set_num_threads(threads)
    if cuda and "skipped" not in rep:
        rep["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
        print(f"[{name}] peak torch allocator memory {rep['peak_device_mib']:.0f} MiB")
    rep["seconds"] = time.perf_counter() - t
    print(f"[{name}] {rep['seconds']:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--suite", nargs="+", choices=SUITES, default=list(SUITES), help="sections to run (default: all)"
    )
    ap.add_argument("--images", type=int, help="images per timed pass (default 32; 8 on CPU)")
    ap.add_argument("--batches", type=int, nargs="+", help="batch sizes (default 1 32; 1 8 on CPU)")
    ap.add_argument("--imgsz", type=int, default=640, help="YOLO input size")
    ap.add_argument(
        "--runs", type=int, help="timed passes per contender and batch size (default 10; 3 on CPU)"
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=20.0,
        help="detr/sam/torchvision: stop a timing loop after the round that passes this many seconds",
    )
    ap.add_argument(
        "--fp16", action="store_true", help="YOLO: also compare fp16 (visionkit) with half=True (ultralytics)"
    )
    ap.add_argument(
        "--pad-batch",
        type=lambda v: {"auto": None, "on": True, "off": False}[v],
        default=None,
        help="YOLO: auto (the backend's default: padded on cuda/mps), on, or off",
    )
    ap.add_argument(
        "--ap-images",
        type=int,
        help="YOLO: coco-mini images for AP parity, device vs CPU (default 100; 0 on CPU: skip)",
    )
    ap.add_argument(
        "--detr-model",
        choices=("full", "tiny"),
        help="random DETR-R50 at 800/1333 (default) or the tiny random DETR (default on CPU)",
    )
    ap.add_argument(
        "--sam-model",
        choices=("vit_b", "vit_t", "tiny"),
        help="random SAM encoder: vit_b (default), vit_t (MobileSAM: needs ultralytics), tiny (default on CPU)",
    )
    ap.add_argument(
        "--tv-models",
        nargs="+",
        help="torchvision backends timed at fp32 and bf16, random weights (default resnet50 "
        "fasterrcnn-mobilenet; resnet50 on CPU, where bf16 without AMX is slow)",
    )
    ap.add_argument(
        "--tv-score-threshold",
        type=float,
        default=0.01,
        help="torchvision detectors' score_threshold (random weights score every class near 1/91)",
    )
    ap.add_argument("--parity-images", type=int, default=4, help="images for device/CPU and bf16 parity")
    ap.add_argument("--parity-top", type=int, default=10, help="top detections compared per image")
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
    args.detr_model = args.detr_model or ("tiny" if cpu else "full")
    args.sam_model = args.sam_model or ("tiny" if cpu else "vit_b")
    args.tv_models = args.tv_models or (["resnet50"] if cpu else ["resnet50", "fasterrcnn-mobilenet"])
    args.parity_images = min(args.parity_images, args.images)

    report: dict[str, Any] = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "suite": args.suite,
    }
    print(
        f"device={args.device} ({report['device_name'] or 'cpu'}) torch={torch.__version__} "
        f"threads={report['threads']} suite={' '.join(args.suite)}"
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.suite:
            _run_section(name, args, report, Path(tmp))
    report["seconds"] = time.perf_counter() - t0
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.json} ({report['seconds']:.0f} s)")
    for name in args.suite:
        status = str(report[name].get("skipped") or report[name].get("error") or "ran")[:160]
        print(f"  {name:<12} {report[name]['seconds']:>6.0f} s  {status}")


if __name__ == "__main__":
    main()
