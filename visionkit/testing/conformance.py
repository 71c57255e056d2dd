"""Conformance kit: mixin test classes a plugin subclasses to prove its backend honours the contract.

Usage in a plugin's tests::

    import pytest, visionkit
    from visionkit.testing import DetectorConformance

    class TestMyDetector(DetectorConformance):
        @pytest.fixture(scope="class")
        @classmethod
        def backend(cls):
            return visionkit.load("my-detector", weights=None)   # tiny random weights

Each class checks result types, shapes, dtypes and value ranges, the one-vs-many convention, equal
results for path / PIL / ndarray inputs, empty (blank) images, bad-input and unknown-option errors,
that declared tasks match the protocols the object satisfies, and the contract details listed in
``docs/plugins.md`` ("What the conformance kit checks"): batch independence, per-call options,
class ids vs names vs registered categories, sorted non-degenerate boxes, semantic scores,
``metadata.backend``, the registered options class, RGB channel order (with a ``color_probe``) and
thread safety. Override ``sample_images`` to feed images your model needs (the default: small
deterministic colour images of two different sizes).

This module needs pytest; :mod:`visionkit.testing.fakes` and :mod:`visionkit.testing.checks` do not.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from visionkit.errors import InvalidImageError, InvalidOptionError, InvalidPromptError
from visionkit.protocols import (
    Classifier,
    Detector,
    InstanceSegmenter,
    PromptSegmenter,
    SemanticSegmenter,
    Task,
)
from visionkit.registry import resolve_options
from visionkit.results import Classifications, Detections, InstanceMasks, PromptMasks, SemanticMask
from visionkit.testing.checks import check_thread_safety, results_close
from visionkit.testing.fakes import dissimilar_images, make_shapes_image, make_test_image

__all__ = [
    "BackendConformance",
    "ClassifierConformance",
    "DetectorConformance",
    "InstanceSegmenterConformance",
    "PromptSegmenterConformance",
    "SemanticSegmenterConformance",
    "dissimilar_images",
    "make_shapes_image",
    "make_test_image",
]


#: Per-call overrides tried by ``test_per_call_options_are_used`` (those the options model rejects are skipped).
DEFAULT_OPTION_OVERRIDES: tuple[dict[str, Any], ...] = (
    {"conf": 0.001},
    {"conf": 0.9},
    {"threshold": 0.001},
    {"threshold": 0.9},
    {"score_threshold": 0.001},
    {"score_threshold": 0.9},
    {"top_k": 1},
)


class BackendConformance:
    """Checks every backend must pass. Subclasses provide a ``backend`` fixture."""

    #: The task under test; set by the per-task subclasses.
    task: Task
    #: The protocol the backend must satisfy for ``task``.
    protocol: type
    #: Per-call option overrides to try; set your own when none of the defaults changes your results.
    option_overrides: ClassVar[tuple[dict[str, Any], ...]] = DEFAULT_OPTION_OVERRIDES
    #: Threads and calls per thread of the concurrency check.
    concurrency_threads: ClassVar[int] = 4
    concurrency_calls: ClassVar[int] = 3

    @pytest.fixture
    def backend(self) -> Any:
        raise NotImplementedError("Conformance subclasses must provide a `backend` fixture")

    @pytest.fixture
    def sample_images(self) -> list[np.ndarray]:
        """Two deterministic images of different sizes; override to feed model-specific inputs."""
        return [make_test_image(96, 128, seed=0), make_test_image(80, 64, seed=1)]

    @pytest.fixture
    def dissimilar_images(self) -> list[np.ndarray]:
        """Images of different sizes and content, one blank: a batch whose items must not affect each other."""
        return dissimilar_images()

    @pytest.fixture
    def color_probe(self) -> tuple[np.ndarray, str] | None:
        """``(image, class name)`` whose answer depends on RGB order (e.g. a red object); ``None`` skips."""
        return None

    # -- helpers --------------------------------------------------------------------------------
    def run(self, backend: Any, images: Any, **kwargs: Any) -> Any:
        """Call the task's verb."""
        return getattr(backend, self.task.value)(images, **kwargs)

    def check_result(self, result: Any, image: np.ndarray) -> None:
        """Task-specific checks of one result against its input image (extended by subclasses)."""
        assert result.metadata.image_shape == tuple(image.shape[:2]), (
            f"metadata.image_shape {result.metadata.image_shape} != input (h, w) {image.shape[:2]}"
        )
        assert isinstance(result.metadata.backend, str) and result.metadata.backend, (
            "metadata.backend must name the backend that produced the result (use `self.meta(image)`), "
            f"but got {result.metadata.backend!r}"
        )

    def same(self, a: Any, b: Any) -> bool:
        """True when :meth:`assert_close` accepts ``a`` and ``b``."""
        try:
            self.assert_close(a, b)
        except AssertionError:
            return False
        return True

    def results_for(self, backend: Any, images: list[np.ndarray], **kwargs: Any) -> list[Any]:
        """One result per image, called one image at a time."""
        return [self.run(backend, im, **kwargs) for im in images]

    def check_names(self, backend: Any, results: list[Any]) -> None:
        """Class ids and names agree with each other and with the registered categories (per task)."""

    # -- the checks -----------------------------------------------------------------------------
    def test_satisfies_protocol(self, backend: Any) -> None:
        assert isinstance(backend, self.protocol), f"{backend!r} does not implement {self.protocol.__name__}"

    def test_metadata_names_the_backend(self, backend: Any, sample_images: list[np.ndarray]) -> None:
        result = self.run(backend, sample_images[0])
        names: set[str] = {n for n in [getattr(backend, "name", None)] if isinstance(n, str)}
        spec = getattr(backend, "spec", None)
        if spec is not None:
            names |= {spec.name, *spec.aliases}
        if names:
            assert result.metadata.backend in names, (
                f"metadata.backend is {result.metadata.backend!r}, expected one of {sorted(names)}"
            )

    def test_options_class_is_the_registered_one(self, backend: Any) -> None:
        options = getattr(backend, "options", None)
        declared = getattr(type(backend), "Options", None)
        if options is None:
            pytest.skip("the backend has no `options` attribute")
        if isinstance(declared, type):
            assert isinstance(options, declared), (
                f"backend.options is a {type(options).__name__}, not the class's Options {declared.__name__}"
            )
        spec = getattr(backend, "spec", None)
        if spec is not None and spec.options:
            registered = resolve_options(spec)
            assert type(options) is registered, (
                f"registered options {spec.options!r} but the backend uses {type(options).__module__}."
                f"{type(options).__qualname__}: `visionkit info` and early validation describe the wrong options"
            )

    def test_batch_of_dissimilar_images_equals_one_by_one(
        self, backend: Any, dissimilar_images: list[np.ndarray]
    ) -> None:
        # One batch holding every image (when the backend batches), compared with one call per image.
        kwargs = {"batch_size": len(dissimilar_images)} if _has_option(backend, "batch_size") else {}
        batched = self.run(backend, dissimilar_images, **kwargs)
        for i, (b, image) in enumerate(zip(batched, dissimilar_images, strict=True)):
            try:
                self.assert_close(b, self.run(backend, image))
            except AssertionError as exc:
                raise AssertionError(
                    f"image {i} of a batch of {len(dissimilar_images)} dissimilar images (one blank) gives a "
                    f"different result than alone: results depend on the rest of the batch. {exc}"
                ) from None

    def test_per_call_options_are_used(self, backend: Any, dissimilar_images: list[np.ndarray]) -> None:
        if not callable(getattr(backend, "with_options", None)):
            pytest.skip("not a visionkit.Backend: per-call options cannot be compared with load-time ones")
        base = self.results_for(backend, dissimilar_images)
        inconclusive = []
        for overrides in self.option_overrides:
            try:
                opts = backend.with_options(overrides)
            except InvalidOptionError:
                continue
            per_call = self.results_for(backend, dissimilar_images, **overrides)
            if not all(self.same(a, b) for a, b in zip(per_call, base, strict=True)):
                return  # the override changed the answer: it was used
            clone = copy.copy(backend)  # the same model, with the overrides as load-time options
            clone.options = opts
            at_load = self.results_for(clone, dissimilar_images)
            assert all(self.same(a, b) for a, b in zip(at_load, base, strict=True)), (
                f"per-call options {overrides} were ignored: the same options given at load time change the "
                "result, per call they do not (read `batch.options`, not `self.options`, in the stages)"
            )
            inconclusive.append(overrides)
        if self.option_overrides is not DEFAULT_OPTION_OVERRIDES and inconclusive:
            raise AssertionError(f"per-call options {inconclusive} changed nothing, per call or at load time")
        pytest.skip(f"no option among {list(self.option_overrides)} changes this backend's results")

    def test_thread_safe(self, backend: Any, dissimilar_images: list[np.ndarray]) -> None:
        if getattr(backend, "thread_safe", True) is False:
            pytest.skip("the backend declares thread_safe = False; servers serialise its calls")
        check_thread_safety(
            lambda image: self.run(backend, image),
            dissimilar_images,
            threads=self.concurrency_threads,
            calls=self.concurrency_calls,
            assert_close=self.assert_close,
        )

    def test_class_names_and_ids_agree(
        self, backend: Any, sample_images: list[np.ndarray], dissimilar_images: list[np.ndarray]
    ) -> None:
        images = [*sample_images, *dissimilar_images]
        results = self.results_for(backend, images)
        if _has_option(backend, "conf"):  # low-confidence items too: random weights rarely pass the default
            with contextlib.suppress(InvalidOptionError):
                results += self.results_for(backend, images, conf=0.001)
        self.check_names(backend, results)

    def test_rgb_channel_order(self, backend: Any, color_probe: tuple[np.ndarray, str] | None) -> None:
        if color_probe is None:
            pytest.skip("no color_probe fixture: the kit cannot know what your model should see in colour")
        image, expected = color_probe
        found = self.names_found(self.run(backend, image))
        assert expected in found, (
            f"expected {expected!r} for the colour probe but got {sorted(found)}: channels read as BGR? "
            "visionkit hands the stages RGB"
        )

    def names_found(self, result: Any) -> set[str]:
        """Class names a result reports (for the colour probe)."""
        return set(getattr(result, "class_name", ()))

    def test_declared_tasks_match_protocols(self, backend: Any) -> None:
        declared = set(getattr(backend, "tasks", ()))
        assert self.task in declared, f"backend does not declare {self.task}"
        for t in Task:
            assert isinstance(backend, t.protocol) == (t in declared), (
                f"task {t.value}: declared={t in declared} but protocol satisfied={isinstance(backend, t.protocol)}"
            )
        spec = getattr(backend, "spec", None)
        if spec is not None:
            assert set(spec.tasks) == declared, f"registered tasks {spec.tasks} != backend tasks {declared}"

    def test_single_image_returns_one_result(self, backend: Any, sample_images: list[np.ndarray]) -> None:
        result = self.run(backend, sample_images[0])
        assert not isinstance(result, list)
        self.check_result(result, sample_images[0])

    def test_list_returns_list_in_order(self, backend: Any, sample_images: list[np.ndarray]) -> None:
        results = self.run(backend, sample_images)
        assert isinstance(results, list) and len(results) == len(sample_images)
        for result, image in zip(results, sample_images, strict=True):
            self.check_result(result, image)

    def test_batch_equals_one_by_one(self, backend: Any, sample_images: list[np.ndarray]) -> None:
        batched = self.run(backend, sample_images)
        single = [self.run(backend, im) for im in sample_images]
        for b, s in zip(batched, single, strict=True):
            self.assert_close(b, s)

    def test_path_pil_ndarray_agree(
        self, backend: Any, sample_images: list[np.ndarray], tmp_path: Path
    ) -> None:
        image = sample_images[0]
        path = tmp_path / "image.png"  # lossless, so all three inputs carry identical pixels
        Image.fromarray(image).save(path)
        from_array = self.run(backend, image)
        self.assert_close(self.run(backend, str(path)), from_array)
        self.assert_close(self.run(backend, Image.fromarray(image)), from_array)

    def test_blank_image(self, backend: Any) -> None:
        image = np.zeros((64, 80, 3), np.uint8)
        self.check_result(self.run(backend, image), image)

    def test_json_round_trip(self, backend: Any, sample_images: list[np.ndarray]) -> None:
        result = self.run(backend, sample_images[0])
        assert type(result).from_json(result.to_json()) == result

    @pytest.mark.parametrize(
        "bad, fragment",
        [
            (np.zeros((0, 0, 3), np.uint8), "empty"),
            (np.zeros((8, 8, 2), np.uint8), "shape"),
            (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
            ("/nonexistent/visionkit-conformance.jpg", "does not exist"),
            (object(), "type"),
        ],
    )
    def test_bad_input_raises_invalid_image(self, backend: Any, bad: Any, fragment: str) -> None:
        with pytest.raises(InvalidImageError, match=fragment):
            self.run(backend, bad)

    def test_unknown_option_rejected(self, backend: Any, sample_images: list[np.ndarray]) -> None:
        with pytest.raises(InvalidOptionError, match="not_a_real_option"):
            self.run(backend, sample_images[0], not_a_real_option=1)

    def assert_close(self, a: Any, b: Any) -> None:
        """Results equal up to float noise (override to loosen for non-deterministic kernels)."""
        results_close(a, b)


def _has_option(backend: Any, key: str) -> bool:
    return key in getattr(type(getattr(backend, "options", None)), "model_fields", {})


def _registered_names(backend: Any) -> tuple[str, ...] | None:
    """The registered category names, when the backend runs the weights they describe."""
    spec = getattr(backend, "spec", None)
    if spec is None or not isinstance(spec.categories, tuple):
        return None  # none registered, or a label-space tag such as "coco80"
    weights = getattr(backend, "weights", spec.default_weights)
    return spec.categories if weights == spec.default_weights else None


def _check_id_name_pairs(backend: Any, pairs: list[tuple[int, str]]) -> None:
    by_id: dict[int, set[str]] = {}
    by_name: dict[str, set[int]] = {}
    for cid, name in pairs:
        by_id.setdefault(cid, set()).add(name)
        by_name.setdefault(name, set()).add(cid)
    clash = {k: sorted(v) for k, v in by_id.items() if len(v) > 1}
    assert not clash, f"one class_id has several class_names across results: {clash}"
    clash2 = {k: sorted(v) for k, v in by_name.items() if len(v) > 1}
    assert not clash2, f"one class_name has several class_ids across results: {clash2}"
    registered = _registered_names(backend)
    if registered is not None:
        unknown = sorted(set(by_name) - set(registered))
        assert not unknown, (
            f"class names {unknown} are not among the registered categories {list(registered)}"
        )


class _PerItem(BackendConformance):
    def check_result(self, result: Any, image: np.ndarray) -> None:
        super().check_result(result, image)
        h, w = image.shape[:2]
        assert isinstance(result, Detections)
        assert result.xyxy.dtype == np.float32 and result.xyxy.shape == (len(result), 4)
        assert result.confidence.dtype == np.float32 and result.class_id.dtype == np.int64
        assert len(result.class_name) == len(result)
        if len(result):
            assert np.all(result.confidence >= 0) and np.all(result.confidence <= 1), (
                "confidence outside [0, 1]"
            )
            assert np.all(result.xyxy >= -1) and np.all(result.xyxy[:, [0, 2]] <= w + 1), (
                "boxes outside image"
            )
            assert np.all(result.xyxy[:, [1, 3]] <= h + 1), "boxes outside image"
            assert all(isinstance(n, str) and n for n in result.class_name)
            assert np.all(np.diff(result.confidence) <= 1e-6), (
                f"detections must be sorted by confidence, most confident first: {result.confidence.tolist()}"
            )
            wh = result.xyxy[:, 2:] - result.xyxy[:, :2]
            flat = np.flatnonzero(np.any(wh <= 0, axis=1))
            assert not flat.size, f"zero-area boxes (x2 <= x1 or y2 <= y1) at rows {flat[:5].tolist()}"
        filtered = result[result.confidence >= 0.5]
        assert len(filtered) == int(np.sum(result.confidence >= 0.5))

    def check_names(self, backend: Any, results: list[Any]) -> None:
        pairs = [(int(i), n) for r in results for i, n in zip(r.class_id, r.class_name, strict=True)]
        _check_id_name_pairs(backend, pairs)


class DetectorConformance(_PerItem):
    """Conformance checks for a :class:`~visionkit.Detector`."""

    task = Task.DETECT
    protocol = Detector


class InstanceSegmenterConformance(_PerItem):
    """Conformance checks for an :class:`~visionkit.InstanceSegmenter`."""

    task = Task.SEGMENT_INSTANCES
    protocol = InstanceSegmenter

    def check_result(self, result: Any, image: np.ndarray) -> None:
        super().check_result(result, image)
        assert isinstance(result, InstanceMasks)
        assert result.mask.dtype == bool and result.mask.shape == (len(result), *image.shape[:2]), (
            f"masks must be (n, H, W) at the input resolution {image.shape[:2]}, got {result.mask.shape}"
        )


class ClassifierConformance(BackendConformance):
    """Conformance checks for a :class:`~visionkit.Classifier`."""

    task = Task.CLASSIFY
    protocol = Classifier

    def check_result(self, result: Any, image: np.ndarray) -> None:
        super().check_result(result, image)
        assert isinstance(result, Classifications)
        assert len(result) >= 1
        assert np.all(result.confidence >= 0) and np.all(result.confidence <= 1 + 1e-6)
        assert np.all(np.diff(result.confidence) <= 1e-6), "confidence must be sorted, most confident first"
        assert float(result.confidence.sum()) <= 1 + 1e-4

    def check_names(self, backend: Any, results: list[Any]) -> None:
        pairs = [(int(i), n) for r in results for i, n in zip(r.class_id, r.class_name, strict=True)]
        _check_id_name_pairs(backend, pairs)

    def names_found(self, result: Any) -> set[str]:
        return {result.class_name[0]} if len(result) else set()


class SemanticSegmenterConformance(BackendConformance):
    """Conformance checks for a :class:`~visionkit.SemanticSegmenter`."""

    task = Task.SEGMENT_SEMANTIC
    protocol = SemanticSegmenter

    def check_result(self, result: Any, image: np.ndarray) -> None:
        super().check_result(result, image)
        assert isinstance(result, SemanticMask)
        assert result.label_map.shape == image.shape[:2], "label map must be at the input resolution"
        assert result.label_map.dtype == np.int32
        assert len(result.class_names) >= 1
        if result.scores is not None:
            scores = result.scores
            assert scores.shape == (len(result.class_names), *image.shape[:2]), (
                f"scores must be (C, H, W) = ({len(result.class_names)}, {image.shape[0]}, {image.shape[1]}), "
                f"but got {scores.shape}"
            )
            assert scores.min() >= -1e-6 and scores.max() <= 1 + 1e-6, (
                "scores must be probabilities in [0, 1]"
            )
            total = scores.sum(axis=0)
            assert np.allclose(total, 1.0, atol=1e-3), (
                f"scores must sum to 1 over classes at every pixel, but sums range [{total.min():.4g}, "
                f"{total.max():.4g}]"
            )
            top = np.take_along_axis(scores, result.label_map[None].astype(np.int64), axis=0)[0]
            disagree = top < scores.max(axis=0) - 1e-5  # a tie may go either way
            assert not disagree.any(), (
                f"label_map disagrees with argmax(scores) on {int(disagree.sum())} pixels"
            )

    def check_names(self, backend: Any, results: list[Any]) -> None:
        assert len({r.class_names for r in results}) == 1, "class_names differ between results of one backend"
        registered = _registered_names(backend)
        if registered is not None:
            present = sorted({n for r in results for n in r.present_classes()} - set(registered))
            assert not present, (
                f"class names {present} are not among the registered categories {list(registered)}"
            )

    def names_found(self, result: Any) -> set[str]:
        return set(result.present_classes())


class PromptSegmenterConformance:
    """Conformance checks for a :class:`~visionkit.PromptSegmenter`. Provide a ``backend`` fixture."""

    task = Task.SEGMENT_PROMPT

    @pytest.fixture
    def backend(self) -> Any:
        raise NotImplementedError("Conformance subclasses must provide a `backend` fixture")

    @pytest.fixture
    def image(self) -> np.ndarray:
        return make_test_image(96, 128, seed=0)

    def check_result(self, result: Any, image: np.ndarray) -> None:
        assert isinstance(result, PromptMasks)
        assert result.metadata.image_shape == tuple(image.shape[:2])
        assert isinstance(result.metadata.backend, str) and result.metadata.backend, (
            f"metadata.backend must name the backend, but got {result.metadata.backend!r}"
        )
        n = len(result)
        assert result.mask.dtype == bool and result.mask.shape == (n, *image.shape[:2])
        assert result.score.shape == (n,) and result.prompt_index.shape == (n,)
        if result.logits is not None:
            assert result.logits.shape[0] == n

    def test_satisfies_protocol(self, backend: Any) -> None:
        assert isinstance(backend, PromptSegmenter)
        assert Task.SEGMENT_PROMPT in set(getattr(backend, "tasks", ()))

    def test_thread_safe(self, backend: Any, image: np.ndarray) -> None:
        if getattr(backend, "thread_safe", True) is False:
            pytest.skip("the backend declares thread_safe = False; servers serialise its calls")
        images = [image, *dissimilar_images()[1:]]
        check_thread_safety(
            lambda im: backend.segment_prompt(im, points=[(20, 15)], labels=[1]),
            images,
            threads=BackendConformance.concurrency_threads,
            calls=BackendConformance.concurrency_calls,
        )

    def test_single_point_gives_ranked_masks(self, backend: Any, image: np.ndarray) -> None:
        result = backend.segment_prompt(image, points=[(30, 20)], labels=[1])
        self.check_result(result, image)
        assert len(result) >= 1 and set(result.prompt_index.tolist()) == {0}
        assert np.all(np.diff(result.score) <= 1e-6), "masks of one prompt must be ranked best first"

    def test_boxes_give_one_mask_each(self, backend: Any, image: np.ndarray) -> None:
        boxes = [(10, 10, 50, 40), (60, 30, 110, 80)]
        result = backend.segment_prompt(image, boxes=boxes)
        self.check_result(result, image)
        assert result.prompt_index.tolist() == [0, 1]

    def test_path_and_array_agree(self, backend: Any, image: np.ndarray, tmp_path: Path) -> None:
        path = tmp_path / "prompt.png"
        Image.fromarray(image).save(path)
        a = backend.segment_prompt(image, points=[(30, 20)], labels=[1])
        b = backend.segment_prompt(str(path), points=[(30, 20)], labels=[1])
        results_close(a, b)

    @pytest.mark.parametrize(
        "kwargs, fragment",
        [
            ({}, "prompt"),
            ({"points": [(5000, 5)], "labels": [1]}, "outside"),
            ({"points": [(5, 5)], "labels": [3]}, "0"),
            ({"points": [(5, 5), (6, 6)], "labels": [1]}, "labels"),
        ],
    )
    def test_invalid_prompts(
        self, backend: Any, image: np.ndarray, kwargs: dict[str, Any], fragment: str
    ) -> None:
        with pytest.raises(InvalidPromptError, match=fragment):
            backend.segment_prompt(image, **kwargs)

    def test_bad_image(self, backend: Any) -> None:
        with pytest.raises(InvalidImageError):
            backend.segment_prompt(np.zeros((0, 0, 3), np.uint8), points=[(1, 1)], labels=[1])
