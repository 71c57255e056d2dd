"""Text-prompted detectors (OWLv2, OWL-ViT, Grounding DINO, MM-Grounding-DINO, OmDet-Turbo), tiny random models.

Parity: visionkit's results equal what the checkpoint's own processor + model + ``post_process_*`` give
for the same names, image and weights. Tolerance: boxes within 1e-4 relative or 1e-3 px, scores within
1e-6, labels exact (measured: identical, both run the same ops on the same tensors). The image is a
real COCO photo when ``VISIONKIT_DATA`` is set, else a synthetic one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import visionkit
from visionkit import InvalidOptionError, InvalidPromptError, LimitExceededError, WeightsNotFoundError
from visionkit.testing import DetectorConformance

from .conftest import hf_image, load, registry

NAMES = ["red car", "person", "cat"]
OWL = ["owlv2", "owlvit"]
DINO = ["grounding-dino", "mm-grounding-dino"]
ALL = [*OWL, *DINO, "omdet-turbo"]


def _tiny(name: str, **options: Any) -> Any:
    torch.manual_seed(0)
    return load(name, weights=None, **options)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real COCO photo (two cats on a couch) when VISIONKIT_DATA is set, else a synthetic image."""
    root = os.environ.get("VISIONKIT_DATA")
    path = Path(root or "/nonexistent") / "coco-mini" / "images" / "000000039769.png"
    if root and path.is_file():
        return np.array(Image.open(path).convert("RGB"))
    return hf_image(120, 160, 3)


@pytest.fixture(scope="module")
def backends() -> dict[str, Any]:
    """One tiny random backend of each kind, shared by the module (no threshold: every query comes back)."""
    return {n: _tiny(n, threshold=0.0, clip_boxes=False, max_detections=None) for n in ALL}


def _by_score(r: dict[str, Any], canonical: bool = False) -> dict[str, Any]:
    order = torch.argsort(-r["scores"], stable=True)  # visionkit: most confident first, ties in query order
    if canonical:  # OmDet-Turbo's top-k is unsorted: ties by (score, name, box), as the backend orders them
        b, ids = r["boxes"].numpy(), r["labels"].numpy()
        order = torch.as_tensor(np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], ids, -r["scores"].numpy())))
    return {
        k: v[order] if isinstance(v, torch.Tensor) else [v[i] for i in order.tolist()] if v else v
        for k, v in dict(r).items()
    }


def _reference(backend: Any, images: list[np.ndarray], names: list[str], **post: Any) -> list[dict[str, Any]]:
    """transformers alone: processor(images, text) → model → post_process_grounded_object_detection."""
    proc = backend.processor
    text = [names] * len(images)
    inputs = proc(images=images, text=text, return_tensors="pt")
    with torch.no_grad():
        outputs = backend.model(**inputs)
    sizes = [im.shape[:2] for im in images]
    if backend.name in OWL:
        found = proc.post_process_grounded_object_detection(
            outputs, target_sizes=sizes, text_labels=text, **post
        )
    elif backend.name == "omdet-turbo":
        found = proc.post_process_grounded_object_detection(
            outputs, text_labels=text, target_sizes=sizes, **post
        )
    else:
        found = proc.post_process_grounded_object_detection(
            outputs, input_ids=inputs["input_ids"], target_sizes=sizes, **post
        )
    return [_by_score(r, canonical=backend.name == "omdet-turbo") for r in found]


def _assert_same(dets: Any, ref: dict[str, Any]) -> None:
    assert len(dets) == len(ref["scores"]) > 0
    np.testing.assert_allclose(dets.xyxy, ref["boxes"].numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dets.confidence, ref["scores"].numpy(), rtol=0, atol=1e-6)


