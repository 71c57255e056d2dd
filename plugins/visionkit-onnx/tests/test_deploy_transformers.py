"""DETR-family deploy artifacts (DETR, RT-DETR, D-FINE: no NMS), tiny random models, offline (issue 14)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from visionkit_onnx._export import export
from visionkit_onnx._runtime import wrap

import visionkit
from visionkit.export import ExportNotSupportedError
from visionkit.testing import DetectorConformance

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("visionkit_transformers") is None
    or importlib.util.find_spec("transformers") is None,
    reason="visionkit-transformers (and transformers) not installed",
)

HEAVY = ("torch", "torchvision", "ultralytics", "transformers", "segment_anything")
#: As in test_onnx_transformers: RT-DETR's default init ties every encoder score, so its top-k query
#: selection is arbitrary; a wider init makes it well defined.
CONFIGS: dict[str, dict[str, Any] | None] = {"detr": None, "rtdetr": {"initializer_range": 0.5}}


def _registry() -> visionkit.Registry:
    import visionkit_onnx
    import visionkit_transformers

    return visionkit.Registry(
        entry_points=[], plugins=[visionkit_transformers, visionkit_onnx], use_environment=False
    )


def _images() -> list[np.ndarray]:
    """Three sizes and aspect ratios (each resized by the processor: up, down, to a fixed size)."""
    rng = np.random.default_rng(0)
    out = []
    for h, w in ((60, 90), (88, 48), (130, 120)):
        im = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        im[h // 4 : h // 2, w // 5 : w // 2] = (230, 40, 40)
        out.append(im)
    return out


def _tiny_dfine(folder: Path) -> Path:
    """A tiny random D-FINE checkpoint folder (HGNetV2 backbone, RT-DETR's processor), saved offline.

    Its class heads are jittered: the stock init scores every query alike, so top-k would pick among ties.
    """
    import torch
    import transformers as tf
    from visionkit_transformers._labels import coco80_id2label

    torch.manual_seed(0)
    backbone = tf.HGNetV2Config(
        stem_channels=[3, 8, 8],
        stage_in_channels=[8, 16, 32, 64],
        stage_mid_channels=[8, 16, 32, 64],
        stage_out_channels=[16, 32, 64, 128],
        stage_num_blocks=[1, 1, 1, 1],
        stage_downsample=[False, True, True, True],
        stage_light_block=[False, False, True, True],
        stage_kernel_size=[3, 3, 5, 5],
        stage_numb_of_layers=[1, 1, 1, 1],
        out_features=["stage2", "stage3", "stage4"],
        hidden_sizes=[16, 32, 64, 128],
        embedding_size=8,
    )
    config = tf.DFineConfig(
        backbone_config=backbone,
        encoder_in_channels=[32, 64, 128],
        encoder_hidden_dim=32,
        encoder_ffn_dim=32,
        encoder_attention_heads=2,
        d_model=32,
        decoder_in_channels=[32, 32, 32],
        decoder_ffn_dim=32,
        decoder_layers=2,
        decoder_attention_heads=2,
        decoder_n_points=2,
        num_queries=12,
        num_denoising=0,
        id2label=coco80_id2label(),
        initializer_range=0.5,
        lqe_hidden_dim=8,
        head_dim=16,
    )
    model = tf.DFineForObjectDetection(config).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "class_embed" in key or "enc_score_head" in key:
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    path = folder / "dfine-tiny"
    model.save_pretrained(path)
    tf.RTDetrImageProcessor(size={"height": 96, "width": 96}).save_pretrained(path)
    return path


def _load(name: str, weights: Any = None) -> Any:
    import torch

    torch.manual_seed(0)  # the tiny models are seeded here: the same weights for every load
    config = CONFIGS.get(name) if weights is None else None
    return visionkit.load(name, weights=weights, registry=_registry(), config=config, threshold=0.0)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Per model: the artifact, and the SDK path (the backend with its network in ONNX Runtime)."""
    tmp = tmp_path_factory.mktemp("deploy-hf")
    out = {}
    for label, name, weights in (
        ("detr", "detr", None),
        ("rtdetr", "rtdetr", None),
        ("dfine", "rtdetr", str(_tiny_dfine(tmp))),
    ):
        backend = _load(name, weights)
        report = export(backend, precision="fp32", output=tmp / f"{label}.onnx", cache_dir=tmp / "c")
        assert report["deploy"] == {"artifact": True, "reason": None}, label
        sdk = wrap(backend, precision="fp32", cache_dir=tmp / "c")  # the exported backend, now on ORT
        assert sdk.runtime["cache_hit"], "the SDK path and the artifact share one network"
        out[label] = (tmp / f"{label}.onnx", sdk)
    return out


@pytest.mark.parametrize("label", ["detr", "rtdetr", "dfine"])
def test_detr_family_artifact_matches_the_sdk_path(
    label: str, artifacts: dict[str, tuple[Path, Any]]
) -> None:
    path, sdk = artifacts[label]
    model = onnx.load(str(path))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["visionkit"])
    assert meta["kind"] == "detr"
    assert not any(n.op_type == "NonMaxSuppression" for n in model.graph.node), "DETRs need no NMS"
    assert meta["output"]["decoding"] == ("softmax-no-object" if label == "detr" else "sigmoid-topk")
    dep = visionkit.load(str(path), registry=_registry())
    assert dep.tasks == (visionkit.Task.DETECT,)
    for img in _images():
        a, b = sdk.detect(img), dep.detect(img)
        assert len(a) == len(b) > 0
        # canonical order: a random model may tie scores (to float rounding), which either side may
        # list first
        ka = np.lexsort((a.xyxy[:, 1], a.xyxy[:, 0], a.class_id, -np.round(a.confidence, 5)))
        kb = np.lexsort((b.xyxy[:, 1], b.xyxy[:, 0], b.class_id, -np.round(b.confidence, 5)))
        np.testing.assert_array_equal(a.class_id[ka], b.class_id[kb])
        # measured: boxes within 2e-4 px and scores within 1e-7 (the resize is torch's uint8 kernel)
        np.testing.assert_allclose(a.xyxy[ka], b.xyxy[kb], atol=1e-2)
        np.testing.assert_allclose(a.confidence[ka], b.confidence[kb], atol=1e-5)
        assert b.metadata.label_space == a.metadata.label_space
        assert b.class_name == tuple(a.class_name[i] for i in ka[np.argsort(kb)])
    # per-call options, defaults from the file
    assert len(dep.detect(img, max_detections=3)) == 3
    assert len(dep.detect(img, threshold=1.0)) == 0


