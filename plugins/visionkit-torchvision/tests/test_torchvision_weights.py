"""Weights resolution (torchvision enums, TORCH_HOME, VISIONKIT_WEIGHTS, .pth files) and every error path."""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torchvision.models import get_model, get_model_weights
from visionkit_torchvision._backend import load_lraspp

import visionkit
from visionkit import BackendError, InvalidOptionError, UnsafeWeightsError, WeightsNotFoundError
from visionkit.export import export_spec_of
from visionkit.testing import make_test_image

LRASPP = "lraspp_mobilenet_v3_large"
LRASPP_FILE = "lraspp_mobilenet_v3_large-d234d4ea.pth"  # the official checkpoint's file name
IMAGE = make_test_image(64, 80, seed=2)


@pytest.fixture(scope="module")
def lraspp_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(11)
    return get_model(LRASPP, weights=None, weights_backbone=None, num_classes=21).state_dict()


def _same_weights(backend: object, state: dict[str, torch.Tensor]) -> bool:
    ours = backend.model.state_dict()  # type: ignore[attr-defined]
    return ours.keys() == state.keys() and all(torch.equal(ours[k], v) for k, v in state.items())


# -- torchvision weights enums ----------------------------------------------------------------------
def test_enum_weights_from_torchvision_cache(
    tv_isolated: Path, lraspp_state: dict[str, torch.Tensor]
) -> None:
    cached = tv_isolated / "hub" / "checkpoints" / LRASPP_FILE
    cached.parent.mkdir(parents=True)
    torch.save(lraspp_state, cached)
    backend = visionkit.load("lraspp", resize_size=64)  # default weights: COCO_WITH_VOC_LABELS_V1, offline
    assert _same_weights(backend, lraspp_state)
    assert "COCO_WITH_VOC_LABELS_V1" in backend.weights_source and str(cached) in backend.weights_source
    assert backend.categories == tuple(get_model_weights(LRASPP).DEFAULT.meta["categories"])
    assert backend.segment_semantic(IMAGE).class_names[15] == "person"


