"""Deterministic, numpy-only backends for tests and for trying pipelines without weights.

They find colour: a pixel belongs to class ``red``/``green``/``blue`` when that channel exceeds both
others by :attr:`FakeOptions.margin`. Each backend runs through the real three-stage
:class:`~visionkit.Backend` path, so they exercise the same machinery as real plugins.

Register them with :func:`fake_plugin` (``Registry(plugins=[fake_plugin()])``) or build directly.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from visionkit.backend import (
    Backend,
    BackendOptions,
    Batch,
    Classifies,
    Detects,
    SegmentsInstances,
    SegmentsSemantic,
)
from visionkit.errors import InvalidPromptError
from visionkit.hookspecs import hookimpl
from visionkit.images import load_image
from visionkit.protocols import Task
from visionkit.results import (
    Classifications,
    Detections,
    InstanceMasks,
    PromptMasks,
    SemanticMask,
)

__all__ = [
    "COLORS",
    "FakeClassifier",
    "FakeDetector",
    "FakeInstanceSegmenter",
    "FakeOptions",
    "FakePromptSegmenter",
    "FakeSemanticSegmenter",
    "dissimilar_images",
    "fake_plugin",
    "make_shapes_image",
    "make_test_image",
]

#: Class names of the fakes; the semantic segmenter adds "background" at index 0.
COLORS = ("red", "green", "blue")


def make_test_image(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A deterministic RGB uint8 test image: soft noise plus red, green and blue rectangles."""
    rng = np.random.default_rng(seed)
    img = rng.integers(70, 110, size=(height, width, 3), dtype=np.uint8)
    h, w = height, width
    img[h // 8 : h // 2, w // 10 : w // 3] = (220, 30, 30)
    img[h // 3 : h * 3 // 4, w // 2 : w * 4 // 5] = (30, 210, 40)
    img[h * 2 // 3 : h - 4, w // 6 : w // 2] = (20, 40, 230)
    return img


def make_shapes_image(height: int = 72, width: int = 100, seed: int = 2) -> np.ndarray:
    """A deterministic RGB uint8 image unlike :func:`make_test_image`: a gradient, a red disc, a blue bar.

    The disc is not a rectangle, so box-based scores (e.g. the fakes' confidence) fall below 1.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = 40 + (xx * 60 // max(width - 1, 1))
    img[..., 1] = 50 + (yy * 50 // max(height - 1, 1))
    img[..., 2] = rng.integers(40, 70, size=(height, width))
    r = min(height, width) // 4
    disc = (yy - height // 2) ** 2 + (xx - width // 3) ** 2 <= r * r
    img[disc] = (235, 25, 20)
    img[height // 6 : height // 6 + max(3, height // 10), width * 3 // 5 : width - 4] = (15, 30, 240)
    return img


def dissimilar_images() -> list[np.ndarray]:
    """Three images of different sizes and content, one blank: a batch whose items must not affect each other.

    The conformance kit's default for its batch-independence, per-call-option and thread-safety checks.
    """
    return [make_test_image(96, 128, seed=0), np.zeros((64, 80, 3), np.uint8), make_shapes_image(72, 100)]


class FakeOptions(BackendOptions):
    """Options of the fake backends."""

    margin: int = Field(60, ge=0, le=255, description="How much a channel must exceed the others.")
    conf: float = Field(0.25, ge=0.0, le=1.0, description="Drop detections below this confidence.")
    min_pixels: int = Field(4, ge=1, description="Ignore colours covering fewer pixels.")
    top_k: int = Field(3, ge=1, le=3, description="Classes returned by the classifier.")


def color_masks(images: list[np.ndarray], margin: int) -> np.ndarray:
    """``(B, 3, H, W)`` bool: pixel is dominated by red / green / blue. Images must share a size."""
    x = np.stack(images).astype(np.int16)  # (B,H,W,3)
    out = []
    for c in range(3):
        others = np.delete(x, c, axis=-1)
        out.append(np.all(x[..., c : c + 1] >= others + margin, axis=-1))
    return np.stack(out, axis=1)


class _FakeBase(Backend[FakeOptions]):
    Options: ClassVar[type[BackendOptions]] = FakeOptions

    def preprocess(self, images: list[np.ndarray], options: FakeOptions) -> Batch[FakeOptions]:
        # Per-image masks: images in one batch may differ in size, as with real backends.
        return Batch(
            images, [color_masks([im], options.margin)[0] for im in images], [{} for _ in images], options
        )

    def forward(self, inputs: Any) -> Any:
        return inputs

    def _instances(
        self, masks: np.ndarray, image: np.ndarray, opts: FakeOptions, with_masks: bool
    ) -> Detections:
        boxes, scores, ids, keep = [], [], [], []
        for c in range(3):
            m = masks[c]
            n = int(m.sum())
            if n < opts.min_pixels:
                continue
            ys, xs = np.nonzero(m)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            score = n / float((x2 - x1) * (y2 - y1))  # how solid the colour region is
            if score < opts.conf:
                continue
            boxes.append([x1, y1, x2, y2])
            scores.append(score)
            ids.append(c)
            keep.append(m)
        order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
        h, w = image.shape[:2]
        fields: dict[str, Any] = {
            "xyxy": np.asarray(boxes, np.float32).reshape(-1, 4)[order],
            "confidence": np.asarray(scores, np.float32)[order],
            "class_id": np.asarray(ids, np.int64)[order],
            "class_name": tuple(COLORS[ids[i]] for i in order),
            "metadata": self.meta(image),
        }
        if with_masks:
            fields["mask"] = np.asarray(keep, bool).reshape(-1, h, w)[order]
            return InstanceMasks(**fields)
        return Detections(**fields)


class FakeDetector(_FakeBase, Detects):
    """Boxes around the red, green and blue regions of an image."""

    name = "fake-detector"
    tasks = (Task.DETECT,)

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        return [
            self._instances(m, im, batch.options, False) for m, im in zip(outputs, batch.images, strict=True)
        ]


class FakeInstanceSegmenter(_FakeBase, Detects, SegmentsInstances):
    """Boxes and masks of the red, green and blue regions; a Detector and an InstanceSegmenter."""

    name = "fake-instance"
    tasks = (Task.DETECT, Task.SEGMENT_INSTANCES)

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        masks = task is Task.SEGMENT_INSTANCES
        return [
            self._instances(m, im, batch.options, masks) for m, im in zip(outputs, batch.images, strict=True)
        ]


class FakeSemanticSegmenter(_FakeBase, SegmentsSemantic):
    """Label map: 0 background, 1 red, 2 green, 3 blue."""

    name = "fake-semantic"
    tasks = (Task.SEGMENT_SEMANTIC,)

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        out = []
        for m, im in zip(outputs, batch.images, strict=True):
            label = np.zeros(im.shape[:2], np.int32)
            for c in range(3):
                label[m[c]] = c + 1
            out.append(
                SemanticMask(label_map=label, class_names=("background", *COLORS), metadata=self.meta(im))
            )
        return out


class FakeClassifier(_FakeBase, Classifies):
    """Softmax over the mean red, green and blue intensities."""

    name = "fake-classifier"
    tasks = (Task.CLASSIFY,)

    def preprocess(self, images: list[np.ndarray], options: FakeOptions) -> Batch[FakeOptions]:
        means = [im.reshape(-1, 3).mean(axis=0) / 255.0 for im in images]
        return Batch(images, np.asarray(means, np.float64).reshape(-1, 3), [{} for _ in images], options)

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        out = []
        for logits, im in zip(outputs, batch.images, strict=True):
            z = np.exp((logits - logits.max()) * 10.0)
            p = z / z.sum()
            order = np.argsort(-p, kind="stable")[: batch.options.top_k]
            out.append(
                Classifications(
                    class_id=order.astype(np.int64),
                    confidence=p[order].astype(np.float32),
                    class_name=tuple(COLORS[i] for i in order),
                    metadata=self.meta(im),
                )
            )
        return out


class FakePromptSegmenter(_FakeBase):
    """Masks of pixels whose colour is close to the clicked point's (or the box centre's).

    One point gives three ranked masks at growing colour tolerance (the ``multimask`` policy real
    SAM backends follow); several prompts give one mask each.
    """

    name = "fake-prompt"
    tasks = (Task.SEGMENT_PROMPT,)
    TOLERANCES = (24.0, 48.0, 96.0)

    def segment_prompt(
        self,
        image: Any,
        *,
        points: Any = None,
        labels: Any = None,
        boxes: Any = None,
        mask_input: Any = None,
        multimask_output: bool | None = None,
    ) -> PromptMasks:
        """Segment what the points/boxes point at; see the class docstring."""
        img = load_image(image)
        h, w = img.shape[:2]
        pts = None if points is None else np.asarray(points, np.float64).reshape(-1, 2)
        bxs = None if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 4)
        if (pts is None or not len(pts)) and (bxs is None or not len(bxs)):
            raise InvalidPromptError(
                "Received no prompt: give points=[(x, y)] and/or boxes=[(x1, y1, x2, y2)]."
            )
        if pts is not None:
            lab = np.ones(len(pts), np.int64) if labels is None else np.asarray(labels).reshape(-1)
            if len(lab) != len(pts):
                raise InvalidPromptError(
                    f"labels must have one entry per point ({len(pts)}), but got {len(lab)}."
                )
            if not np.isin(lab, (0, 1)).all():
                raise InvalidPromptError(
                    f"labels must be 1 (foreground) or 0 (background), but got {lab.tolist()}."
                )
            bad = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
            if bad.any():
                raise InvalidPromptError(
                    f"points {pts[bad].tolist()} fall outside the image of width {w} and height {h}."
                )
        seeds: list[tuple[np.ndarray, np.ndarray | None]] = []
        if bxs is not None and len(bxs):
            for b in bxs:
                if b[2] < b[0] or b[3] < b[1]:
                    raise InvalidPromptError(
                        f"box {b.tolist()} must be (x1, y1, x2, y2) with x2 >= x1, y2 >= y1."
                    )
                seeds.append((np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]), b))
        else:
            assert pts is not None
            seeds.append((pts[lab == 1].mean(axis=0) if (lab == 1).any() else pts[0], None))
        multi = (len(seeds) == 1 and bxs is None) if multimask_output is None else multimask_output
        tols = self.TOLERANCES if multi else (self.TOLERANCES[1],)
        masks, scores, index = [], [], []
        yy, xx = np.mgrid[0:h, 0:w]
        for i, (seed, box) in enumerate(seeds):
            cx, cy = int(np.clip(seed[0], 0, w - 1)), int(np.clip(seed[1], 0, h - 1))
            dist = np.abs(img.astype(np.int16) - img[cy, cx].astype(np.int16)).max(axis=-1)
            ranked = []
            for tol in tols:
                m = dist <= tol
                if box is not None:
                    m &= (xx >= box[0]) & (xx < box[2]) & (yy >= box[1]) & (yy < box[3])
                ranked.append((1.0 - tol / 255.0, m))
            ranked.sort(key=lambda t: -t[0])
            for score, m in ranked:
                masks.append(m)
                scores.append(score)
                index.append(i)
        extra: dict[str, Any] = {}
        if pts is not None:
            extra["points"] = pts.tolist()
        if bxs is not None:
            extra["boxes"] = bxs.tolist()
        return PromptMasks(
            mask=np.asarray(masks, bool),
            score=np.asarray(scores, np.float32),
            prompt_index=np.asarray(index, np.int64),
            metadata=self.meta(img, **extra),
        )


class _FakePlugin:
    """A plugin object registering the fakes under ``fake-*`` names."""

    @hookimpl
    def register_backends(self, register: Any) -> None:
        for cls in (
            FakeDetector,
            FakeInstanceSegmenter,
            FakeSemanticSegmenter,
            FakeClassifier,
            FakePromptSegmenter,
        ):
            register(
                cls.name,
                cls,
                tasks=cls.tasks,
                description=(cls.__doc__ or "").strip().splitlines()[0],
                categories=("background", *COLORS) if cls is FakeSemanticSegmenter else COLORS,
                options="visionkit.testing.fakes:FakeOptions",
                prompt_types=("point", "box") if cls is FakePromptSegmenter else (),
                batch=cls is not FakePromptSegmenter,
            )


def fake_plugin() -> object:
    """A plugin object registering every fake backend (``Registry(plugins=[fake_plugin()])``)."""
    return _FakePlugin()