def test_thin_image_is_padded_like_the_backend(artifacts: dict[str, tuple[Path, Any]]) -> None:
    """DETR's aspect-keeping resize would give a 3x200 image a side of 0 pixels: both pad it the same."""
    path, sdk = artifacts["detr"]
    dep = visionkit.load(str(path), registry=_registry())
    img = np.random.default_rng(4).integers(0, 255, (3, 200, 3), np.uint8)
    a, b = sdk.detect(img), dep.detect(img)
    assert len(a) == len(b)
    np.testing.assert_allclose(np.sort(a.confidence), np.sort(b.confidence), atol=1e-5)
    assert (b.xyxy[:, [1, 3]] <= 3).all()  # clipped to the image, not to the padding


def test_detr_deploy_process_imports_no_torch(artifacts: dict[str, tuple[Path, Any]]) -> None:
    loads = "".join(
        f"d = visionkit.load({str(artifacts[k][0])!r}).detect(np.zeros((50, 70, 3), np.uint8)); n.append(len(d))\n"
        for k in ("detr", "rtdetr", "dfine")
    )
    code = "import sys, numpy as np, visionkit\nn = []\n" + loads
    code += f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules], len(n))\n"
    env = {**os.environ, "VISIONKIT_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY [] 3" in out.stdout, out.stdout + out.stderr[-2000:]


def test_transformers_backend_without_a_decoder_says_why_before_exporting(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    seg = visionkit.load("segformer", weights=None, registry=_registry())
    with pytest.raises(ExportNotSupportedError, match="'segformer' cannot be deployed without torch"):
        export(seg, precision="fp32", output=tmp_path / "s.onnx", deploy=True, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists(), "nothing was exported"


class TestDeployedDetrConformance(DetectorConformance):
    """A deployed DETR honours the detector contract (visionkit.testing)."""

    @pytest.fixture
    def backend(self, artifacts: dict[str, tuple[Path, Any]]) -> Any:
        return visionkit.load(str(artifacts["detr"][0]), registry=_registry())