def test_enum_weights_from_visionkit_weights_dir(
    tv_isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lraspp_state: dict[str, torch.Tensor]
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    torch.save(lraspp_state, store / LRASPP_FILE)
    monkeypatch.setenv("VISIONKIT_WEIGHTS", str(store))
    for name in (
        "DEFAULT",
        "COCO_WITH_VOC_LABELS_V1",
        "LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
    ):
        assert _same_weights(visionkit.load("lraspp", weights=name), lraspp_state), name


def test_official_file_by_path_is_built_like_torchvision(
    tmp_path: Path, lraspp_state: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / LRASPP_FILE
    torch.save(lraspp_state, path)
    backend = visionkit.load("lraspp", weights=path)
    assert _same_weights(backend, lraspp_state)
    assert backend.weights_member.name == "COCO_WITH_VOC_LABELS_V1"


def test_offline_enum_weights_raise_weights_not_found(tv_isolated: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        visionkit.load("lraspp")
    msg = str(info.value)
    assert LRASPP_FILE in msg and "TORCH_HOME" in msg and "offline" in msg
    assert "VISIONKIT_WEIGHTS (not set)" in msg and "weights=None" in msg


def test_failed_download_is_translated(tv_isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VISIONKIT_OFFLINE")

    def unreachable(url: str, dst: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no route to download.pytorch.org")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(WeightsNotFoundError, match=r"failed: URLError.*no route") as info:
        visionkit.load("resnet50")
    assert "resnet50-11ad3fa6.pth" in str(info.value) and "https://download.pytorch.org" in str(info.value)


def test_unknown_weights_name_lists_torchvision_names(tv_isolated: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="COCO_WITH_VOC_LABELS_V1, DEFAULT"):
        visionkit.load("lraspp", weights="COCO_V9")


def test_weights_of_another_model_are_refused() -> None:
    with pytest.raises(
        InvalidOptionError, match=r"belong to another model.*LRASPP_MobileNet_V3_Large_Weights"
    ):
        visionkit.load("lraspp", weights="ResNet50_Weights.IMAGENET1K_V2")
    resnet = get_model_weights("resnet50").IMAGENET1K_V1
    with pytest.raises(InvalidOptionError, match="belong to another model"):
        load_lraspp(weights=resnet)


# -- .pth files ---------------------------------------------------------------------------------------
def test_custom_categories_with_random_init_and_checkpoint(tmp_path: Path) -> None:
    names = ["bg", "road", "car"]
    torch.manual_seed(3)
    backend = visionkit.load("lraspp", weights=None, categories=names, resize_size=64)
    assert backend.model.classifier.high_classifier.out_channels == 3
    result = backend.segment_semantic(IMAGE)
    assert result.class_names == tuple(names) and result.metadata.label_space == "custom"
    path = tmp_path / "roads.pth"
    torch.save({"model": backend.model.state_dict(), "epoch": 3}, path)  # torchvision references' checkpoint
    reloaded = visionkit.load("lraspp", weights=path, categories=names, resize_size=64)
    assert reloaded.segment_semantic(IMAGE) == result
    with pytest.raises(
        BackendError, match=r"does not fit backend 'lraspp' built with 21 classes.*categories="
    ):
        visionkit.load("lraspp", weights=path)


def test_checkpoint_without_batchnorm_counters_loads(tmp_path: Path) -> None:
    """Checkpoints trained with FrozenBatchNorm2d have no num_batches_tracked entries."""
    torch.manual_seed(4)
    model = get_model("mobilenet_v3_large", weights=None)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "frozen_bn.pth"
    torch.save(state, path)
    backend = visionkit.load("mobilenet_v3_large", weights=path)
    assert all(torch.equal(backend.model.state_dict()[k], v) for k, v in state.items())


def test_checkpoint_file_found_in_visionkit_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lraspp_state: dict[str, torch.Tensor]
) -> None:
    torch.save(lraspp_state, tmp_path / "mine.pth")
    monkeypatch.setenv("VISIONKIT_WEIGHTS", str(tmp_path))
    assert _same_weights(visionkit.load("lraspp", weights="mine.pth"), lraspp_state)


def test_missing_checkpoint_file(tv_isolated: Path) -> None:
    with pytest.raises(
        WeightsNotFoundError,
        match=r"(?s)'nope\.pth' not found.*torchvision weights names for resnet50: IMAGENET1K_V1",
    ):
        visionkit.load("resnet50", weights="nope.pth")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"definitely not a torch file", "Could not read"),
        ([1, 2, 3], "holds a list, but a state dict"),
        ({"model": {"a": 1}}, "holds a dict, but a state dict"),
    ],
)
def test_files_that_are_not_state_dicts(tmp_path: Path, content: object, fragment: str) -> None:
    path = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(BackendError, match=fragment):
        visionkit.load("lraspp", weights=path)


class _Pickled:
    pass


def test_pickled_code_is_refused_by_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "code.pth"
    torch.save({"evil": _Pickled()}, path)
    with pytest.raises(UnsafeWeightsError, match=r"weights_only=True"):
        visionkit.load("lraspp", weights=path)


def test_categories_must_match_torchvision_weights(
    tmp_path: Path, lraspp_state: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / LRASPP_FILE
    torch.save(lraspp_state, path)
    with pytest.raises(
        InvalidOptionError, match=r"categories lists 2 names, but weights .* predict 21 classes"
    ):
        visionkit.load("lraspp", weights=path, categories=["a", "b"])
    renamed = [f"c{i}" for i in range(21)]
    assert visionkit.load("lraspp", weights=path, categories=renamed).categories == tuple(renamed)


# -- options and errors -------------------------------------------------------------------------------
def test_generic_backends_need_a_known_arch() -> None:
    with pytest.raises(InvalidOptionError, match=r"needs arch=.*available: .*efficientnet_b0"):
        visionkit.load("tv-classifier", weights=None)
    with pytest.raises(
        InvalidOptionError, match=r"Unknown arch 'mobilenet_v3_lrge'.*Did you mean 'mobilenet_v3_large'"
    ):
        visionkit.load("tv-classifier", arch="mobilenet_v3_lrge", weights=None)
    with pytest.raises(InvalidOptionError, match=r"Unknown arch 'resnet50' for backend 'tv-detector'"):
        visionkit.load("tv-detector", arch="resnet50", weights=None)
    with pytest.raises(InvalidOptionError, match=r"Unknown option 'arch' for backend 'resnet50'"):
        visionkit.load("resnet50", arch="resnet18", weights=None)


def test_unknown_and_invalid_options_fail_before_loading() -> None:
    with pytest.raises(InvalidOptionError, match=r"Unknown option 'treshold'.*score_threshold"):
        visionkit.load("maskrcnn", treshold=0.3)
    with pytest.raises(InvalidOptionError, match=r"mask_threshold=1.5"):
        visionkit.load("maskrcnn", mask_threshold=1.5)
    with pytest.raises(InvalidOptionError, match=r"categories.*at least 2"):
        visionkit.load("resnet50", categories=["only"])


def test_load_time_options_cannot_change_per_call() -> None:
    backend = visionkit.load("lraspp", weights=None, resize_size=64)
    with pytest.raises(
        InvalidOptionError, match=r"'categories' of backend 'lraspp' shapes the network.*load time"
    ):
        backend.segment_semantic(IMAGE, categories=["a", "b"])


def test_detector_options_that_do_not_apply() -> None:
    with pytest.raises(InvalidOptionError, match=r"fixed 320x320; min_size and max_size do not apply"):
        visionkit.load("ssdlite", weights=None, min_size=200)
    with pytest.raises(InvalidOptionError, match=r"one-stage detector without region proposals"):
        visionkit.load("retinanet", weights=None, proposals=50)


def test_native_precision_and_device_errors() -> None:
    with pytest.raises(
        InvalidOptionError,
        match=r"runs natively in 'fp32' or 'bf16' \(autocast, float32 tail\), but got precision 'fp16'",
    ):
        load_lraspp(weights=None, precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidOptionError, match=r"Device 'cuda' was requested but torch sees no CUDA"):
            load_lraspp(weights=None, device="cuda")
    assert load_lraspp(weights=None, device="auto").torch_device.type in ("cpu", "cuda", "mps")


# -- export -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_detector() -> Any:
    torch.manual_seed(0)
    options = {"min_size": 96, "max_size": 128, "score_threshold": 0.0, "detections_per_image": 5}
    return visionkit.load("fasterrcnn-mobilenet", weights=None, proposals=20, **options)


def test_detector_export_graph_matches_the_backend_and_postprocess_reads_it(small_detector: Any) -> None:
    """The one-image graph (run eagerly here) gives torchvision's detections; its tuple postprocesses alike."""
    det = small_detector
    spec = export_spec_of(det)
    assert spec.input_names == ["images", "sizes"]
    assert spec.output_names == ["boxes", "labels", "scores", "count"]
    assert spec.key == export_spec_of(det).key and det.arch in spec.key
    images = [make_test_image(90, 120, seed=1), make_test_image(70, 60, seed=2)]  # padded to 90x120
    batch = det.preprocess(images, det.options)
    padded, sizes = batch.inputs
    assert padded.shape == (2, 3, 90, 120) and sizes.tolist() == [[90, 120], [70, 60]]
    with torch.no_grad():  # what a runtime returns: the graph image by image, outputs concatenated
        parts = [spec.module(padded[i : i + 1], sizes[i : i + 1]) for i in range(2)]
    flat = tuple(torch.cat(o) for o in zip(*parts, strict=True))
    assert flat[-1].tolist() == [len(p[0]) for p in parts]
    ours = det.postprocess(flat, batch, visionkit.Task.DETECT)
    singles = [det.detect(im) for im in images]
    for a, b in zip(ours, singles, strict=True):
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a.class_id, b.class_id)
        np.testing.assert_allclose(a.xyxy, b.xyxy, rtol=1e-4, atol=1e-3)
    # a stricter per-call threshold is applied again to a graph's outputs; a looser one cannot be
    strict = det.with_options({"score_threshold": float(np.median(ours[0].confidence))})
    fewer = det.postprocess(flat, det.preprocess(images, strict), visionkit.Task.DETECT)[0]
    assert len(fewer) < len(ours[0]) and (fewer.confidence > strict.score_threshold).all()
    looser = det.preprocess(images, det.with_options({"nms_threshold": 0.3}))
    with pytest.raises(
        InvalidOptionError, match=r"built with nms_threshold=0.5, so nms_threshold=0.3 cannot"
    ):
        det.postprocess(flat, looser, visionkit.Task.DETECT)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter, used on purpose
@pytest.mark.parametrize(
    ("name", "options"), [("mobilenet_v3_large", {"crop_size": 64}), ("lraspp", {"resize_size": 64})]
)
def test_export_spec_traces_to_onnx_and_matches(name: str, options: dict[str, int], tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    backend = visionkit.load(name, weights=None, **options)
    spec = export_spec_of(backend)
    assert spec.key == export_spec_of(backend).key and backend.arch in spec.key
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        spec.module,
        spec.example_inputs,
        str(path),
        input_names=spec.input_names,
        output_names=spec.output_names,
        dynamic_axes=spec.dynamic_axes,
        opset_version=spec.opset,
        dynamo=False,
    )
    images = [make_test_image(64, 80, seed=1)]  # the segmenter's graph takes one image at a time
    inputs = spec.calibration_inputs(images)
    feeds = {n: x.numpy() for n, x in zip(spec.input_names, inputs, strict=True)}
    (onnx_out,) = ort.InferenceSession(str(path)).run(None, feeds)
    torch_out = backend.forward(inputs if len(inputs) > 1 else inputs[0])
    np.testing.assert_allclose(onnx_out, torch_out.numpy(), rtol=1e-4, atol=1e-4)
    # Post-processing accepts the runtime's outputs as they come back (as torch tensors).
    batch = backend.preprocess(images, backend.options)
    task = backend.tasks[0]
    assert backend.postprocess(torch.from_numpy(onnx_out), batch, task)[0].metadata.image_shape == (64, 80)


def test_segmenter_pads_mixed_sizes_and_crops_them_back() -> None:
    torch.manual_seed(0)
    seg = visionkit.load("lraspp", weights=None, resize_size=48)
    images = [make_test_image(60, 90, seed=1), make_test_image(80, 60, seed=2)]
    padded, sizes = seg.preprocess(images, seg.options).inputs
    assert padded.shape == (2, 3, 64, 72) and sizes.tolist() == [[48, 72], [64, 48]]
    assert not padded[0, :, 48:].any() and not padded[1, :, :, 48:].any()  # zero padding
    batched = seg.segment_semantic(images, return_scores=True)
    for image, result in zip(images, batched, strict=True):
        single = seg.segment_semantic(image, return_scores=True)
        np.testing.assert_array_equal(result.label_map, single.label_map)
        np.testing.assert_allclose(result.scores, single.scores, atol=1e-6)
