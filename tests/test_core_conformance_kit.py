"""Each conformance-kit check catches a deliberately broken fake backend (and passes the real fakes).

Every broken fake below is one realistic plugin bug, registered through a real plugin object so the
kit sees what it would see for a third-party plugin (``backend.spec``, categories, options class).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

import visionkit
from visionkit import Batch, ResultMeta, SemanticMask, Task
from visionkit.registry import Registry
from visionkit.testing import (
    ClassifierConformance,
    DetectorConformance,
    FakeClassifier,
    FakeDetector,
    FakeSemanticSegmenter,
    SemanticSegmenterConformance,
    check_thread_safety,
    make_shapes_image,
    make_test_image,
)
from visionkit.testing.conformance import dissimilar_images
from visionkit.testing.fakes import COLORS, FakeOptions


# -- the broken fakes --------------------------------------------------------------------------------
class BatchDependent(FakeDetector):
    """Scores normalised by the padded batch canvas: an image's answer depends on its batch mates."""

    name = "broken-batch"

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        canvas = max(im.shape[0] for im in batch.images) * max(im.shape[1] for im in batch.images)
        out = []
        for dets, im in zip(super().postprocess(outputs, batch, task), batch.images, strict=True):
            scale = (im.shape[0] * im.shape[1] / canvas) ** 0.05
            out.append(dets.model_copy(update={"confidence": dets.confidence * np.float32(scale)}))
        return out


class IgnoresOverrides(FakeDetector):
    """Reads the load-time options in postprocess, so per-call overrides do nothing."""

    name = "broken-overrides"

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        opts = self.options
        return [self._instances(m, im, opts, False) for m, im in zip(outputs, batch.images, strict=True)]


class RankAsClassId(FakeDetector):
    """class_id is the detection's rank, not its class: ids and names disagree across images."""

    name = "broken-ids"

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        return [
            d.model_copy(update={"class_id": np.arange(len(d), dtype=np.int64)})
            for d in super().postprocess(outputs, batch, task)
        ]


class UnregisteredNames(FakeDetector):
    """Reports names the plugin did not register ("RED" for "red")."""

    name = "broken-names"

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        return [
            d.model_copy(update={"class_name": tuple(n.upper() for n in d.class_name)})
            for d in super().postprocess(outputs, batch, task)
        ]


class NoBackendInMetadata(FakeDetector):
    """Builds ResultMeta by hand and forgets ``backend``."""

    name = "broken-metadata"

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        return [
            d.model_copy(update={"metadata": ResultMeta(image_shape=d.metadata.image_shape)})
            for d in super().postprocess(outputs, batch, task)
        ]


class Unsorted(FakeDetector):
    """Returns detections least confident first."""

    name = "broken-sorting"

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        return [d[np.argsort(d.confidence, kind="stable")] for d in super().postprocess(outputs, batch, task)]


class ZeroAreaPadding(FakeDetector):
    """Pads its output with (0, 0, 0, 0) boxes, as a fixed-size detection head does, and forgets to drop them."""

    name = "broken-boxes"

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        out = []
        for d in super().postprocess(outputs, batch, task):
            pad = 3 - len(d)
            out.append(
                type(d)(
                    xyxy=np.concatenate([d.xyxy, np.zeros((pad, 4), np.float32)]),
                    confidence=np.concatenate([d.confidence, np.zeros(pad, np.float32)]),
                    class_id=np.concatenate([d.class_id, np.zeros(pad, np.int64)]),
                    class_name=d.class_name + ("red",) * pad,
                    metadata=d.metadata,
                )
            )
        return out


class ReadsBGR(FakeDetector):
    """Swaps channels in preprocess, as code written for OpenCV's BGR does."""

    name = "broken-bgr"

    def preprocess(self, images: list[np.ndarray], options: FakeOptions) -> Batch[FakeOptions]:
        return super().preprocess([im[..., ::-1] for im in images], options)


class OtherOptions(FakeOptions):
    """Not the options class the plugin registered."""

    conf: float = 0.5


class WrongOptionsClass(FakeDetector):
    name = "broken-options"
    Options = OtherOptions


class ThreadUnsafe(FakeDetector):
    """Keeps the batch in shared scratch state and disables the driver's lock."""

    name = "broken-threads"

    @property
    def lock(self) -> Any:  # type: ignore[override]
        return contextlib.nullcontext()

    def preprocess(self, images: list[np.ndarray], options: FakeOptions) -> Batch[FakeOptions]:
        self._scratch = images
        time.sleep(0.005)  # widen the window another thread overwrites the scratch in
        return super().preprocess(self._scratch, options)


