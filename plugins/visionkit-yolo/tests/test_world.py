"""YOLO-World and YOLOE (``yolo-world``, ``yoloe``): text-prompted detection through ultralytics, offline.

Ultralytics encodes class names with CLIP / MobileCLIP, whose weights download on first use. Here a
deterministic random text model stands in for ``ultralytics.nn.text_model`` (one fixed random unit vector
per name), so ultralytics' own ``set_classes`` / ``get_text_pe`` code runs on both sides: the reference
(``YOLOWorld(...).set_classes(names)`` / ``YOLOE(...).set_classes(names)`` then ``predict``) and visionkit's
default encoder path. Models are random inits of the official yamls saved as ultralytics checkpoints.

Parity tolerances (as for ``yolo``): same classes and names, boxes within 1 px, scores within 1e-3,
mask IoU >= 0.98 against ultralytics' ``retina_masks=True`` masks.
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import visionkit
from visionkit import InvalidOptionError, InvalidPromptError, LimitExceededError
from visionkit.testing import DetectorConformance, InstanceSegmenterConformance, make_test_image

torch = pytest.importorskip("torch")

BOX_TOL_PX = 1.0
SCORE_TOL = 1e-3
MASK_IOU = 0.98
IMGSZ = 320
BIAS = -2.0
SCALE = {"world": 3.0, "yoloe": -3.0}  # log logit scale: YOLO-World scores cosines, YOLOE raw dots
CONF = {"world": 0.2, "yoloe": 0.5}
CLASSES = ["red car", "person", "dog with a hat"]
VOCABULARY = ["cat", "bus", "person"]


class FakeTextModel:
    """Stands in for ultralytics' CLIP / MobileCLIP text model: one seeded random unit vector per name."""

    encoded: list[str] = []  # every name encoded, in order (the cache test reads it)

    def __init__(self, variant: str, device: Any = None) -> None:
        self.variant = variant

    @staticmethod
    def vector(name: str, dim: int = 512) -> Any:
        seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
        v = torch.randn(dim, generator=torch.Generator().manual_seed(seed))
        return v / v.norm()

    def tokenize(self, texts: list[str]) -> Any:
        FakeTextModel.encoded.extend(texts)
        self._texts = list(texts)
        return torch.arange(len(texts))[:, None]  # row i names texts[i]

    def encode_text(self, tokens: Any, dtype: Any = None) -> Any:
        return torch.stack([self.vector(self._texts[int(i)]) for i in tokens[:, 0]])


def fake_encoder(names: list[str]) -> Any:
    """The same vectors as a visionkit ``text_encoder``."""
    return torch.stack([FakeTextModel.vector(n) for n in names])


@pytest.fixture(scope="module", autouse=True)
def offline_text_model() -> Iterator[None]:
    module = types.ModuleType("ultralytics.nn.text_model")
    module.build_text_model = FakeTextModel  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "ultralytics.nn.text_model", module)
        yield


def _calibrate_batchnorm(model: Any) -> None:
    """Fit every BatchNorm's statistics to real activations (bus.jpg), as training would.

    A fresh init keeps BatchNorm's unit statistics, so activations shrink layer after layer: every anchor
    then gets the same box and score, NMS decides between exact ties, and masks sit at logit 0. With fitted
    statistics each layer outputs unit-variance features and the random model gives distinct detections.
    """
    from ultralytics.utils import ASSETS

    image = visionkit.load_image(ASSETS / "bus.jpg")
    x = torch.from_numpy(np.ascontiguousarray(image[::3, ::3])).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(320, 256), mode="bilinear")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration pass
    model.train()
    with torch.no_grad():
        model(torch.cat([x, x.flip(-1)]))
    model.eval()