# -- parity ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*OWL, "omdet-turbo"])
@pytest.mark.parametrize("batched", [False, True])
def test_owl_and_omdet_parity(name: str, batched: bool, backends: dict[str, Any], photo: np.ndarray) -> None:
    backend = backends[name]
    images = [photo, hf_image(70, 50, 4)] if batched else [photo]
    got = backend.detect(images, classes=NAMES)
    post = {"threshold": 0.0} if name in OWL else {"threshold": 0.0, "nms_threshold": 0.5}
    for dets, ref in zip(got, _reference(backend, images, NAMES, **post), strict=True):
        _assert_same(dets, ref)
        np.testing.assert_array_equal(dets.class_id, ref["labels"].numpy())
        assert list(dets.class_name) == [ref["text_labels"][i] for i in range(len(dets))]
        assert set(dets.class_id.tolist()) <= set(range(len(NAMES)))


@pytest.mark.parametrize("name", DINO)
def test_grounding_dino_boxes_and_scores_parity(
    name: str, backends: dict[str, Any], photo: np.ndarray
) -> None:
    backend = backends[name]
    got = backend.detect(photo, classes=NAMES)
    _assert_same(got, _reference(backend, [photo], NAMES, threshold=0.0)[0])
    assert set(got.class_name) <= set(NAMES)


def test_grounding_dino_prompt_is_the_processors(backends: dict[str, Any]) -> None:
    """The names become the very tokens the processor makes of them ("red car. person. cat.")."""
    backend = backends["grounding-dino"]
    batch = backend.preprocess([hf_image(40, 60, 0)], backend.with_options({"classes": NAMES}))
    ids = batch.inputs[backend._input_names.index("input_ids")]
    expected = backend.processor(images=[hf_image(40, 60, 0)], text=NAMES, return_tensors="pt")["input_ids"]
    torch.testing.assert_close(ids, expected, rtol=0, atol=0)
    assert backend.prompt(tuple(NAMES))[0] == "red car. person. cat."


def test_grounding_dino_names_boxes_as_the_processor_does(backends: dict[str, Any]) -> None:
    """Token → name mapping: when one name's tokens light up, transformers' text label is that name and
    visionkit's class is that name (checked on crafted logits, since random weights light up everything)."""
    backend = backends["grounding-dino"]
    image = hf_image(40, 60, 0)
    batch = backend.preprocess([image], backend.with_options({"classes": NAMES}))
    token_class = batch.extra["token_class"]
    logits, boxes = backend.forward(batch.inputs)
    crafted = torch.full_like(logits, -9.0)
    want = [q % len(NAMES) for q in range(logits.shape[1])]
    for q, k in enumerate(want):
        crafted[0, q, torch.as_tensor(np.flatnonzero(token_class == k))] = 2.0 + 0.1 * q  # no ties
    got = backend.postprocess((crafted, boxes), batch, visionkit.Task.DETECT)[0]
    ref = _by_score(
        backend.processor.post_process_grounded_object_detection(
            backend._outputs((crafted, boxes)),
            input_ids=batch.extra["input_ids"],
            threshold=0.0,
            text_threshold=0.5,
            target_sizes=[image.shape[:2]],
        )[0]
    )
    order = torch.argsort(-torch.sigmoid(crafted[0]).max(-1).values, stable=True).tolist()
    assert list(got.class_name) == [NAMES[want[q]] for q in order]
    assert list(ref["text_labels"]) == [NAMES[want[q]] for q in order]  # the processor names them alike
    _assert_same(got, ref)


# -- the classes option ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_is_a_text_prompted_detector(name: str, backends: dict[str, Any]) -> None:
    backend = backends[name]
    assert isinstance(backend, visionkit.TextPromptedDetector) and backend.open_vocabulary is True
    spec = registry().get(name)
    assert spec.prompt_types == ("text",) and [t.value for t in spec.tasks] == ["detect"]


def test_class_id_is_the_index_of_the_name(backends: dict[str, Any]) -> None:
    """Reversing the names reverses the ids; scores and boxes stay (OWL scores each query on its own)."""
    backend = backends["owlv2"]
    image = hf_image(48, 64, 5)
    a = backend.detect(image, classes=NAMES)
    b = backend.detect(image, classes=NAMES[::-1])
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-6)
    np.testing.assert_array_equal(a.class_id, len(NAMES) - 1 - b.class_id)
    assert a.class_name == b.class_name
    assert a.metadata.label_space == "classes"