class UnnormalisedScores(FakeSemanticSegmenter):
    """Semantic scores that are one-hot halves: they do not sum to 1."""

    name = "broken-scores"

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        out = []
        for r in super().postprocess(outputs, batch, task):
            onehot = (np.arange(len(r.class_names))[:, None, None] == r.label_map[None]).astype(np.float32)
            out.append(r.model_copy(update={"scores": onehot * 0.5}))
        return out


class ScoresDisagree(FakeSemanticSegmenter):
    """Normalised scores whose argmax is another class than the label map."""

    name = "broken-argmax"

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        out = []
        for r in super().postprocess(outputs, batch, task):
            c = len(r.class_names)
            shifted = (r.label_map + 1) % c
            scores = (np.arange(c)[:, None, None] == shifted[None]).astype(np.float32)
            out.append(
                SemanticMask(
                    label_map=r.label_map, class_names=r.class_names, scores=scores, metadata=r.metadata
                )
            )
        return out


class WithScores(FakeSemanticSegmenter):
    """The control for the two broken-scores fakes: softmax scores whose argmax is the label map."""

    name = "good-scores"

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        out = []
        for r in super().postprocess(outputs, batch, task):
            onehot = np.arange(len(r.class_names))[:, None, None] == r.label_map[None]
            z = np.exp(onehot * 3.0)
            out.append(r.model_copy(update={"scores": (z / z.sum(axis=0)).astype(np.float32)}))
        return out


class IgnoresTopK(FakeClassifier):
    """Always returns every class, whatever ``top_k`` a call asks for."""

    name = "broken-topk"

    def postprocess(self, outputs: Any, batch: Batch[FakeOptions], task: Task) -> list[Any]:
        return super().postprocess(
            outputs, Batch(batch.images, batch.inputs, batch.metas, self.options), task
        )


BROKEN = (
    BatchDependent,
    IgnoresOverrides,
    RankAsClassId,
    UnregisteredNames,
    NoBackendInMetadata,
    Unsorted,
    ZeroAreaPadding,
    ReadsBGR,
    WrongOptionsClass,
    ThreadUnsafe,
    UnnormalisedScores,
    ScoresDisagree,
    IgnoresTopK,
    WithScores,
)


class _BrokenPlugin:
    @visionkit.hookimpl
    def register_backends(self, register: Any) -> None:
        for cls in BROKEN:
            semantic = Task.SEGMENT_SEMANTIC in cls.tasks
            register(
                cls.name,
                cls,
                tasks=cls.tasks,
                categories=("background", *COLORS) if semantic else COLORS,
                options="visionkit.testing.fakes:FakeOptions",
            )


REGISTRY = Registry(entry_points=[], plugins=[_BrokenPlugin()], use_environment=False)


def load(cls: type) -> Any:
    return visionkit.load(cls.name, registry=REGISTRY)


def red_probe() -> tuple[np.ndarray, str]:
    image = np.full((48, 64, 3), 90, np.uint8)
    image[10:30, 20:44] = (230, 20, 20)
    return image, "red"


DET = DetectorConformance()
SEM = SemanticSegmenterConformance()
CLS = ClassifierConformance()


# -- each check catches its bug ----------------------------------------------------------------------
def test_results_that_depend_on_the_batch_are_caught() -> None:
    with pytest.raises(AssertionError, match="depend on the rest of the batch"):
        DET.test_batch_of_dissimilar_images_equals_one_by_one(load(BatchDependent), dissimilar_images())


def test_ignored_per_call_options_are_caught() -> None:
    with pytest.raises(AssertionError, match=r"per-call options \{'conf': 0.9\} were ignored"):
        DET.test_per_call_options_are_used(load(IgnoresOverrides), dissimilar_images())
    with pytest.raises(AssertionError, match=r"\{'top_k': 1\} were ignored"):
        CLS.test_per_call_options_are_used(load(IgnoresTopK), dissimilar_images())


def test_ids_that_do_not_match_names_are_caught() -> None:
    with pytest.raises(AssertionError, match="one class_id has several class_names"):
        DET.test_class_names_and_ids_agree(load(RankAsClassId), [make_test_image()], dissimilar_images())