def _save(yaml: str, path: Path, vocabulary: list[str] | None = None) -> Path:
    """The plugin's seeded random model for ``yaml`` as an ultralytics checkpoint both sides load."""
    from visionkit_yolo._world import _build_from_yaml

    family = "world" if "world" in yaml else "yoloe"
    model: Any = _build_from_yaml(yaml, family, trust=True)
    _calibrate_batchnorm(model)
    head = model.model[-1]
    if family == "yoloe":  # YOLOE's text projection starts as the identity (zero-init w3): make it count
        torch.nn.init.normal_(head.reprta.m.w3.weight, std=0.05)
    for contrastive in head.cv4:
        contrastive.bias.data[:] = BIAS
        contrastive.logit_scale.data.fill_(SCALE[family])
    if vocabulary is not None:  # as ultralytics saves a model after set_classes (offline text model)
        model.set_classes(vocabulary)
        model.names = dict(enumerate(vocabulary))
    torch.save({"model": model, "train_args": {"imgsz": IMGSZ, "task": model.task}}, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("open-vocab")
    return {
        "world": _save("yolov8n-worldv2.yaml", root / "world.pt", vocabulary=VOCABULARY),
        "yoloe": _save("yoloe-11n-seg.yaml", root / "yoloe.pt"),
        "yoloe26": _save("yoloe-26n-seg.yaml", root / "yoloe26.pt"),  # end-to-end head, MobileCLIP2
    }


@pytest.fixture(scope="module")
def world(ckpts: dict[str, Path]) -> Any:
    return visionkit.load("yolo-world", weights=ckpts["world"], conf=CONF["world"])


@pytest.fixture(scope="module")
def yoloe(ckpts: dict[str, Path]) -> Any:
    return visionkit.load("yoloe", weights=ckpts["yoloe"], conf=CONF["yoloe"])


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


def assert_boxes_match(ours: visionkit.Detections, ref: Any, names: list[str]) -> None:
    """Same detections within the tolerances, in the same order up to ties.

    Random heads give many near-equal scores; NMS may order rows whose scores differ by float noise either
    way, so each of ours is matched to an unused reference row of the same class, score and box.
    """
    boxes = ref.boxes
    assert len(ours) == len(boxes) > 0, f"{len(ours)} detections vs ultralytics' {len(boxes)}"
    assert tuple(ref.names[i] for i in range(len(names))) == tuple(names)
    xyxy, conf, cls = boxes.xyxy.numpy(), boxes.conf.numpy(), boxes.cls.numpy().astype(np.int64)
    used = np.zeros(len(boxes), bool)
    for i in range(len(ours)):
        fits = (
            ~used
            & (cls == ours.class_id[i])
            & (np.abs(conf - ours.confidence[i]) <= SCORE_TOL)
            & np.all(np.abs(xyxy - ours.xyxy[i]) <= BOX_TOL_PX, axis=1)
        )
        assert fits.any(), f"detection {i} {ours[i : i + 1]} has no counterpart in ultralytics' results"
        used[np.flatnonzero(fits)[0]] = True
    np.testing.assert_allclose(ours.confidence, conf, atol=SCORE_TOL, rtol=0)  # same ranking
    assert ours.class_name == tuple(names[int(c)] for c in ours.class_id)


# -- parity with ultralytics -----------------------------------------------------------------------------
def test_world_matches_ultralytics_after_set_classes(
    world: Any, ckpts: dict[str, Path], bus: np.ndarray
) -> None:
    from ultralytics import YOLOWorld

    ref_model = YOLOWorld(str(ckpts["world"]))
    ref_model.set_classes(CLASSES)  # ultralytics' own code, with the offline text model
    ref = ref_model.predict(_bgr(bus), imgsz=IMGSZ, conf=CONF["world"], verbose=False)[0]
    ours = world.detect(bus, classes=CLASSES)
    assert_boxes_match(ours, ref, CLASSES)
    assert set(ours.class_id.tolist()) <= set(range(len(CLASSES)))


@pytest.mark.parametrize(("key", "conf"), [("yoloe", CONF["yoloe"]), ("yoloe26", 0.3)])
def test_yoloe_matches_ultralytics_boxes_and_masks(
    key: str, conf: float, yoloe: Any, ckpts: dict[str, Path], bus: np.ndarray
) -> None:
    from ultralytics import YOLOE

    ref_model = YOLOE(str(ckpts[key]))
    ref_model.set_classes(CLASSES)  # get_text_pe (MobileCLIP stand-in + YOLOE's text projection)
    ref = ref_model.predict(_bgr(bus), imgsz=IMGSZ, conf=conf, retina_masks=True, verbose=False)[0]
    model = yoloe if key == "yoloe" else visionkit.load("yoloe", weights=ckpts[key], conf=conf)
    ours = model.segment_instances(bus, classes=CLASSES)
    assert_boxes_match(ours, ref, CLASSES)
    theirs = ref.masks.data.numpy().astype(bool)
    assert ours.mask.shape == theirs.shape
    for i, (a, b) in enumerate(zip(ours.mask, theirs, strict=True)):
        iou = np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)
        assert iou >= MASK_IOU, f"mask {i}: IoU {iou:.4f} < {MASK_IOU}"


def test_padded_batch_names_the_asked_classes(yoloe: Any, bus: np.ndarray) -> None:
    """The one-NMS batch path (pad_batch, the GPU default) reads the call's names, not class ids."""
    images = [bus, np.ascontiguousarray(bus[:600, :500])]
    padded = yoloe.segment_instances(images, classes=CLASSES, pad_batch=True)
    assert len(padded) == 2
    for result, image in zip(padded, images, strict=True):
        assert len(result) > 0 and result.mask.shape[1:] == image.shape[:2]
        assert result.class_name == tuple(CLASSES[i] for i in result.class_id)


def test_checkpoint_vocabulary_is_used_without_classes(
    world: Any, ckpts: dict[str, Path], bus: np.ndarray
) -> None:
    from ultralytics import YOLOWorld

    assert world.vocabulary == tuple(VOCABULARY)
    ref = YOLOWorld(str(ckpts["world"])).predict(_bgr(bus), imgsz=IMGSZ, conf=CONF["world"], verbose=False)[0]
    assert_boxes_match(world.detect(bus), ref, VOCABULARY)