@pytest.mark.parametrize("name", ["owlv2", "grounding-dino"])
def test_load_time_classes_equal_per_call_classes(name: str, backends: dict[str, Any]) -> None:
    image = hf_image(48, 64, 6)
    at_load = _tiny(name, classes=NAMES, threshold=0.0, clip_boxes=False, max_detections=None)
    assert at_load.detect(image) == backends[name].detect(image, classes=NAMES)
    assert at_load.class_names == tuple(NAMES)


@pytest.mark.parametrize("name", ["owlv2", "grounding-dino"])
@pytest.mark.parametrize(
    "classes, error, fragment",
    [
        (None, InvalidPromptError, "pass classes="),
        ([], InvalidPromptError, "empty"),
        (["dog", "  "], InvalidPromptError, "not a name"),
        (["dog", "Dog"], InvalidPromptError, "repeats"),
        ("dog", InvalidOptionError, "classes"),
        (["a", "b", "c"], LimitExceededError, "max_classes"),
    ],
)
def test_bad_classes_are_refused(
    name: str, classes: Any, error: type, fragment: str, backends: dict[str, Any]
) -> None:
    backend = backends[name]
    image = hf_image(32, 32, 0)
    with pytest.raises(error, match=fragment):
        if classes is None:
            backend.detect(image)
        elif isinstance(classes, list) and len(classes) == 3:
            backend.detect(image, classes=classes, max_classes=2)
        else:
            backend.detect(image, classes=classes)


def test_max_classes_is_a_limit(backends: dict[str, Any]) -> None:
    limited = _tiny("owlvit", max_classes=2)
    with pytest.raises(LimitExceededError, match="max_classes"):
        limited.detect(hf_image(32, 32, 0), classes=["a", "b"], max_classes=3)  # per call cannot raise it
    with pytest.raises(LimitExceededError, match="max_classes"):
        _tiny("owlvit", max_classes=2, classes=["a", "b", "c"])  # a bad load-time list fails at load


def test_model_specific_name_checks(backends: dict[str, Any]) -> None:
    image = hf_image(32, 32, 0)
    with pytest.raises(InvalidPromptError, match="tokens"):
        backends["owlv2"].detect(image, classes=["a very long name " * 3])  # OWL reads 16 tokens per name
    with pytest.raises(InvalidPromptError, match="end of a name"):
        backends["grounding-dino"].detect(image, classes=["dog. cat"])  # "." splits Grounding DINO's prompt
    with pytest.raises(InvalidPromptError, match="at most"):
        backends["grounding-dino"].detect(image, classes=[f"thing {i}" for i in range(20)])
    with pytest.raises(InvalidPromptError, match="end of a name"):
        backends["omdet-turbo"].detect(image, classes=["dog, cat"])  # commas list OmDet-Turbo's task prompt
    with pytest.raises(InvalidOptionError, match="id2label"):
        _tiny("owlv2", id2label={0: "x"})


def test_threshold_and_clipping(backends: dict[str, Any]) -> None:
    image = hf_image(48, 64, 7)
    every = backends["owlv2"].detect(image, classes=NAMES)
    cut = float(np.median(every.confidence))
    fewer = backends["owlv2"].detect(image, classes=NAMES, threshold=cut, clip_boxes=True, max_detections=3)
    assert 0 < len(fewer) <= 3 and np.all(fewer.confidence > cut)
    assert (
        np.all(fewer.xyxy >= 0)
        and np.all(fewer.xyxy[:, [0, 2]] <= 64)
        and np.all(fewer.xyxy[:, [1, 3]] <= 48)
    )


