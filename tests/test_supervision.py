"""supervision interop: lossless round trips, clear errors, and supervision's annotators on our results."""

from __future__ import annotations

import builtins
import sys
from typing import Any

import numpy as np
import pytest

from visionkit import BackendUnavailableError, InvalidOptionError
from visionkit.results import Classifications, Detections, InstanceMasks, ResultMeta
from visionkit.testing.fakes import FakeInstanceSegmenter

sv = pytest.importorskip(
    "supervision", reason="supervision interop needs supervision (visionkit[supervision])"
)


def _dets(with_tracker: bool = True) -> Detections:
    fields: dict[str, Any] = {
        "xyxy": np.array([[1, 2, 30, 40], [5.5, 6.25, 7.5, 9]], np.float32),
        "confidence": np.array([0.9, 0.3], np.float32),
        "class_id": np.array([0, 7], np.int64),
        "class_name": ("person", "truck"),
        "data": {"mask_score": np.array([0.5, 0.25], np.float32)},
        "metadata": ResultMeta(image_shape=(48, 64), backend="yolo", imgsz=640, label_space="coco80"),
    }
    if with_tracker:
        if "tracker_id" in Detections.model_fields:
            fields["tracker_id"] = np.array([3, 11], np.int64)
        else:
            fields["data"]["tracker_id"] = np.array([3, 11], np.int64)
    return Detections(**fields)


def test_detections_round_trip_is_lossless() -> None:
    dets = _dets()
    out = dets.to_supervision()
    assert isinstance(out, sv.Detections)
    assert out.tracker_id is not None and out.tracker_id.tolist() == [3, 11]
    assert out.data["class_name"].tolist() == ["person", "truck"]
    assert out.metadata["image_shape"] == (48, 64) and out.metadata["imgsz"] == 640
    assert out.xyxy.flags.writeable  # supervision code may write; our arrays stay read-only
    back = Detections.from_supervision(out)
    assert type(back) is Detections
    assert back == dets
    assert back.metadata == dets.metadata
    # also through JSON: nothing the bridge adds breaks serialisation
    assert Detections.from_json(back.to_json()) == dets


def test_instance_masks_round_trip_keeps_masks() -> None:
    base = _dets(with_tracker=False)
    mask = np.zeros((2, 48, 64), bool)
    mask[0, 2:40, 1:30] = True
    mask[1, 6:9, 5:8] = True
    inst = InstanceMasks(**{k: getattr(base, k) for k in Detections.model_fields}, mask=mask)
    out = inst.to_supervision()
    assert out.mask is not None and out.mask.shape == (2, 48, 64)
    assert out.tracker_id is None
    back = InstanceMasks.from_supervision(out)
    assert type(back) is InstanceMasks and back == inst
    # Detections.from_supervision keeps masks too (an InstanceMasks), unless masks=False
    assert type(Detections.from_supervision(out)) is InstanceMasks
    assert type(Detections.from_supervision(out, masks=False)) is Detections
    with pytest.raises(InvalidOptionError, match="needs detections with masks"):
        InstanceMasks.from_supervision(base.to_supervision())


def test_empty_detections_round_trip() -> None:
    empty = Detections.empty((10, 20), backend="fake")
    assert Detections.from_supervision(empty.to_supervision()) == empty
    empty_masks = InstanceMasks.empty((10, 20))
    assert InstanceMasks.from_supervision(empty_masks.to_supervision()) == empty_masks


