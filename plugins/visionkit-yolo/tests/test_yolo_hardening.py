"""Safe loading, limits, threads, padded (accelerator) batches and bf16 accuracy of the YOLO backends.

Tolerances of the padded-batch parity (the path cuda/mps take, forced on CPU with ``pad_batch=True``):
against ``ultralytics.YOLO.predict`` on the same list of images (which pads a mixed batch to one square
the same way) the same classes, boxes within 1 px and scores within 1e-3, as the single-image parity.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import visionkit
from visionkit.testing import make_test_image

BOX_TOL_PX = 1.0
SCORE_TOL = 1e-3


# -- safe loading ------------------------------------------------------------------------------------
class _Marker:
    """Unpickling this creates ``path``: stands in for a command a hostile checkpoint would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_malicious_checkpoint_is_refused_by_default(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Marker(marker), "train_args": {"task": "detect"}}, evil)
    with pytest.raises(visionkit.UnsafeWeightsError, match=r"trust_pickle=True") as err:
        visionkit.load("yolo", weights=evil)
    assert "evil.pt" in str(err.value) and "io.open" in str(err.value)
    assert not marker.exists(), "the checkpoint's pickle ran"
    # The opt-in really unpickles (so the file above is a real attack): the marker appears.
    with pytest.raises(visionkit.VisionKitError):
        visionkit.load("yolo", weights=evil, trust_pickle=True)
    assert marker.exists()


def test_malicious_model_yaml_is_refused_by_default(tmp_path: Path) -> None:
    from ultralytics.utils import ROOT

    marker = tmp_path / "pwned-yaml"
    text = (ROOT / "cfg" / "models" / "v8" / "yolov8.yaml").read_text()
    hostile = f'activation: open("{marker}", "w") and nn.SiLU()\n'
    cfg = tmp_path / "yolov8n-evil.yaml"
    cfg.write_text(text.replace("nc: 80", f"nc: 80\n{hostile}", 1))
    with pytest.raises(visionkit.UnsafeWeightsError, match=r"activation.*trust_pickle=True"):
        visionkit.load("yolo", weights=cfg, imgsz=64)
    assert not marker.exists(), "the yaml's activation was eval'ed"
    visionkit.load("yolo", weights=cfg, imgsz=64, trust_pickle=True)
    assert marker.exists()


def test_plain_torch_nn_activation_still_builds(tmp_path: Path) -> None:
    from ultralytics.utils import ROOT

    text = (ROOT / "cfg" / "models" / "v8" / "yolov8.yaml").read_text()
    cfg = tmp_path / "yolov8n-relu.yaml"
    cfg.write_text(text.replace("nc: 80", "nc: 80\nactivation: nn.LeakyReLU(0.1)", 1))
    det = visionkit.load("yolo", weights=cfg, imgsz=64)
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in det.model.modules())


@pytest.mark.real_weights
@pytest.mark.parametrize(("name", "backend"), [("yolov8n-dq.pt", "yolo"), ("yolov8n-seg-dq.pt", "yolo-seg")])
def test_real_checkpoints_load_under_the_safe_default(
    name: str, backend: str, weights_file: Callable[[str], Path], bus: np.ndarray
) -> None:
    det = visionkit.load(backend, weights=weights_file(name))
    assert det.options.trust_pickle is False
    assert det.detect(bus).class_name.count("person") >= 3


def test_trust_pickle_is_a_load_time_option(random_ckpts: dict[str, Path], bus: np.ndarray) -> None:
    det = visionkit.load("yolo", weights=random_ckpts["detect"], imgsz=64)
    assert det.options.trust_pickle is False  # the random test checkpoints load under the safe default
    with pytest.raises(visionkit.InvalidOptionError, match="'trust_pickle' applies when weights are loaded"):
        det.detect(bus, trust_pickle=True)


# -- limits --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(random_ckpts: dict[str, Path]) -> object:
    return visionkit.load("yolo", weights=random_ckpts["detect"], imgsz=64)


def test_imgsz_above_max_imgsz_is_refused_at_load() -> None:
    with pytest.raises(visionkit.LimitExceededError) as err:
        visionkit.load("yolo", weights=None, imgsz=5120)
    assert (err.value.limit, err.value.value, err.value.maximum) == ("max_imgsz", 5120, 2048)


@pytest.mark.parametrize("imgsz", [5120, 3_200_000_000])
def test_per_call_imgsz_is_bounded(imgsz: int, tiny: object, bus: np.ndarray) -> None:
    det = tiny
    with pytest.raises(visionkit.LimitExceededError, match="max_imgsz") as err:
        det.detect(bus, imgsz=imgsz)
    assert err.value.value == imgsz and err.value.maximum == 2048