def test_names_outside_the_registered_categories_are_caught() -> None:
    with pytest.raises(AssertionError, match=r"\['BLUE', 'GREEN', 'RED'\] are not among the registered"):
        DET.test_class_names_and_ids_agree(load(UnregisteredNames), [make_test_image()], dissimilar_images())


def test_missing_metadata_backend_is_caught() -> None:
    with pytest.raises(AssertionError, match=r"metadata\.backend must name the backend"):
        DET.test_single_image_returns_one_result(load(NoBackendInMetadata), [make_test_image()])


def test_unsorted_detections_are_caught() -> None:
    with pytest.raises(AssertionError, match="sorted by confidence"):
        DET.test_single_image_returns_one_result(load(Unsorted), [make_shapes_image()])


def test_zero_area_boxes_are_caught() -> None:
    with pytest.raises(AssertionError, match="zero-area boxes"):
        DET.test_single_image_returns_one_result(load(ZeroAreaPadding), [make_shapes_image()])


def test_bgr_read_as_rgb_is_caught() -> None:
    with pytest.raises(AssertionError, match="channels read as BGR"):
        DET.test_rgb_channel_order(load(ReadsBGR), red_probe())


def test_options_class_other_than_the_registered_one_is_caught() -> None:
    with pytest.raises(AssertionError, match=r"registered options 'visionkit\.testing\.fakes:FakeOptions'"):
        DET.test_options_class_is_the_registered_one(load(WrongOptionsClass))


def test_thread_unsafe_backend_is_caught() -> None:
    with pytest.raises(AssertionError, match="not thread-safe"):
        DET.test_thread_safe(load(ThreadUnsafe), dissimilar_images())


def test_semantic_scores_not_normalised_are_caught() -> None:
    with pytest.raises(AssertionError, match="sum to 1"):
        SEM.test_single_image_returns_one_result(load(UnnormalisedScores), [make_test_image()])


def test_semantic_scores_disagreeing_with_label_map_are_caught() -> None:
    with pytest.raises(AssertionError, match="disagrees with argmax"):
        SEM.test_single_image_returns_one_result(load(ScoresDisagree), [make_test_image()])


def test_the_correct_fakes_pass_the_same_checks() -> None:
    """The control: the unbroken fakes pass every check the broken ones fail."""
    reg = Registry(entry_points=[], plugins=[visionkit.testing.fake_plugin()], use_environment=False)
    det = visionkit.load("fake-detector", registry=reg)
    images = dissimilar_images()
    DET.test_batch_of_dissimilar_images_equals_one_by_one(det, images)
    DET.test_per_call_options_are_used(det, images)
    DET.test_class_names_and_ids_agree(det, [make_test_image()], images)
    DET.test_single_image_returns_one_result(det, [make_shapes_image()])
    DET.test_rgb_channel_order(det, red_probe())
    DET.test_options_class_is_the_registered_one(det)
    DET.test_thread_safe(det, images)
    CLS.test_per_call_options_are_used(visionkit.load("fake-classifier", registry=reg), images)
    scored = load(WithScores)
    assert scored.segment_semantic(make_test_image()).scores is not None
    SEM.test_single_image_returns_one_result(scored, [make_test_image()])
    SEM.test_batch_of_dissimilar_images_equals_one_by_one(scored, images)


# -- the driver's lock makes shared scratch state safe ------------------------------------------------
class SharedScratch(FakeDetector):
    """Keeps the batch in shared scratch state, as many library wrappers do, but keeps the driver's lock."""

    def preprocess(self, images: list[np.ndarray], options: FakeOptions) -> Batch[FakeOptions]:
        self._scratch = images
        time.sleep(0.005)
        return super().preprocess(self._scratch, options)


def test_backend_predict_serialises_stages_so_shared_state_is_safe() -> None:
    det = SharedScratch()
    assert SharedScratch.thread_safe is True
    check_thread_safety(det.detect, dissimilar_images(), threads=4, calls=3)


def test_fakes_import_without_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "from visionkit.testing import FakeDetector, make_test_image, check_thread_safety\n"
        "import visionkit.testing.fakes\n"
        "print(len(FakeDetector().detect(make_test_image())))\n"
        "try:\n"
        "    from visionkit.testing import DetectorConformance\n"
        "except ImportError:\n"
        "    print('conformance needs pytest')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "conformance", "needs", "pytest"]