def test_classifications_round_trip_needs_names() -> None:
    cls = Classifications(
        class_id=np.array([4, 1, 2], np.int64),
        confidence=np.array([0.7, 0.2, 0.1], np.float32),
        class_name=("e", "b", "c"),
        metadata=ResultMeta(image_shape=(224, 224), backend="resnet18"),
    )
    out = cls.to_supervision()
    assert isinstance(out, sv.Classifications) and out.class_id.tolist() == [4, 1, 2]
    names = ["a", "b", "c", "d", "e"]
    back = Classifications.from_supervision(out, class_names=names, metadata=cls.metadata.model_dump())
    assert back == cls
    # supervision's get_top_k order need not be ours: we sort, most confident first
    shuffled = sv.Classifications(class_id=np.array([1, 4]), confidence=np.array([0.2, 0.7]))
    again = Classifications.from_supervision(shuffled, class_names={1: "b", 4: "e"}, image_shape=(8, 8))
    assert again.class_name == ("e", "b") and again.top1[0] == 4
    with pytest.raises(InvalidOptionError, match=r"no name for class ids \[4\]"):
        Classifications.from_supervision(out, class_names=["a", "b", "c"], image_shape=(8, 8))
    with pytest.raises(InvalidOptionError, match="image_shape"):
        Classifications.from_supervision(out, class_names=names)


def test_from_foreign_supervision_detections() -> None:
    """Detections made by supervision itself: names from class_names, size from image_shape, no confidence."""
    foreign = sv.Detections(
        xyxy=np.array([[0, 0, 4, 4]], np.float64), class_id=np.array([2]), tracker_id=np.array([9])
    )
    with pytest.raises(InvalidOptionError, match=r"pass image_shape=\(height, width\)"):
        Detections.from_supervision(foreign, class_names=["a", "b", "c"])
    with pytest.raises(InvalidOptionError, match="no data\\['class_name'\\]"):
        Detections.from_supervision(foreign, image_shape=(8, 8))
    dets = Detections.from_supervision(foreign, class_names=["a", "b", "c"], image_shape=(8, 8))
    assert dets.class_name == ("c",) and dets.confidence.tolist() == [1.0]
    assert dets.xyxy.dtype == np.float32 and dets.image_shape == (8, 8)
    tracker = getattr(dets, "tracker_id", None)
    assert (tracker if tracker is not None else dets.data["tracker_id"]).tolist() == [9]
    agnostic = sv.Detections(xyxy=np.array([[0, 0, 4, 4]], np.float32), confidence=np.array([0.5]))
    with pytest.raises(InvalidOptionError, match="no class_id"):
        Detections.from_supervision(agnostic, image_shape=(8, 8))


def test_compact_masks_are_decoded() -> None:
    from supervision.detection.compact_mask import CompactMask

    mask = np.zeros((1, 16, 16), bool)
    mask[0, 3:9, 4:12] = True
    xyxy = np.array([[4, 3, 12, 9]], np.float32)
    compact = CompactMask.from_dense(mask, xyxy, image_shape=(16, 16))
    foreign = sv.Detections(
        xyxy=xyxy,
        mask=compact,
        confidence=np.array([0.8], np.float32),
        class_id=np.array([0]),
        data={"class_name": np.array(["cat"])},
    )
    inst = InstanceMasks.from_supervision(foreign)
    assert inst.image_shape == (16, 16) and np.array_equal(inst.mask, mask)


def test_supervision_annotators_draw_visionkit_results() -> None:
    image = np.full((64, 80, 3), 90, np.uint8)
    image[10:40, 12:44] = (220, 30, 30)
    image[30:60, 50:76] = (30, 210, 40)
    result = FakeInstanceSegmenter().segment_instances(image)
    assert len(result) == 2
    dets = result.to_supervision()
    scene = image[:, :, ::-1].copy()  # supervision draws on BGR frames, like OpenCV
    scene = sv.MaskAnnotator().annotate(scene, dets)
    scene = sv.BoxAnnotator(thickness=1).annotate(scene, dets)
    scene = sv.LabelAnnotator(text_scale=0.3, text_padding=1).annotate(scene, dets)
    assert scene.shape == image.shape
    changed = np.any(scene != image[:, :, ::-1], axis=-1)
    for x1, y1, x2, y2 in result.xyxy.astype(int):  # every box got a drawn outline
        assert changed[y1, x1:x2].any() and changed[y1:y2, x1].any()
    # the mask annotator tinted inside each mask, not only the outline
    assert changed[20:30, 20:35].all()


def test_missing_supervision_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "supervision" or name.startswith("supervision."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "supervision")
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'visionkit-core\[supervision\]'"):
        _dets().to_supervision()