def test_max_imgsz_is_raised_at_load_only(
    tiny: object, random_ckpts: dict[str, Path], bus: np.ndarray
) -> None:
    big = visionkit.load("yolo", weights=random_ckpts["detect"], imgsz=64, max_imgsz=4096)
    assert big.with_options({"imgsz": 4096}).imgsz == 4096  # checked, not run
    with pytest.raises(visionkit.LimitExceededError, match="max_imgsz"):
        tiny.detect(bus, max_imgsz=8192)  # type: ignore[attr-defined]


def test_max_det_has_a_ceiling(tiny: object, bus: np.ndarray) -> None:
    with pytest.raises(visionkit.LimitExceededError) as err:
        visionkit.load("yolo", weights=None, max_det=5000)
    assert (err.value.limit, err.value.maximum) == ("max_det", 1000)
    with pytest.raises(visionkit.LimitExceededError, match="max_det"):
        tiny.detect(bus, max_det=10**6)  # type: ignore[attr-defined]


# -- threads -------------------------------------------------------------------------------------------
def _stages(backend: object, image: np.ndarray) -> visionkit.Detections:
    """One call through the three stages, as a pipelining driver runs them (no predict-level lock)."""
    batch = backend.preprocess([image], backend.options)  # type: ignore[attr-defined]
    raw = backend.forward(batch.inputs)  # type: ignore[attr-defined]
    return backend.postprocess(raw, batch, visionkit.Task.DETECT)[0]  # type: ignore[attr-defined]


def test_concurrent_calls_equal_sequential(random_ckpts: dict[str, Path], bus: np.ndarray) -> None:
    det = visionkit.load("yolo", weights=random_ckpts["detect"], imgsz=128, conf=0.05)
    # distinct letterbox shapes: the anchors the head would cache differ from call to call
    images = [
        bus,
        np.ascontiguousarray(bus[:300]),
        make_test_image(240, 100, seed=1),
        make_test_image(seed=2),
    ]
    expected = [_stages(det, im) for im in images]
    assert len({r.metadata.input_shape for r in expected}) == len(images)
    errors: list[BaseException] = []
    wrong: list[int] = []
    start = threading.Barrier(4)

    def work(k: int) -> None:
        start.wait()
        for n in range(6):
            i = (k + n) % len(images)
            try:
                got = _stages(det, images[i]) if n % 2 else det.detect(images[i])
            except BaseException as exc:  # collected and reported below
                errors.append(exc)
                continue
            if got != expected[i]:
                wrong.append(i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:2]
    assert not wrong, f"{len(wrong)} of 24 concurrent calls differ from the sequential results"


# -- padded batches (the accelerator path, forced on CPU) -------------------------------------------
def _ultralytics_batch(weights: Path, images: list[np.ndarray], **kwargs: object) -> list[object]:
    from ultralytics import YOLO

    bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]
    return YOLO(str(weights)).predict(bgr, verbose=False, **kwargs)


def _assert_same(ours: visionkit.Detections, ref: object) -> None:
    boxes = ref.boxes  # type: ignore[attr-defined]
    assert len(ours) == len(boxes)
    np.testing.assert_array_equal(ours.class_id, boxes.cls.numpy().astype(np.int64))
    np.testing.assert_allclose(ours.xyxy, boxes.xyxy.numpy(), atol=BOX_TOL_PX, rtol=0)
    np.testing.assert_allclose(ours.confidence, boxes.conf.numpy(), atol=SCORE_TOL, rtol=0)


def _mixed(bus: np.ndarray) -> list[np.ndarray]:
    from ultralytics.utils import ASSETS

    zidane = visionkit.load_image(ASSETS / "zidane.jpg")  # landscape next to the portrait bus
    # downscaled: masks are built at the image resolution, and the test should stay quick
    return [np.ascontiguousarray(im[::3, ::3]) for im in (bus, zidane, bus[200:600])]


def test_padded_batch_matches_ultralytics_batch(random_ckpts: dict[str, Path], bus: np.ndarray) -> None:
    images = _mixed(bus)
    opts = {"imgsz": 160, "conf": 0.05}
    det = visionkit.load("yolo", weights=random_ckpts["detect"], **opts)
    padded = det.detect(images, pad_batch=True)
    assert {r.metadata.input_shape for r in padded} == {(160, 160)}  # one forward, one shape
    assert len({r.metadata.input_shape for r in det.detect(images, pad_batch=False)}) > 1
    refs = _ultralytics_batch(random_ckpts["detect"], images, **opts)
    assert sum(len(r) for r in padded) > 3
    for ours, ref in zip(padded, refs, strict=True):
        _assert_same(ours, ref)


