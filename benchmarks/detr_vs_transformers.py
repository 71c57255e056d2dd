"""visionkit ``detr`` vs ``transformers.pipeline("object-detection")`` vs bare processor + model.

Same model object, same images, same torch threads; rounds interleave the three so machine noise hits all
alike. Reports median latency per image (batch 1), the ratios the issue targets (visionkit <= 0.9x the
pipeline, <= 1.10x bare), and batch-8 throughput.

    python benchmarks/detr_vs_transformers.py                     # tiny random DETR (offline)
    python benchmarks/detr_vs_transformers.py --full --rounds 5 --no-batch   # random DETR-R50, full size
    python benchmarks/detr_vs_transformers.py --full --no-batch --threads 1 --clock cpu   # busy machine
    python benchmarks/detr_vs_transformers.py --weights DIR|HUB   # a real checkpoint

The pipeline and the bare runner get their own copy of the weights in a plain transformers model:
visionkit folds DETR's frozen BatchNorms into its convolutions at load (``_fold``), which the others
do not; ``--no-fold`` measures visionkit without it (the "before").
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

import visionkit

#: DETR-R50 as ``facebook/detr-resnet-50`` builds it, with transformers' own ResNet-50 (no timm, random).
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


#: What ``_timed`` reads: wall time, or this process's CPU time (``--clock cpu``: on a shared, busy
#: machine wall time counts the minutes other jobs hold the cores; CPU time does not).
_CLOCK: list[Callable[[], float]] = [time.perf_counter]


def _timed(fn: Callable[[], Any]) -> float:
    t0 = _CLOCK[0]()
    fn()
    return _CLOCK[0]() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--weights", default=None, help="checkpoint dir or hub id (default: tiny random DETR)"
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=480, help="test image height (width = 4/3 of it)")
    parser.add_argument(
        "--full", action="store_true", help="random DETR-R50 at full size (800/1333), not the tiny one"
    )
    parser.add_argument("--no-batch", action="store_true", help="skip the batch-8 throughput rounds")
    parser.add_argument(
        "--no-fold", action="store_true", help="visionkit without its BatchNorm folding (the before)"
    )
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="what to time")
    args = parser.parse_args()
    if args.clock == "cpu":
        _CLOCK[0] = time.process_time
    load0 = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.no_fold:
        import visionkit_transformers._backend as hf_backend

        hf_backend.fold_frozen_batchnorm = lambda model: 0  # type: ignore[assignment]
    options: dict[str, Any] = {}
    if args.full and args.weights is None:
        options = {"config": FULL_DETR_R50, "shortest_edge": 800, "longest_edge": 1333}
    det = visionkit.load("detr", weights=args.weights, threshold=0.5, **options)
    proc = det.processor
    if options:  # the tiny model's processor resizes to 96-160 px: the others get DETR's own 800/1333
        from transformers import DetrImageProcessor

        proc = DetrImageProcessor(size={"shortest_edge": 800, "longest_edge": 1333})
    # the same weights in a plain transformers model (visionkit's own has its BatchNorms folded)
    model = type(det.model)(det.model.config).eval()
    model.load_state_dict(det.model.state_dict())
    from transformers import pipeline

    pipe = pipeline("object-detection", model=model, image_processor=proc, device=-1)
    rng = np.random.default_rng(0)
    h, w = args.size, args.size * 4 // 3
    images = [
        Image.fromarray(rng.integers(0, 255, (h - 8 * i, w - 12 * i, 3), dtype=np.uint8)) for i in range(8)
    ]

    def bare(batch: list[Image.Image]) -> Any:
        with torch.inference_mode():
            out = model(**proc(images=batch, return_tensors="pt"))
        return proc.post_process_object_detection(
            out, threshold=0.5, target_sizes=[im.size[::-1] for im in batch]
        )

    runners: dict[str, Callable[[list[Image.Image]], Any]] = {
        "visionkit": lambda b: det.detect(b),
        "pipeline": lambda b: pipe(b, threshold=0.5) if len(b) > 1 else pipe(b[0], threshold=0.5),
        "bare": bare,
    }
    for fn in runners.values():  # warm-up
        fn(images[:1])
        if not args.no_batch:
            fn(images)
    single: dict[str, list[float]] = {k: [] for k in runners}
    batch8: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(args.rounds):
        order = list(runners)[r % 3 :] + list(runners)[: r % 3]  # rotate who goes first
        for name in order:
            one = images[r % 8 : r % 8 + 1]
            single[name].append(_timed(lambda n=name, one=one: runners[n](one)))
            if not args.no_batch:
                batch8[name].append(_timed(lambda n=name: runners[n](images)))
    med = {k: statistics.median(v) * 1e3 for k, v in single.items()}
    thr = {k: 8 / statistics.median(v) if v else float("nan") for k, v in batch8.items()}
    print(
        f"model: {det.source}  params: {sum(p.numel() for p in model.parameters()):,}  threads: {args.threads}"
        f"  input: {tuple(proc(images=images[:1], return_tensors='pt')['pixel_values'].shape)}"
        f" (visionkit {tuple(det.preprocess([np.asarray(images[0])], det.options).inputs[0].shape)})"
        f"  fold: {not args.no_fold}  load average: {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    )
    print(f"clock: {args.clock}")
    print(f"{'runner':<10} {'batch-1 median ms':>18} {'batch-8 img/s':>14}")
    for k in runners:
        print(f"{k:<10} {med[k]:>18.2f} {thr[k]:>14.2f}")
    print(f"visionkit / pipeline (batch 1): {med['visionkit'] / med['pipeline']:.3f}  (target <= 0.90)")
    print(f"visionkit / bare     (batch 1): {med['visionkit'] / med['bare']:.3f}  (target <= 1.10)")
    print(
        f"batch-8 throughput visionkit / pipeline: {thr['visionkit'] / thr['pipeline']:.2f}x, "
        f"/ bare: {thr['visionkit'] / thr['bare']:.2f}x"
    )


if __name__ == "__main__":
    main()