# -- the text cache and the encoder hook -----------------------------------------------------------------
def test_names_are_encoded_once_and_cached(yoloe: Any) -> None:
    image = make_test_image(96, 128)
    FakeTextModel.encoded.clear()
    first = yoloe.detect(image, classes=["zebra", "kite"], conf=0.001)
    assert FakeTextModel.encoded == ["zebra", "kite"]
    again = yoloe.detect(image, classes=["zebra", "kite"], conf=0.001)
    assert FakeTextModel.encoded == ["zebra", "kite"]  # same classes: no encoder run
    assert again == first
    yoloe.detect(image, classes=["kite", "tram"], conf=0.001)
    assert FakeTextModel.encoded == ["zebra", "kite", "tram"]  # only the new name


def test_text_encoder_hook_gives_the_same_embeddings(ckpts: dict[str, Path], bus: np.ndarray) -> None:
    hooked = visionkit.load("yolo-world", weights=ckpts["world"], conf=CONF["world"])
    default = hooked.text_embeddings(CLASSES)
    calls: list[list[str]] = []

    def encoder(names: list[str]) -> np.ndarray:
        calls.append(names)
        return fake_encoder(names).numpy()

    hooked.text_encoder = encoder  # drops the cached embeddings of the default encoder
    torch.testing.assert_close(hooked.text_embeddings(CLASSES), default)
    assert calls == [CLASSES]
    with pytest.raises(InvalidOptionError, match="text_encoder"):
        hooked.text_encoder = "clip"


# -- errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "classes, error, message",
    [
        (None, InvalidPromptError, r"pass classes=\["),
        ([], InvalidPromptError, "classes is empty"),
        ("dog", InvalidOptionError, "valid list"),
        (["dog", " "], InvalidPromptError, "is not a name"),
        (["a", "b", "c"], LimitExceededError, "max_classes"),
    ],
)
def test_bad_classes_are_typed_errors(yoloe: Any, classes: Any, error: type, message: str) -> None:
    image = make_test_image(64, 64)
    with pytest.raises(error, match=message):
        yoloe.detect(image, max_classes=2, **({} if classes is None else {"classes": classes}))


def test_wrong_weights_are_refused(random_ckpts: dict[str, Path], ckpts: dict[str, Path]) -> None:
    with pytest.raises(InvalidOptionError, match="not a WorldModel"):
        visionkit.load("yolo-world", weights=random_ckpts["detect"])
    with pytest.raises(InvalidOptionError, match="YOLOE"):
        visionkit.load("yoloe", weights="yolov8n-worldv2.yaml")
    with pytest.raises(InvalidOptionError, match="ONNX export"):
        visionkit.load("yolo-world", weights="model.onnx")


def test_missing_text_encoder_library_is_named(ckpts: dict[str, Path]) -> None:
    pytest.importorskip("ultralytics")
    try:
        import clip  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the clip package is installed here: the download, not the import, would fail")
    det = visionkit.load("yoloe", weights=ckpts["yoloe"])
    with pytest.MonkeyPatch.context() as mp:
        mp.delitem(sys.modules, "ultralytics.nn.text_model")  # the real module: `import clip` fails
        with pytest.raises(visionkit.BackendUnavailableError, match="clip"):
            det.detect(make_test_image(64, 64), classes=["dog"])


def test_registered_as_text_prompted() -> None:
    for name in ("yolo-world", "yoloe"):
        spec = visionkit.get_registry().get(name)
        assert spec.prompt_types == ("text",), name


# -- conformance -------------------------------------------------------------------------------------------
class _BatchNoise:
    """One image alone or in a batch runs different oneDNN kernels: allow 0.01 px / 1e-3 of float noise.

    The calibrated random model's features are large (unit variance at every layer), so reassociated sums
    move boxes by ~2e-3 px and YOLO-World's scaled cosines by ~4e-4, above the kit's default 1e-3 / 1e-4.
    """

    def assert_close(self, a: Any, b: Any) -> None:
        assert type(a) is type(b) and len(a) == len(b), f"{len(a)} vs {len(b)} detections"
        assert a.class_name == b.class_name and a.metadata == b.metadata
        np.testing.assert_array_equal(a.class_id, b.class_id)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.01, rtol=0)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=SCORE_TOL, rtol=0)
        if isinstance(a, visionkit.InstanceMasks):
            assert np.mean(a.mask != b.mask) < 1e-3, "masks differ beyond a sliver of boundary pixels"


class TestWorldConformance(_BatchNoise, DetectorConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, ckpts: dict[str, Path]) -> Any:
        det = visionkit.load("yolo-world", weights=ckpts["world"], classes=CLASSES, imgsz=160)
        assert isinstance(det, visionkit.TextPromptedDetector)
        return det


class TestYoloeConformance(_BatchNoise, InstanceSegmenterConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, ckpts: dict[str, Path]) -> Any:
        det = visionkit.load("yoloe", weights=ckpts["yoloe"], classes=CLASSES, imgsz=160)
        assert isinstance(det, visionkit.TextPromptedDetector)
        return det
