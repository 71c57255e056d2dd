"""Weights resolution (torchvision enums, TORCH_HOME, VISIONKIT_WEIGHTS, .pth files) and every error path."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import get_model, get_model_weights
from visionkit_torchvision._backend import load_lraspp

import visionkit
from visionkit import BackendError, InvalidOptionError, WeightsNotFoundError
from visionkit.export import ExportNotSupportedError, export_spec_of
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
    with pytest.raises(BackendError, match=r"weights_only=True"):
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
    with pytest.raises(InvalidOptionError, match=r"runs natively in 'fp32' only, but got precision 'fp16'"):
        load_lraspp(weights=None, precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidOptionError, match=r"Device 'cuda' was requested but torch sees no CUDA"):
            load_lraspp(weights=None, device="cuda")
    assert load_lraspp(weights=None, device="auto").torch_device.type in ("cpu", "cuda", "mps")


# -- export -------------------------------------------------------------------------------------------
def test_detectors_say_why_they_cannot_be_exported() -> None:
    det = visionkit.load("fasterrcnn-mobilenet", weights=None)
    with pytest.raises(ExportNotSupportedError, match=r"'fasterrcnn-mobilenet'.*data-dependent NMS.*fp32"):
        export_spec_of(det)


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
    images = [make_test_image(64, 64, seed=1), make_test_image(64, 64, seed=2)]
    (inputs,) = spec.calibration_inputs(images)
    (onnx_out,) = ort.InferenceSession(str(path)).run(None, {"images": inputs.numpy()})
    torch_out = backend.forward(inputs)
    np.testing.assert_allclose(onnx_out, torch_out.numpy(), rtol=1e-4, atol=1e-4)
    # Post-processing accepts the runtime's outputs as they come back (as torch tensors).
    batch = backend.preprocess(images, backend.options)
    task = backend.tasks[0]
    assert backend.postprocess(torch.from_numpy(onnx_out), batch, task)[0].metadata.image_shape == (64, 64)
