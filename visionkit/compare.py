"""The on-device decision in one call: accuracy vs latency vs memory for several backends/precisions.

::

    report = visionkit.compare.compare(["yolo", "yolo:int8", "detr"], coco="instances.json", images="val/",
                                       plot="tradeoff.png")
    print(report.table())

Each spec is ``name[:precision]`` (``yolo``, ``yolo:int8``); with ``imgsz=[320, 640]`` every spec is run at
every size. For each combination the backend is evaluated on the COCO dataset (:func:`visionkit.evaluate`
rules: pycocotools, score threshold 0.001, 100 detections/image) and benchmarked on a few of the
dataset's images (:func:`visionkit.benchmark` rules: warm-up discarded, fresh subprocess per
configuration for peak memory). The table gives AP / AP50 / AP75, latency, peak memory, model size and
the change against the first entry, e.g. ``-0.8 AP, 2.6x faster, 0.30x memory``. ``plot=`` writes a
latency-vs-AP scatter (matplotlib, imported only then).

Every precision goes through the same table: ``["yolo", "yolo:bf16", "yolo:int8"]`` on CPU, or
``["yolo", "yolo:fp16", "yolo:bf16"]`` with ``device="cuda"``, where the rows also carry the GPU's peak
allocator memory (``device_peak_mb``) and the delta compares it (``0.55x device memory``). A precision
the backend cannot run there (fp16 on CPU) is an error row, not a silent fp32 one; a backend that
reports running another precision than asked gets a note.

``name:auto`` is ``precision="auto"`` (:mod:`visionkit.tune`): the row is whatever recipe the cached
decision for this machine picks, and the table names it (``yolo:auto → openvino:int8``) with a line
under it saying what was picked and why. With no decision cached yet for those weights and options,
compare measures it first, once, on its own images (real AP with its annotations; ``runs`` per round,
at most 5, three interleaved rounds), each candidate in a process of its own unless ``isolate=False``
(the table of that measurement goes to stderr), and caches it as ``visionkit tune`` does.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from visionkit._tools import SCHEMA_VERSION
from visionkit.bench import (
    IMGSZ_OPTIONS,
    BenchResult,
    Environment,
    benchmark,
    environment,
    load_sized_config,
    merge_rounds,
    physical_cores,
)
from visionkit.errors import BackendUnavailableError, InvalidOptionError
from visionkit.evaluation import (
    COCO_MAX_DETS,
    COCO_SCORE_THRESHOLD,
    DetectionReport,
    evaluate_coco,
    load_coco,
)
from visionkit.loading import DEFAULT, LoadRecipe, registry_with
from visionkit.registry import Registry, get_registry, resolve_options
from visionkit.tune import AUTO, cached, tune

__all__ = ["CompareEntry", "CompareReport", "compare", "delta_text", "parse_spec", "plot_tradeoff"]

_PRECISION = re.compile(r"^((fp|bf|int|uint)\d+|auto)$")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"yolo:int8"`` → ``("yolo", "int8")``; ``"yolo"`` → ``("yolo", None)``.

    Only a suffix that looks like a precision (``fp32``, ``fp16``, ``bf16``, ``int8`` ...) is split off.
    """
    name, sep, suffix = spec.strip().rpartition(":")
    if sep and name and _PRECISION.match(suffix.lower()):
        return name, suffix.lower()
    if sep and name:
        raise InvalidOptionError(
            f"Invalid spec {spec!r}: the part after ':' must be a precision such as 'fp32', 'fp16' or 'int8', "
            f"but got {suffix!r}."
        )
    return spec.strip(), None


