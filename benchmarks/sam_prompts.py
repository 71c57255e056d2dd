"""SAM prompt benchmark: encoder vs decoder time, batched boxes, and what the embedding cache saves.

Models are randomly initialised at the REAL sizes (random weights cost the same time as trained ones):
``mobile-sam`` = MobileSAM's TinyViT (vit_t, 1024 px) and ``sam`` = vit_b (1024 px). Measured per model:

- encoder ms per image (``embed`` with the cache cleared);
- decoder ms per single point prompt and per call of 1 box vs 16 boxes, embedding cached;
- 10 point prompts on one image: cached (encoder once) vs uncached (cache_size=0, encoder every call).

``--configs`` adds the same measurements with torch bf16 (``torch-bf16``: encoder under autocast) or
the networks in ONNX Runtime (``ort-fp32``, ``ort-int8``: static INT8 encoder, dynamic INT8 decoder)
or OpenVINO (``ov-fp32``, ``ov-int8``); ``torch`` is the default. ``benchmarks/sam_runtimes.py`` prints
the per-runtime table (decoder forward vs whole call, before/after, mask agreement, memory).

Rounds are interleaved and medians reported. Prints a table and writes JSON.

    python benchmarks/sam_prompts.py [--models mobile-sam sam] [--configs torch ort-fp32 ort-int8]
                                     [--rounds 5] [--threads 2] [--out sam_prompts.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import visionkit

MODEL_TYPES = {"mobile-sam": "vit_t", "sam": "vit_b"}
CONFIGS: dict[str, dict[str, Any]] = {
    "torch": {},
    "torch-bf16": {"precision": "bf16"},
    "ort-fp32": {"precision": "fp32", "runtime": "onnxruntime"},
    "ort-int8": {"precision": "int8", "runtime": "onnxruntime"},
    "ov-fp32": {"precision": "fp32", "runtime": "openvino"},
    "ov-int8": {"precision": "int8", "runtime": "openvino"},
}


def _ms(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def bench(name: str, config: str, rounds: int, image: np.ndarray, threads: int) -> dict[str, Any]:
    extra = dict(CONFIGS[config])
    if "runtime" in extra:
        extra["runtime_options"] = {"threads": threads}
    torch.manual_seed(0)
    cached = visionkit.load(name, weights=None, model_type=MODEL_TYPES[name], cache_size=4, **extra)
    torch.manual_seed(0)  # the same random network (and so the same cached ONNX files)
    uncached = visionkit.load(name, weights=None, model_type=MODEL_TYPES[name], cache_size=0, **extra)
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    points = [(float(x), float(y)) for x, y in zip(rng.uniform(0, w, 10), rng.uniform(0, h, 10), strict=True)]
    box = np.array([[w * 0.2, h * 0.2, w * 0.6, h * 0.7]], np.float32)
    boxes16 = np.concatenate(
        [box + np.array([i * 4, i * 2, i * 4, i * 2], np.float32) for i in range(16)]
    ).clip(0, [w, h, w, h])
    times: dict[str, list[float]] = {
        k: [] for k in ("encoder", "point", "box1", "boxes16", "ten_cached", "ten_uncached")
    }
    cached.segment_prompt(image, points=points[:1])  # warm-up (allocators, first-call overheads)
    for _ in range(rounds):
        cached.clear_cache()
        times["encoder"].append(_ms(lambda: cached.embed(image)))
        times["point"].append(_ms(lambda: cached.segment_prompt(image, points=points[:1])))
        times["box1"].append(_ms(lambda: cached.segment_prompt(image, boxes=box)))
        times["boxes16"].append(_ms(lambda: cached.segment_prompt(image, boxes=boxes16)))
        cached.clear_cache()
        times["ten_cached"].append(_ms(lambda: [cached.segment_prompt(image, points=[p]) for p in points]))
        times["ten_uncached"].append(
            _ms(lambda: [uncached.segment_prompt(image, points=[p]) for p in points])
        )
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": name,
        "config": config,
        "model_type": MODEL_TYPES[name],
        "weights": "random init, real architecture",
        "median_ms": med,
        "boxes16_over_box1": med["boxes16"] / med["box1"],
        "cache_speedup_10_prompts": med["ten_uncached"] / med["ten_cached"],
        "targets": {
            "point_decoder_le_30ms": med["point"] <= 30.0,
            "boxes16_le_4x_box1": med["boxes16"] <= 4 * med["box1"],
            "cache_speedup_ge_5x": med["ten_uncached"] / med["ten_cached"] >= 5.0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["mobile-sam", "sam"], choices=sorted(MODEL_TYPES))
    parser.add_argument("--configs", nargs="+", default=["torch"], choices=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path("sam_prompts.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from visionkit.testing import make_test_image

    image = make_test_image(480, 640, seed=0)
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": args.threads},
        "image": [480, 640],
        "rounds": args.rounds,
        "results": [bench(m, c, args.rounds, image, args.threads) for m in args.models for c in args.configs],
    }
    for r in report["results"]:
        m = r["median_ms"]
        print(
            f"{r['model']:<11} ({r['model_type']}, {r['config']}): encoder {m['encoder']:8.1f} ms | point {m['point']:6.1f} ms | "
            f"1 box {m['box1']:6.1f} ms | 16 boxes {m['boxes16']:6.1f} ms ({r['boxes16_over_box1']:.2f}x) | "
            f"10 prompts cached {m['ten_cached']:8.1f} ms vs uncached {m['ten_uncached']:8.1f} ms "
            f"({r['cache_speedup_10_prompts']:.1f}x) | targets {r['targets']}"
        )
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
