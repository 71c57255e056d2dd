"""Weights resolution, checkpoint round-trips, options and every error path of the transformers backends."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import visionkit
from visionkit import BackendUnavailableError, InvalidOptionError, WeightsNotFoundError

from .conftest import load, registry


@pytest.fixture(scope="module")
def saved_detr(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A tiny random DETR saved in the official layout: config.json + model.safetensors + preprocessor_config.json."""
    torch.manual_seed(0)
    backend = load("detr", weights=None, threshold=0.0)
    path = tmp_path_factory.mktemp("ckpt") / "facebook--detr-tiny"
    backend.model.save_pretrained(path)
    backend.processor.save_pretrained(path)
    return path, backend


def test_saved_checkpoint_has_official_layout(saved_detr: tuple[Path, object]) -> None:
    path, _ = saved_detr
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {
        p.name for p in path.iterdir()
    }


def test_local_checkpoint_reloads_identically(
    saved_detr: tuple[Path, object], two_images: list[np.ndarray]
) -> None:
    path, original = saved_detr
    reloaded = load("detr", weights=str(path), threshold=0.0)
    assert reloaded.source == str(path)
    for a, b in zip(reloaded.detect(two_images), original.detect(two_images), strict=True):
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
        np.testing.assert_array_equal(a.confidence, b.confidence)
        assert a.class_name == b.class_name and len(a) > 0
        assert a.metadata.label_space == "coco91" and a.metadata.weights == str(path)


