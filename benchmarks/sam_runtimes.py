"""SAM / MobileSAM runtime table: cached-prompt latency, encoder time, memory and mask agreement per runtime.

Rows: torch fp32, torch bf16 (encoder under autocast), ONNX Runtime fp32 / INT8, OpenVINO fp32 / INT8
(each runtime only if installed). The model is randomly initialised at the REAL size (``vit_t`` =
MobileSAM's TinyViT at 1024 px by default): random weights cost the same time as trained ones, but the
mask-agreement column then measures numerics only (how far each runtime's masks move from torch fp32's
on the same prompts), not segmentation quality; no real SAM weights exist on this machine.

Columns (medians of interleaved rounds, every runtime loaded in this one process):

- ``click ms``: one ``segment_prompt(embedding, points=[p])`` (3 ranked masks at 480x640), embedding
  cached: the whole call (prompt parsing, decoder, mask upscaling, threshold, result);
- ``forward ms``: the decoder network alone on the same prompt (``decoder_forward``), and
  ``call / forward``: what the rest of the call costs on top;
- ``legacy ms``: the same call through the previous code path (torch: the reference decoder graph;
  every row: ``Sam.postprocess_masks`` on every mask through the 1024x1024 intermediate), so the table
  shows before / after side by side;
- ``16 boxes ms``: one call with 16 box prompts;
- ``encoder ms``: ``embed`` with the cache cleared;
- ``peak RSS MiB`` (``--rss``): each runtime alone in a fresh process (load, embed, one prompt);
- ``mask IoU``: 8 single-mask clicks + 8 boxes through each runtime's own encoder and decoder, IoU with
  torch fp32's masks (mean / min).

    python benchmarks/sam_runtimes.py [--configs torch torch-bf16 ort-fp32 ort-int8 ov-fp32 ov-int8]
                                      [--model-type vit_t] [--rounds 7] [--threads 2] [--rss]
                                      [--out sam_runtimes.json]

The first run builds the ONNX / OpenVINO files (minutes for INT8: calibration); later runs reuse them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import visionkit
from visionkit import PromptMasks, ResultMeta
from visionkit.backend import Encoded

CONFIGS: dict[str, dict[str, Any]] = {
    "torch": {},
    "torch-bf16": {"precision": "bf16"},
    "ort-fp32": {"precision": "fp32", "runtime": "onnxruntime"},
    "ort-int8": {"precision": "int8", "runtime": "onnxruntime"},
    "ov-fp32": {"precision": "fp32", "runtime": "openvino"},
    "ov-int8": {"precision": "int8", "runtime": "openvino"},
}
NEEDS = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
IMAGE_SHAPE = (480, 640)


def load(config: str, model_type: str, threads: int) -> Any:
    extra = dict(CONFIGS[config])
    if "runtime" in extra:
        extra["runtime_options"] = {"threads": threads}
    torch.manual_seed(0)  # the same random network in every row (and so the same cached exports)
    return visionkit.load("mobile-sam", weights=None, model_type=model_type, cache_size=4, **extra)


def available(config: str) -> bool:
    runtime = CONFIGS[config].get("runtime")
    return runtime is None or importlib.util.find_spec(NEEDS[runtime]) is not None


def _ms(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _prompts(backend: Any, emb: Any, **kw: Any) -> Any:
    args = {"points": None, "labels": None, "boxes": None, "mask_input": None, "multimask_output": None, **kw}
    return backend.parse_prompts(Encoded(emb, emb.original_size, cached=True), **args)


def legacy_call(backend: Any, emb: Any, **kw: Any) -> PromptMasks:
    """The previous ``segment_prompt`` tail on a cached embedding: torch's reference decoder graph (a
    runtime's own decoder otherwise), every mask upscaled by ``Sam.postprocess_masks`` (bilinear to
    1024x1024, crop, bilinear to the image), gathered best first, thresholded."""
    prompts = _prompts(backend, emb, **kw)
    inputs = backend.decoder_inputs(emb, prompts)
    with torch.inference_mode():
        if backend.runtime:
            low_res, iou = backend.decoder_forward(inputs)
        else:
            low_res, iou = backend.decoder.forward_reference(*inputs)
        keep = slice(1, None) if prompts.multimask else slice(0, 1)
        low_res, iou = low_res[:, keep], iou[:, keep]
        order = torch.argsort(iou, dim=1, descending=True, stable=True)
        up = backend.model.postprocess_masks(low_res, emb.input_size, emb.original_size)
        masks = torch.gather(up, 1, order[:, :, None, None].expand(-1, -1, *up.shape[-2:])) > 0.0
        logits = torch.gather(low_res, 1, order[..., None, None].expand(-1, -1, *low_res.shape[-2:]))
    b, k = iou.shape
    return PromptMasks(
        mask=masks.reshape(b * k, *emb.original_size).numpy(),
        score=torch.gather(iou, 1, order).reshape(-1).numpy(),
        prompt_index=np.repeat(np.arange(b, dtype=np.int64), k),
        logits=logits.reshape(b * k, *low_res.shape[-2:]).numpy(),
        metadata=ResultMeta(image_shape=emb.original_size, backend=backend.name),
    )


def agreement_prompts() -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    h, w = IMAGE_SHAPE
    out: list[dict[str, Any]] = []
    for _ in range(8):
        x, y = float(rng.uniform(60, w - 60)), float(rng.uniform(60, h - 60))
        out.append({"points": [(x, y)], "multimask_output": False})
        out.append({"boxes": [(x - 50, y - 40, x + 50, y + 40)]})
    return out


def masks_for(backend: Any, emb: Any) -> list[np.ndarray]:
    return [backend.segment_prompt(emb, **p).mask[0] for p in agreement_prompts()]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def rss_in_fresh_process(config: str, model_type: str, threads: int) -> float | None:
    cmd = [
        sys.executable,
        __file__,
        "--rss-child",
        config,
        "--model-type",
        model_type,
        "--threads",
        str(threads),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        return float(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(f"  ({config}: RSS child failed: {done.stderr.strip()[-300:]})")
        return None


def rss_child(config: str, model_type: str, threads: int) -> None:
    from visionkit.testing import make_test_image

    torch.set_num_threads(threads)
    backend = load(config, model_type, threads)
    emb = backend.embed(make_test_image(*IMAGE_SHAPE, seed=0))
    backend.segment_prompt(emb, points=[(300.0, 200.0)])
    print(peak_rss_mib())


def peak_rss_mib() -> float:
    """This process's peak RSS. Linux: ``VmHWM`` (``ru_maxrss`` would include the parent's peak, kept
    across fork + exec); elsewhere ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--model-type", default="vit_t", help="vit_t (MobileSAM, default), or tiny_vit_t to try"
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--encoder-rounds", type=int, default=2, help="encoder runs per runtime, the first embed included"
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--rss", action="store_true", help="peak RSS of each runtime alone in a fresh process"
    )
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("sam_runtimes.json"))
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.model_type, args.threads)
        return
    torch.set_num_threads(args.threads)
    from visionkit.testing import make_test_image

    image = make_test_image(*IMAGE_SHAPE, seed=0)
    configs = [c for c in args.configs if available(c)]
    if "torch" not in configs:
        configs.insert(0, "torch")  # the reference row
    skipped = sorted(set(args.configs) - set(configs))
    backends, embeddings, first_encoder = {}, {}, {}
    for c in configs:
        t0 = time.perf_counter()
        backends[c] = load(c, args.model_type, args.threads)
        t1 = time.perf_counter()
        embeddings[c] = backends[c].embed(image)
        first_encoder[c] = (time.perf_counter() - t1) * 1e3
        print(f"loaded {c} ({backends[c].precision}) in {time.perf_counter() - t0:.1f} s", flush=True)
    click = {"points": [(300.0, 200.0)]}
    h, w = IMAGE_SHAPE
    box = np.array([w * 0.2, h * 0.2, w * 0.6, h * 0.7], np.float32)
    boxes16 = np.stack([box + np.array([i * 4, i * 2, i * 4, i * 2], np.float32) for i in range(16)]).clip(
        0, [w, h, w, h]
    )
    keys = ("click", "forward", "legacy", "boxes16", "encoder")
    times: dict[str, dict[str, list[float]]] = {c: {k: [] for k in keys} for c in configs}
    for c in configs:
        times[c]["encoder"].append(first_encoder[c])  # the first embed counts as one encoder round
    for c in configs:  # warm-up: first-call allocations, runtime caches
        b, emb = backends[c], embeddings[c]
        b.segment_prompt(emb, **click)
        legacy_call(b, emb, **click)
    for r in range(args.rounds):
        for c in configs:
            b, emb = backends[c], embeddings[c]
            inputs = b.decoder_inputs(emb, _prompts(b, emb, **click))
            t = times[c]
            t["click"].append(_ms(lambda b=b, emb=emb: b.segment_prompt(emb, **click)))
            t["forward"].append(_ms(lambda b=b, inputs=inputs: b.decoder_forward(inputs)))
            t["legacy"].append(_ms(lambda b=b, emb=emb: legacy_call(b, emb, **click)))
            t["boxes16"].append(_ms(lambda b=b, emb=emb: b.segment_prompt(emb, boxes=boxes16)))
            if r < args.encoder_rounds - 1:
                b.clear_cache()
                t["encoder"].append(_ms(lambda b=b: b.embed(image)))
    reference = masks_for(backends["torch"], embeddings["torch"])
    rows = []
    for c in configs:
        med = {k: statistics.median(v) for k, v in times[c].items()}
        ious = [iou(a, m) for a, m in zip(reference, masks_for(backends[c], embeddings[c]), strict=True)]
        rows.append(
            {
                "config": c,
                "precision": backends[c].precision,
                "runtime": (backends[c].runtime or {}).get("name", "torch"),
                "median_ms": med,
                "call_over_forward": med["click"] / med["forward"],
                "mask_iou_mean": float(np.mean(ious)),
                "mask_iou_min": float(np.min(ious)),
                "peak_rss_mib": rss_in_fresh_process(c, args.model_type, args.threads) if args.rss else None,
            }
        )
    ref = rows[0]["median_ms"]
    print(
        f"\nMobileSAM {args.model_type} (RANDOM weights, real size), {h}x{w} image, {args.threads} threads, "
        f"{args.rounds} interleaved rounds, medians; load {os.getloadavg()[0]:.1f}; ratios to torch fp32 in ()\n"
    )
    print(
        "| runtime | click ms (cached) | decoder forward ms | call / forward | legacy call ms | 16 boxes ms "
        "| encoder ms | peak RSS MiB | mask IoU vs torch fp32 (mean / min) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        m = row["median_ms"]
        rss = f"{row['peak_rss_mib']:.0f}" if row["peak_rss_mib"] else "-"
        print(
            f"| {row['config']} | {m['click']:.1f} ({m['click'] / ref['click']:.2f}) | {m['forward']:.1f} "
            f"({m['forward'] / ref['forward']:.2f}) | {row['call_over_forward']:.2f} | {m['legacy']:.1f} "
            f"({m['click'] / m['legacy']:.2f}x of it) | {m['boxes16']:.0f} ({m['boxes16'] / ref['boxes16']:.2f}) "
            f"| {m['encoder']:.0f} ({m['encoder'] / ref['encoder']:.2f}) | {rss} "
            f"| {row['mask_iou_mean']:.4f} / {row['mask_iou_min']:.4f} |"
        )
    if skipped:
        print(f"\nnot installed, skipped: {', '.join(skipped)}")
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
        "load_average": os.getloadavg(),
        "model_type": args.model_type,
        "weights": "random init, real architecture: mask IoU measures numerics, not quality",
        "image": list(IMAGE_SHAPE),
        "rounds": args.rounds,
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