def test_owl_input_size_per_call(backends: dict[str, Any]) -> None:
    """Another input size interpolates OWL's position embeddings: one box per patch, (48 / 8) ** 2 = 36."""
    image = hf_image(40, 60, 0)
    assert len(backends["owlv2"].detect(image, classes=NAMES)) == (32 // 8) ** 2
    assert len(backends["owlv2"].detect(image, classes=NAMES, image_size=48)) == (48 // 8) ** 2


def test_export_is_refused_clearly(backends: dict[str, Any]) -> None:
    from visionkit.export import ExportNotSupportedError, export_spec_of

    with pytest.raises(ExportNotSupportedError, match="text-prompted"):
        export_spec_of(backends["owlv2"])


# -- checkpoints in the official layout ------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_save_reload_official_layout(name: str, backends: dict[str, Any], tmp_path: Path) -> None:
    """``model.save_pretrained`` + ``processor.save_pretrained`` (what the Hub repos hold) load back the same."""
    backend = backends[name]
    backend.model.save_pretrained(tmp_path)
    backend.processor.save_pretrained(tmp_path)
    reloaded = load(name, weights=str(tmp_path), threshold=0.0, clip_boxes=False, max_detections=None)
    image = hf_image(48, 64, 8)
    a, b = reloaded.detect(image, classes=NAMES), backend.detect(image, classes=NAMES)
    assert a.class_name == b.class_name
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-4)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-6)
    assert a.metadata.weights == str(tmp_path)


def test_checkpoint_without_tokenizer_is_refused(backends: dict[str, Any], tmp_path: Path) -> None:
    backends["owlvit"].model.save_pretrained(tmp_path)  # the model only
    with pytest.raises(WeightsNotFoundError, match="processor"):
        load("owlvit", weights=str(tmp_path))


# -- the conformance kit ----------------------------------------------------------------------------
class _TextConformance(DetectorConformance):
    """The kit with the names given at load time (the kit calls ``detect(images)`` with no classes)."""

    option_overrides = ({"threshold": 0.95}, {"classes": ["cat"]})
    kind = ""
    threshold = 0.3

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Any:
        return _tiny(cls.kind, classes=["red", "green", "blue"], threshold=cls.threshold)


class TestOwlv2Conformance(_TextConformance):
    kind = "owlv2"


class TestOwlViTConformance(_TextConformance):
    kind = "owlvit"


class TestGroundingDinoConformance(_TextConformance):
    kind = "grounding-dino"

    def assert_close(self, a: Any, b: Any) -> None:
        """A forced batch (``batch_size`` > 1) pads the smaller image, like DETR: boxes move by < 0.25 px,
        scores by < 0.01 (measured on the tiny random model: < 0.01 px, 0.0011)."""
        assert type(a) is type(b) and a.metadata == b.metadata and a.class_name == b.class_name
        np.testing.assert_array_equal(a.class_id, b.class_id)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.25)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=0.01)

    def test_batch_of_dissimilar_images_equals_one_by_one(
        self, backend: Any, dissimilar_images: list[np.ndarray]
    ) -> None:
        """Padding next to a very different image moves random boxes across the threshold and flips near-tied
        names, so the default is one image per forward (``batch_size=1``): then a list equals one call each."""
        assert backend.options.batch_size == 1
        for got, image in zip(self.run(backend, dissimilar_images), dissimilar_images, strict=True):
            assert got == self.run(backend, image)


class TestMMGroundingDinoConformance(TestGroundingDinoConformance):
    kind = "mm-grounding-dino"
    threshold = 0.02  # its random head scores about 0.05


class TestOmDetTurboConformance(_TextConformance):
    """Random cosine class logits (x 14.3) saturate every score at 0.999, where float noise of a batch
    reorders near-ties; dot-product logits (a config option of the same model) keep scores apart."""

    kind = "omdet-turbo"

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Any:
        torch.manual_seed(0)
        return load(
            cls.kind,
            weights=None,
            classes=["red", "green", "blue"],
            threshold=cls.threshold,
            config={"class_distance_type": "dot"},
        )

    def assert_close(self, a: Any, b: Any) -> None:
        """On a blank image every random query scores alike (1e-6 apart), and a batch's float noise may swap
        such near-ties: compare the detections as sets (ordered by rounded score, name, box), to 1e-4."""

        def canonical(d: Any) -> Any:
            return d[np.lexsort((*d.xyxy.T[::-1], d.class_id, -np.round(d.confidence, 4)))]

        a, b = canonical(a), canonical(b)
        assert a.metadata == b.metadata and a.class_name == b.class_name
        np.testing.assert_allclose(a.xyxy, b.xyxy, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
