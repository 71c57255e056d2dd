"""Result types: validation, immutability, equality, indexing, JSON and dict round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from visionkit import Classifications, Detections, InstanceMasks, PromptMasks, ResultMeta, SemanticMask


def dets(n: int = 3) -> Detections:
    xyxy = np.array([[0, 0, 10, 10], [5, 5, 20, 25], [1, 2, 3, 4]], np.float32)[:n]
    return Detections(
        xyxy=xyxy,
        confidence=np.array([0.9, 0.4, 0.7], np.float32)[:n],
        class_id=np.array([0, 2, 0])[:n],
        class_name=("person", "car", "person")[:n],
        data={"track": np.arange(n)},
        metadata={"image_shape": (30, 40), "backend": "test"},
    )


def test_arrays_are_validated_cast_and_read_only() -> None:
    d = dets()
    assert d.xyxy.dtype == np.float32 and d.class_id.dtype == np.int64
    with pytest.raises(ValueError, match="read-only"):
        d.xyxy[0, 0] = 5
    src = np.zeros((1, 4), np.float64)
    d2 = Detections(xyxy=src, confidence=[0.5], class_id=[1], class_name=("a",), metadata=(5, 5))
    src[0, 0] = 3  # the caller's array is copied, not aliased
    assert d2.xyxy[0, 0] == 0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"xyxy": np.zeros((3, 5))}, r"must have shape \(n, 4\), but got shape \(3, 5\)"),
        ({"class_id": np.array([0.5, 1.0, 2.0])}, "must have dtype int64, but got dtype float64"),
        ({"confidence": [0.1, 0.2]}, "confidence must have 3 items"),
        ({"class_name": ("a",)}, "class_name must have 3 items"),
        ({"xyxy": [[10, 0, 0, 10]] * 3}, "x2 >= x1"),
        ({"confidence": [np.nan, 0, 0]}, "finite"),
        ({"data": {"track": np.arange(2)}}, r"data\['track'\] must have 3 items"),
    ],
)
def test_invalid_results_say_what_is_wrong(change: dict, message: str) -> None:
    fields = dict(dets().model_dump(), **change)
    with pytest.raises(ValidationError, match=message):
        Detections(**fields)


def test_equality_by_value_and_unhashable() -> None:
    assert dets() == dets()
    assert dets() != dets(2)
    with pytest.raises(TypeError):
        hash(dets())


def test_indexing_filtering_len_iter() -> None:
    d = dets()
    high = d[d.confidence > 0.5]
    assert len(high) == 2 and high.class_name == ("person", "person")
    assert high.data["track"].tolist() == [0, 2]
    assert d[1].class_name == ("car",) and len(d[-1]) == 1
    assert len(d[:2]) == 2 and d[[2, 0]].confidence.tolist() == pytest.approx([0.7, 0.9])
    with pytest.raises(IndexError, match="out of range"):
        d[3]
    with pytest.raises(IndexError, match="boolean index must have shape"):
        d[np.array([True, False])]
    first = next(iter(d))
    assert first.class_name == "person" and first.xyxy == (0.0, 0.0, 10.0, 10.0)
    assert d.area.tolist() == [100.0, 300.0, 4.0]


def test_empty() -> None:
    e = Detections.empty((30, 40), backend="x")
    assert len(e) == 0 and e.is_empty() and e.image_shape == (30, 40)
    m = InstanceMasks.empty((30, 40))
    assert m.mask.shape == (0, 30, 40)
    assert Detections.from_json(e.to_json()) == e


def test_json_and_dict_round_trip_all_types() -> None:
    mask = np.zeros((3, 30, 40), bool)
    mask[0, :5, :5] = True
    inst = InstanceMasks(**dets().model_dump(), mask=mask)
    sem = SemanticMask(
        label_map=np.random.default_rng(0).integers(0, 3, (30, 40)),
        class_names=("bg", "a", "b"),
        scores=np.random.default_rng(0).random((3, 30, 40)),
        metadata=(30, 40),
    )
    cls = Classifications(class_id=[3, 1], confidence=[0.7, 0.2], class_name=("x", "y"), metadata=(30, 40))
    prm = PromptMasks(
        mask=mask,
        score=[0.9, 0.8, 0.1],
        prompt_index=[0, 0, 0],
        logits=np.zeros((3, 8, 8)),
        metadata=(30, 40),
    )
    for r in (dets(), inst, sem, cls, prm):
        assert type(r).from_json(r.to_json()) == r
        assert type(r).from_dict(r.to_dict()) == r
    assert '"packbits"' in inst.to_json()  # masks are bit-packed, not a list of booleans
    assert inst.as_detections() == dets()


def test_instance_masks_must_match_image_resolution() -> None:
    with pytest.raises(ValidationError, match=r"mask must be \(n, 30, 40\)"):
        InstanceMasks(**dets().model_dump(), mask=np.zeros((3, 15, 20), bool))


def test_semantic_and_classification_checks() -> None:
    with pytest.raises(ValidationError, match=r"label_map values must be in \[0, 2\)"):
        SemanticMask(label_map=np.full((2, 2), 5), class_names=("a", "b"), metadata=(2, 2))
    with pytest.raises(ValidationError, match="sorted"):
        Classifications(class_id=[1, 2], confidence=[0.1, 0.9], class_name=("a", "b"), metadata=(2, 2))
    sem = SemanticMask(label_map=[[0, 1], [1, 1]], class_names=("bg", "cat"), metadata=(2, 2))
    assert sem.mask("cat").sum() == 3 and sem.present_classes() == ["bg", "cat"]
    cls = Classifications(class_id=[3, 1], confidence=[0.7, 0.2], class_name=("x", "y"), metadata=(2, 2))
    assert cls.top1 == (3, "x", pytest.approx(0.7))


def test_prompt_masks_best_per_prompt() -> None:
    mask = np.zeros((4, 5, 5), bool)
    p = PromptMasks(mask=mask, score=[0.2, 0.9, 0.5, 0.4], prompt_index=[0, 0, 1, 1], metadata=(5, 5))
    best = p.best()
    assert best.score.tolist() == pytest.approx([0.9, 0.5]) and best.prompt_index.tolist() == [0, 1]


def test_metadata_is_extensible_and_compared() -> None:
    m = ResultMeta(image_shape=(3, 4), backend="b", label_space="coco91")
    assert m.model_extra == {"label_space": "coco91"}
    assert m != ResultMeta(image_shape=(3, 4), backend="b")
