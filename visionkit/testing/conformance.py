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
and that declared tasks match the protocols the object satisfies. Override ``sample_images`` to feed
images your model needs (the default: small deterministic colour images of two different sizes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from visionkit.results import Classifications, Detections, InstanceMasks, PromptMasks, SemanticMask

__all__ = [
    "BackendConformance",
    "ClassifierConformance",
    "DetectorConformance",
    "InstanceSegmenterConformance",
    "PromptSegmenterConformance",
    "SemanticSegmenterConformance",
    "make_test_image",
]


def make_test_image(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A deterministic RGB uint8 test image: soft noise plus red, green and blue rectangles."""
    rng = np.random.default_rng(seed)
    img = rng.integers(70, 110, size=(height, width, 3), dtype=np.uint8)
    h, w = height, width
    img[h // 8 : h // 2, w // 10 : w // 3] = (220, 30, 30)
    img[h // 3 : h * 3 // 4, w // 2 : w * 4 // 5] = (30, 210, 40)
    img[h * 2 // 3 : h - 4, w // 6 : w // 2] = (20, 40, 230)
    return img


class BackendConformance:
    """Checks every backend must pass. Subclasses provide a ``backend`` fixture."""

    #: The task under test; set by the per-task subclasses.
    task: Task
    #: The protocol the backend must satisfy for ``task``.
    protocol: type

    @pytest.fixture
    def backend(self) -> Any:
        raise NotImplementedError("Conformance subclasses must provide a `backend` fixture")

    @pytest.fixture
    def sample_images(self) -> list[np.ndarray]:
        """Two deterministic images of different sizes; override to feed model-specific inputs."""
        return [make_test_image(96, 128, seed=0), make_test_image(80, 64, seed=1)]

    # -- helpers --------------------------------------------------------------------------------
    def run(self, backend: Any, images: Any, **kwargs: Any) -> Any:
        """Call the task's verb."""
        return getattr(backend, self.task.value)(images, **kwargs)

    def check_result(self, result: Any, image: np.ndarray) -> None:
        """Task-specific checks of one result against its input image (extended by subclasses)."""
        assert result.metadata.image_shape == tuple(image.shape[:2]), (
            f"metadata.image_shape {result.metadata.image_shape} != input (h, w) {image.shape[:2]}"
        )

    # -- the checks -----------------------------------------------------------------------------
    def test_satisfies_protocol(self, backend: Any) -> None:
        assert isinstance(backend, self.protocol), f"{backend!r} does not implement {self.protocol.__name__}"

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
        assert type(a) is type(b)
        da, db = a.model_dump(), b.model_dump()
        assert da.keys() == db.keys()
        for key in da:
            _assert_close(da[key], db[key], key)


def _assert_close(x: Any, y: Any, where: str) -> None:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, f"{where}: shape {x.shape} != {y.shape}"
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-3, err_msg=where)
        elif x.dtype == bool and x.ndim == 3 and x.size:
            # Masks: allow a sliver of boundary pixels to flip under float noise.
            assert np.mean(x != y) < 1e-3, f"{where}: masks differ on {np.mean(x != y):.2%} of pixels"
        else:
            np.testing.assert_array_equal(x, y, err_msg=where)
    elif isinstance(x, dict) and isinstance(y, dict):
        assert x.keys() == y.keys(), f"{where}: keys {sorted(x)} != {sorted(y)}"
        for k in x:
            _assert_close(x[k], y[k], f"{where}.{k}")
    else:
        assert x == y, f"{where}: {x!r} != {y!r}"


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
        filtered = result[result.confidence >= 0.5]
        assert len(filtered) == int(np.sum(result.confidence >= 0.5))


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
        n = len(result)
        assert result.mask.dtype == bool and result.mask.shape == (n, *image.shape[:2])
        assert result.score.shape == (n,) and result.prompt_index.shape == (n,)
        if result.logits is not None:
            assert result.logits.shape[0] == n

    def test_satisfies_protocol(self, backend: Any) -> None:
        assert isinstance(backend, PromptSegmenter)
        assert Task.SEGMENT_PROMPT in set(getattr(backend, "tasks", ()))

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
        BackendConformance().assert_close(a, b)

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