def test_padded_batch_filters_and_segments(random_ckpts: dict[str, Path], bus: np.ndarray) -> None:
    images = _mixed(bus)
    opts = {"imgsz": 160, "conf": 0.05}
    det = visionkit.load("yolo", weights=random_ckpts["detect"], **opts)
    few = det.detect(images, pad_batch=True, max_det=2, classes=[0, 1, 2, 3, 4, 5], agnostic_nms=True)
    refs = _ultralytics_batch(
        random_ckpts["detect"], images, max_det=2, classes=[0, 1, 2, 3, 4, 5], agnostic_nms=True, **opts
    )
    for ours, ref in zip(few, refs, strict=True):
        assert len(ours) <= 2
        _assert_same(ours, ref)
    seg = visionkit.load("yolo-seg", weights=random_ckpts["segment"], **opts)
    masks = seg.segment_instances(images, pad_batch=True)
    refs = _ultralytics_batch(random_ckpts["segment"], images, retina_masks=True, **opts)
    for ours, ref in zip(masks, refs, strict=True):
        _assert_same(ours, ref)
        theirs = ref.masks.data.numpy().astype(bool) if ref.masks is not None else ours.mask  # type: ignore[attr-defined]
        for a, b in zip(ours.mask, theirs, strict=True):
            assert np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1) >= 0.98


def test_padded_batch_of_one_orientation_keeps_rect_shape(random_ckpts: dict[str, Path]) -> None:
    det = visionkit.load("yolo", weights=random_ckpts["detect"], imgsz=160, conf=0.05)
    wide = [make_test_image(90, 160, seed=1), make_test_image(120, 160, seed=2)]  # rect 96x160, 128x160
    assert {r.metadata.input_shape for r in det.detect(wide, pad_batch=True)} == {(128, 160)}


@pytest.mark.real_weights
def test_padded_batch_parity_real_weights(
    weights_file: Callable[[str], Path], coco_image: Callable[[str], Path], bus: np.ndarray
) -> None:
    path = weights_file("yolov8n-dq.pt")
    names = ("000000039769.png", "000000551780.jpg", "000000549055.jpg", "000000000802.jpg")
    images = [visionkit.load_image(coco_image(n)) for n in names] + [bus]
    padded = visionkit.load("yolo", weights=path, pad_batch=True).detect(images)
    for ours, ref in zip(padded, _ultralytics_batch(path, images), strict=True):
        assert len(ours) > 0
        _assert_same(ours, ref)


# -- bf16 keeps its accuracy ------------------------------------------------------------------------
@pytest.mark.real_weights
def test_bf16_boxes_stay_close_to_fp32(weights_file: Callable[[str], Path], bus: np.ndarray) -> None:
    """The decode tail stays fp32 under bf16, so boxes stay within 1 px of fp32 (2 px below conf 0.5).

    Measured on bus.jpg (1080 x 810): 0.14-0.42 px for the four confident boxes (0.73 px for a 0.27 one);
    with the decode in bf16 (plain autocast) 1.1-2.1 px (4.7 px).
    """
    path = weights_file("yolov8n-dq.pt")
    fp32 = visionkit.load("yolo", weights=path).detect(bus)
    bf16 = visionkit.load("yolo", weights=path, precision="bf16").detect(bus)
    assert len(fp32) >= 4
    for box, cls, conf in zip(fp32.xyxy, fp32.class_id, fp32.confidence, strict=True):
        same = bf16.xyxy[bf16.class_id == cls]
        assert len(same), f"class {cls} lost in bf16"
        err = float(np.abs(same - box).max(1).min())
        assert err < (1.0 if conf >= 0.5 else 2.0), f"bf16 box off by {err:.2f} px (conf {conf:.2f})"


@pytest.mark.real_weights
@pytest.mark.slow
def test_bf16_costs_at_most_0_003_ap(weights_file: Callable[[str], Path]) -> None:
    data = os.environ.get("VISIONKIT_DATA")
    if not data:
        pytest.skip("VISIONKIT_DATA is not set")
    coco = Path(data) / "coco-mini"
    path = weights_file("yolov8n-dq.pt")
    # Half of coco-mini keeps CI time in budget (bf16 is emulated, slowly, on CPUs without AVX512-BF16);
    # the whole set was measured: fp32 0.4134, bf16 0.4204 (docs/yolo.md).
    ap = {
        prec: visionkit.evaluate(
            "yolo",
            coco=coco / "instances.json",
            images=coco / "images",
            weights=path,
            precision=prec,
            limit=50,
        ).bbox.ap
        for prec in ("fp32", "bf16")
    }
    assert ap["fp32"] - ap["bf16"] <= 0.003, ap