class CompareEntry(BaseModel):
    """One backend × precision × size: its accuracy, speed and memory, flattened for tables and JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: str
    backend: str
    precision: str
    imgsz: int | None = None
    ap: float | None = None
    ap50: float | None = None
    ap75: float | None = None
    latency_ms: float | None = Field(None, description="Median latency per call (batch images).")
    p90_ms: float | None = None
    images_per_s: float | None = None
    peak_rss_mb: float | None = None
    device_peak_mb: float | None = Field(
        None, description="Peak device (GPU) memory allocated while benchmarking, when measured."
    )
    device_name: str | None = Field(None, description="GPU name on CUDA, else the CPU model.")
    model_size_mb: float | None = None
    delta: str | None = Field(None, description="Change against the first entry, in words.")
    picked: str | None = Field(
        None, description="For a `name:auto` spec: the recipe precision='auto' ran (`runtime:precision`)."
    )
    picked_reason: str | None = Field(None, description="Why `picked` was picked (the tune decision).")
    error: str | None = None
    evaluation: DetectionReport | None = None
    bench: BenchResult | None = None

    @property
    def label(self) -> str:
        """``spec`` plus ``@imgsz`` when sizes vary, plus ``→ pick`` for an ``auto`` spec."""
        base = f"{self.spec}@{self.imgsz}" if self.imgsz else self.spec
        return f"{base} → {self.picked}" if self.picked else base


class CompareReport(BaseModel):
    """The trade-off table: one :class:`CompareEntry` per backend × precision × size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    annotations: str
    images_dir: str
    batch: int
    entries: list[CompareEntry]
    environment: Environment
    plot: str | None = None
    interrupted: bool = False
    notes: list[str] = Field(default_factory=list)

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (stable schema, ``schema_version`` tells which)."""
        return self.model_dump_json(indent=indent)

    def table(self) -> str:
        """AP, AP50, AP75, latency, memory, size, and the delta against the first entry."""
        width = max([18, *(len(e.label) + 2 for e in self.entries)])
        dev = any(e.device_peak_mb is not None for e in self.entries)
        head = (
            f"{'model':<{width}}{'AP':>7}{'AP50':>7}{'AP75':>7}{'median ms':>11}{'p90 ms':>9}{'img/s':>8}"
            f"{'peak RSS':>11}" + (f"{'dev peak':>11}" if dev else "") + f"{'size':>10}   vs first"
        )
        lines = [head, "-" * len(head)]
        for e in self.entries:
            if e.error:
                lines.append(f"{e.label:<{width}}error: {e.error}")
                continue
            lines.append(
                f"{e.label:<{width}}{_pct(e.ap):>7}{_pct(e.ap50):>7}{_pct(e.ap75):>7}{_num(e.latency_ms):>11}"
                f"{_num(e.p90_ms):>9}{_num(e.images_per_s, 1):>8}{_mb(e.peak_rss_mb):>11}"
                + (f"{_mb(e.device_peak_mb):>11}" if dev else "")
                + f"{_mb(e.model_size_mb):>10}   {e.delta or ''}"
            )
        where = sorted(
            {e.device_name for e in self.entries if e.device_peak_mb is not None and e.device_name}
        )
        lines.append(
            f"AP in % (COCO AP@[.5:.95], pycocotools) on {self.annotations}; latency per call of batch {self.batch} "
            f"on {', '.join(where) or self.environment.processor or self.environment.machine}, "
            f"threads={self.environment.threads}"
        )
        for e in self.entries:
            if e.picked:
                lines.append(f"{e.label}: precision='auto' picked {e.picked}: {e.picked_reason}")
        if self.plot:
            lines.append(f"plot: {self.plot}")
        if self.interrupted:
            lines.append("INTERRUPTED: only the entries above finished.")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} MB"


def delta_text(entry: CompareEntry, base: CompareEntry) -> str:
    """``"-0.8 AP, 2.6x faster, 0.30x memory, 0.25x size"`` for ``entry`` against ``base``.

    With device memory measured for both (GPU runs), ``"0.55x device memory"`` follows the host memory ratio.
    """
    parts = []
    if entry.ap is not None and base.ap is not None:
        parts.append(f"{100 * (entry.ap - base.ap):+.1f} AP")
    if entry.latency_ms and base.latency_ms:
        ratio = base.latency_ms / entry.latency_ms
        parts.append(f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower")
    if entry.peak_rss_mb and base.peak_rss_mb:
        parts.append(f"{entry.peak_rss_mb / base.peak_rss_mb:.2f}x memory")
    if entry.device_peak_mb and base.device_peak_mb:
        parts.append(f"{entry.device_peak_mb / base.device_peak_mb:.2f}x device memory")
    if entry.model_size_mb and base.model_size_mb:
        parts.append(f"{entry.model_size_mb / base.model_size_mb:.2f}x size")
    return ", ".join(parts)


def compare(
    specs: Sequence[str],
    *,
    coco: str | os.PathLike[str],
    images: str | os.PathLike[str],
    imgsz: int | Sequence[int] | None = None,
    batch: int = 1,
    runs: int = 20,
    warmup: int = 3,
    bench_images: int = 4,
    limit: int | None = None,
    score_threshold: float = COCO_SCORE_THRESHOLD,
    max_dets: int = COCO_MAX_DETS,
    device: str = "cpu",
    weights: str | os.PathLike[str] | None = DEFAULT,
    options: Mapping[str, Any] | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    threads: int | None = None,
    registry: Registry | None = None,
    plugins: Sequence[str] = (),
    isolate: bool | None = None,
    rounds: int = 1,
    plot: str | os.PathLike[str] | None = None,
    progress_bar: bool | None = None,
) -> CompareReport:
    """Evaluate and benchmark each ``name[:precision]`` spec (× each ``imgsz``) and tabulate the trade-off.

    Args:
        specs: backend specs, e.g. ``["yolo", "yolo:int8", "detr"]``; the first is the reference for deltas.
        coco: COCO instances JSON to evaluate on.
        images: folder holding its images.
        imgsz: model input size(s) (the backend's ``imgsz``-like option); ``None`` keeps each backend's default.
        batch: images per call when benchmarking.
        runs, warmup: timed and discarded calls per benchmark.
        bench_images: how many dataset images the benchmark cycles through.
        limit: evaluate only the first ``limit`` images.
        score_threshold, max_dets: COCO-practice evaluation settings (see :func:`visionkit.evaluate`).
        device, threads: where to run and how many threads to pin (see :func:`visionkit.benchmark`).
        weights, options, runtime_options: passed to :func:`visionkit.load` for every spec.
        registry, plugins, isolate: backend lookup and benchmark isolation (see :func:`visionkit.benchmark`).
        rounds: benchmark every entry this many times, interleaved (A B A B ...), pooling the samples.
        plot: write a latency-vs-AP scatter plot to this PNG path (needs matplotlib).
        progress_bar: show progress bars (default: when stderr is a terminal).

    Returns:
        A :class:`CompareReport`; a spec that fails (e.g. ``int8`` without the ONNX runtime plugin) gets a
        row with ``error`` and the others still run.
    """
    if not specs:
        raise InvalidOptionError("compare needs at least one backend spec, e.g. ['yolo', 'yolo:int8'].")
    parsed = [(s, *parse_spec(s)) for s in specs]
    gt = load_coco(coco)
    first = sorted(gt.dataset["images"], key=lambda r: int(r["id"]))[: max(1, bench_images)]
    bench_files = [str(Path(images) / r["file_name"]) for r in first]
    sizes: list[int | None] = (
        [None] if imgsz is None else ([imgsz] if isinstance(imgsz, int) else list(imgsz))
    )
    lookup = registry if registry is not None else registry_with(plugins)
    if threads is None and isolate is not False and registry is None:
        threads = physical_cores()
    entries: list[CompareEntry] = []
    shared: dict[str, Any] = {
        "device": device,
        "weights": weights,
        "options": dict(options or {}),
        "runtime_options": dict(runtime_options or {}),
        "threads": threads,
    }
    runs_of: dict[int, list[BenchResult]] = {}
    interrupted = False
    try:
        # 0. precision="auto": make sure a decision is cached for each auto spec (measured here once if
        #    not), so the accuracy pass and every benchmark process load the same pick.
        auto_failed: dict[tuple[str, int | None], str] = {}
        for auto_name in dict.fromkeys(name for _, name, prec in parsed if prec == AUTO):
            for size in sizes:
                try:
                    _decide(
                        auto_name,
                        size,
                        shared,
                        coco=coco,
                        images=images,
                        registry=registry,
                        lookup=lookup,
                        plugins=plugins,
                        isolate=isolate is not False and registry is None,
                        runs=runs,
                        warmup=warmup,
                    )
                except BackendUnavailableError:
                    raise  # pycocotools missing: every entry would fail the same way
                except Exception as exc:  # this row fails; the others still run
                    auto_failed[(auto_name, size)] = f"{type(exc).__name__}: {exc}"
        if any(prec == AUTO for _, _, prec in parsed):
            # measured again above if asked: the loads below read that decision, not measure it once more
            shared["runtime_options"].pop("retune", None)
        # 1. Accuracy, one spec after the other (deterministic: order does not matter).
        for spec, name, prec in parsed:
            for size in sizes:
                cfg = {"backend": name, "precision": prec or "fp32", "imgsz": size, **shared}
                if (name, size) in auto_failed and prec == AUTO:  # no decision: nothing to load
                    entries.append(
                        CompareEntry(
                            spec=spec,
                            backend=name,
                            precision=AUTO,
                            imgsz=size,
                            error=auto_failed[(name, size)],
                        )
                    )
                    continue
                entry = _evaluate_one(
                    spec,
                    cfg,
                    coco=coco,
                    images=images,
                    registry=lookup,
                    limit=limit,
                    score_threshold=score_threshold,
                    max_dets=max_dets,
                    progress_bar=progress_bar,
                )
                entries.append(entry)
                if entry.evaluation is not None and entry.evaluation.interrupted:
                    raise KeyboardInterrupt
        # 2. Speed and memory, interleaved over entries for `rounds` rounds so that a shared or
        #    throttling machine slows every entry alike; samples are pooled per entry.
        todo = [i for i, e in enumerate(entries) if e.error is None]
        runs_of = {i: [] for i in todo}
        for _ in range(rounds):
            for i in todo:
                e = entries[i]
                runs_of[i].append(
                    benchmark(
                        e.backend,
                        imgsz=e.imgsz,
                        precision=e.precision,
                        batch=batch,
                        runs=runs,
                        warmup=warmup,
                        images=bench_files,
                        registry=registry,
                        plugins=plugins,
                        isolate=isolate,
                        progress_bar=False,
                        **shared,
                    ).results[0]
                )
    except KeyboardInterrupt:
        if not entries:
            raise
        interrupted = True
    for i, results in runs_of.items():
        if results:
            entries[i] = _with_bench(entries[i], merge_rounds(results))
    base = next((e for e in entries if not e.error), None)
    if base is not None:
        entries = [
            e if e is base or e.error else e.model_copy(update={"delta": delta_text(e, base)})
            for e in entries
        ]
    notes = [
        f"{e.label} was asked for {e.precision} but the backend reports running {e.evaluation.precision}"
        for e in entries
        if e.evaluation is not None and e.evaluation.precision != e.precision and e.precision != AUTO
    ]
    report = CompareReport(
        annotations=str(coco),
        images_dir=str(images),
        batch=batch,
        entries=entries,
        environment=environment(threads),
        interrupted=interrupted,
        notes=notes,
    )
    if plot is not None:
        if any(e.ap is not None and e.latency_ms is not None for e in entries):
            report = report.model_copy(update={"plot": str(plot_tradeoff(report, plot))})
        else:  # an empty chart would look like a result: say why there is none instead
            report.notes.append(f"no plot written to {os.fspath(plot)}: no row has both an AP and a latency")
    return report


def _decide(
    name: str,
    size: int | None,
    shared: Mapping[str, Any],
    *,
    coco: str | os.PathLike[str],
    images: str | os.PathLike[str],
    registry: Registry | None,
    lookup: Registry | None,
    plugins: Sequence[str],
    isolate: bool,
    runs: int,
    warmup: int,
) -> None:
    """Tune ``name`` on the compare images unless a precision='auto' decision is cached for its recipe."""
    reg = lookup or get_registry()
    options = dict(shared["options"])
    if size is not None and not any(k in options for k in IMGSZ_OPTIONS):
        # the same input-size option the accuracy pass and the benchmark will hand the backend
        model = resolve_options(reg.get(name))
        fields = model.model_fields if model is not None else {}
        key = next((k for k in IMGSZ_OPTIONS if k in fields), None)
        if key is not None:
            options[key] = size
    recipe = LoadRecipe(
        name,
        weights=shared["weights"],
        device=shared["device"],
        precision=AUTO,
        options=options,
        runtime_options=dict(shared["runtime_options"]),
    )
    max_drop = float(recipe.runtime_options.get("max_drop", 1.0))
    if recipe.runtime_options.get("retune") is not True and cached(recipe, max_drop=max_drop, registry=reg):
        return
    print(
        f"compare: no precision='auto' decision for {name!r} with these weights and options on this machine "
        "yet: measuring every candidate recipe once on the compare images (`visionkit tune` does this ahead "
        "of time; later runs read the cache)",
        file=sys.stderr,
    )
    report = tune(
        recipe,
        images=images,
        coco=coco,
        max_drop=max_drop,
        registry=registry,
        plugins=plugins,
        isolate=isolate,
        runs=min(runs, 5),
        warmup=min(warmup, 1),
        log=lambda line: print(f"compare: {line}", file=sys.stderr),
    )
    print(report.table(), file=sys.stderr)


def _evaluate_one(
    spec: str,
    cfg: dict[str, Any],
    *,
    coco: str | os.PathLike[str],
    images: str | os.PathLike[str],
    registry: Registry | None,
    limit: int | None,
    score_threshold: float,
    max_dets: int,
    progress_bar: bool | None,
) -> CompareEntry:
    """Load and evaluate one spec; any failure becomes the entry's ``error``."""
    head: dict[str, Any] = {
        "spec": spec,
        "backend": cfg["backend"],
        "precision": cfg["precision"],
        "imgsz": cfg["imgsz"],
    }
    try:
        backend, canonical, _ = load_sized_config(cfg, registry)
        head["backend"] = canonical
        if cfg["precision"] == AUTO:  # what the decision loaded, from the backend's runtime report
            said = backend.runtime or {}
            decision = said.get("auto") or {}
            head["picked"] = decision.get("picked") or f"{said.get('name')}:{said.get('precision')}"
            head["picked_reason"] = decision.get("reason")
        ev = evaluate_coco(
            backend,
            coco,
            images,
            limit=limit,
            score_threshold=score_threshold,
            max_dets=max_dets,
            progress_bar=progress_bar,
        )
        del backend  # free the model before in-process benchmarks measure memory
    except BackendUnavailableError:
        raise  # pycocotools missing: every entry would fail the same way
    except Exception as exc:  # one spec failing (e.g. no int8 runtime) must not lose the others
        return CompareEntry(**head, error=f"{type(exc).__name__}: {exc}")
    return CompareEntry(**head, ap=ev.bbox.ap, ap50=ev.bbox.ap50, ap75=ev.bbox.ap75, evaluation=ev)


def _with_bench(entry: CompareEntry, bench: BenchResult) -> CompareEntry:
    lat = bench.latency
    return entry.model_copy(
        update={
            "latency_ms": lat.median_ms if lat else None,
            "p90_ms": lat.p90_ms if lat else None,
            "images_per_s": bench.images_per_s,
            "peak_rss_mb": bench.peak_rss_mb,
            "device_peak_mb": bench.device_peak_mb,
            "device_name": bench.device_name,
            "model_size_mb": bench.model_size_mb,
            "error": None if lat else bench.error,
            "bench": bench,
        }
    )


def plot_tradeoff(report: CompareReport, path: str | os.PathLike[str]) -> Path:
    """Scatter median latency (x) against COCO AP (y), one labelled point per entry; write a PNG.

    Raises:
        BackendUnavailableError: matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError("compare --plot", ["matplotlib"], "pip install matplotlib") from exc
    points = [e for e in report.entries if e.ap is not None and e.latency_ms is not None]
    # Figure + Agg canvas directly: no pyplot global state, no GUI backend, safe in threads and servers.
    fig = Figure(figsize=(6.4, 4.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for e in points:
        assert e.ap is not None and e.latency_ms is not None
        # precision='auto' rows are stars, labelled with what they resolved to
        ax.scatter(
            [e.latency_ms],
            [100 * e.ap],
            s=(40 + (e.peak_rss_mb or 0) / 10) * (2.5 if e.picked else 1.0),
            alpha=0.8,
            marker="*" if e.picked else "o",
        )
        ax.annotate(
            e.label, (e.latency_ms, 100 * e.ap), textcoords="offset points", xytext=(6, 4), fontsize=9
        )
    ax.set_xlabel(f"median latency per call, batch {report.batch} (ms)  — lower is better")
    ax.set_ylabel("COCO AP@[.5:.95] (%)  — higher is better")
    ax.set_title("Accuracy vs latency (marker area ~ peak memory)")
    ax.grid(True, alpha=0.3)
    if points:
        ax.margins(x=0.25, y=0.15)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