def test_hub_id_found_in_visionkit_weights(
    saved_detr: tuple[Path, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = saved_detr
    monkeypatch.setenv("VISIONKIT_WEIGHTS", str(path.parent))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backend = load("detr", weights="facebook/detr-tiny")  # stored flattened as facebook--detr-tiny
    assert backend.source == str(path)


def test_offline_missing_hub_id_fails_fast_listing_places(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VISIONKIT_WEIGHTS", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as info:
        load("detr", weights="facebook/detr-resnet-50-not-cached")
    assert time.perf_counter() - start < 5
    msg = str(info.value)
    assert "facebook/detr-resnet-50-not-cached" in msg and "VISIONKIT_WEIGHTS" in msg
    assert "Hugging Face cache" in msg and "offline mode is on" in msg


def test_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Online but unreachable: a socket probe answers in seconds instead of ~30 s of HTTP retries."""
    from huggingface_hub import constants

    for var in (
        "HF_HUB_OFFLINE",
        "VISIONKIT_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://visionkit-test.invalid")  # .invalid never resolves
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="unreachable"):
        load("vit", weights="someone/not-a-real-model")
    assert time.perf_counter() - start < 10


def test_missing_path_is_not_sent_to_the_hub(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="as given") as info:
        load("detr", weights=str(tmp_path / "nope"))
    assert "Hugging Face" not in str(info.value)


def test_directory_without_checkpoint_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match=r"not a checkpoint: missing config\.json"):
        load("segformer", weights=str(tmp_path))


def test_checkpoint_without_preprocessor_config(saved_detr: tuple[Path, object], tmp_path: Path) -> None:
    path, _ = saved_detr
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    with pytest.raises(WeightsNotFoundError, match=r"no preprocessor_config\.json") as info:
        load("detr", weights=str(tmp_path))
    assert "processor.save_pretrained" in str(info.value)


def test_timm_backbone_checkpoint_without_timm(saved_detr: tuple[Path, object], tmp_path: Path) -> None:
    """The official facebook/detr-* configs ask for a timm ResNet; without timm the error says to install it."""
    pytest.importorskip("safetensors")
    try:
        import timm  # noqa: F401

        pytest.skip("timm is installed")
    except ImportError:
        pass
    path, _ = saved_detr
    config = json.loads((path / "config.json").read_text())
    config.pop("backbone_config", None)
    config.update(use_timm_backbone=True, backbone="resnet50")
    (tmp_path / "config.json").write_text(json.dumps(config))
    for name in ("model.safetensors", "preprocessor_config.json"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    with pytest.raises(BackendUnavailableError, match="timm"):
        load("detr", weights=str(tmp_path))


def test_wrong_model_kind_for_backend(saved_detr: tuple[Path, object]) -> None:
    path, _ = saved_detr
    with pytest.raises(visionkit.BackendError, match="cannot be loaded as AutoModelForImageClassification"):
        load("vit", weights=str(path))


def test_config_override_only_with_random_init(saved_detr: tuple[Path, object]) -> None:
    path, _ = saved_detr
    with pytest.raises(InvalidOptionError, match="only applies to random initialisation"):
        load("detr", weights=str(path), config={"num_queries": 5})


def test_invalid_config_override() -> None:
    with pytest.raises(InvalidOptionError, match="Invalid config override"):
        load("detr-panoptic", weights=None, config={"d_model": 60})  # mask head needs d_model+heads % 8


def test_config_override_applies() -> None:
    backend = load("detr", weights=None, config={"num_queries": 3})
    assert backend.model.config.num_queries == 3


def test_id2label_override_renames(two_images: list[np.ndarray]) -> None:
    torch.manual_seed(0)
    backend = load("vit", weights=None, id2label={0: "zero", 1: "one"}, top_k=10)
    result = backend.classify(two_images[0])
    names = dict(zip(result.class_id.tolist(), result.class_name, strict=True))
    assert names[0] == "zero" and names[1] == "one" and names[2] == "class_2"
    assert backend.label_space == "custom"


def test_id2label_override_unknown_id() -> None:
    with pytest.raises(InvalidOptionError, match=r"class ids \[99\]"):
        load("vit", weights=None, id2label={99: "x"})


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"treshold": 0.5}, "Did you mean 'threshold'"),
        ({"threshold": 1.5}, "threshold"),
        ({"image_size": 64, "shortest_edge": 64}, "either image_size or shortest_edge"),
        ({"shortest_edge": 100, "longest_edge": 50}, "must be >= shortest_edge"),
        ({"image_size": (0, 10)}, "image_size"),
    ],
)
def test_invalid_options(options: dict, fragment: str) -> None:
    with pytest.raises(InvalidOptionError, match=fragment):
        load("detr", weights=None, **options)


def test_shortest_edge_on_fixed_size_processor(two_images: list[np.ndarray]) -> None:
    backend = load("rtdetr", weights=None)
    with pytest.raises(InvalidOptionError, match="resizes to a fixed size"):
        backend.detect(two_images[0], shortest_edge=64)


def test_size_options_reach_the_processor(two_images: list[np.ndarray]) -> None:
    detr = load("detr", weights=None)
    assert detr.preprocess(two_images[:1], detr.with_options({"shortest_edge": 40})).inputs[0].shape[-2] == 40
    rt = load("rtdetr", weights=None, image_size=(64, 96))
    assert tuple(rt.preprocess(two_images[:1], rt.options).inputs[0].shape[-2:]) == (64, 96)


def test_fp16_needs_a_gpu() -> None:
    with pytest.raises(InvalidOptionError, match="needs a GPU"):
        load("detr", weights=None, precision="fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu() -> None:
    with pytest.raises(InvalidOptionError, match="no CUDA device"):
        load("detr", weights=None, device="cuda")


def test_registration_is_lazy_and_complete() -> None:
    reg = registry()
    names = {s.name for s in reg.specs()}
    assert names == {"detr", "rtdetr", "detr-panoptic", "segformer", "sam2", "vit"} | {
        "owlv2",
        "owlvit",
        "grounding-dino",
        "mm-grounding-dino",
        "omdet-turbo",
    }
    for spec in reg.specs():
        assert spec.requires == ("transformers", "torch") and spec.default_weights and spec.options
    assert reg.get("detr").default_weights == "facebook/detr-resnet-50"


def test_plugin_import_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, visionkit_transformers; print('transformers' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_unknown_option_fails_before_heavy_import() -> None:
    with pytest.raises(InvalidOptionError, match="Valid options"):
        load("segformer", weights="never/looked-up", not_an_option=1)


@pytest.mark.skipif(
    not os.environ.get("VISIONKIT_DATA"), reason="VISIONKIT_DATA is not set (COCO annotations)"
)
def test_coco_names_match_official_categories() -> None:
    from visionkit_transformers._labels import COCO91, coco91_id2label, label_space

    ann = json.loads((Path(os.environ["VISIONKIT_DATA"]) / "coco-mini" / "instances.json").read_text())
    official = {c["id"]: c["name"] for c in ann["categories"]}
    assert official == COCO91
    assert label_space(coco91_id2label()) == "coco91"


def test_label_spaces() -> None:
    from visionkit_transformers._labels import COCO_NAMES, coco80_id2label, coco91_id2label, label_space

    assert len(COCO_NAMES) == 80 and len(coco91_id2label()) == 91
    assert label_space(coco80_id2label()) == "coco80"
    assert label_space({**coco91_id2label(), 91: "N/A"}) == "coco91"
    assert label_space({**coco91_id2label(), 1: "human"}) == "custom"
    assert label_space({0: "cat", 1: "dog"}) == "custom"
