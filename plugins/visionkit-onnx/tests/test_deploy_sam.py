"""SAM / MobileSAM deploy artifacts: encoder + prompt decoder files, embedding cache, no torch (issue 14)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
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
from visionkit.testing import PromptSegmenterConformance

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("visionkit_sam") is None or importlib.util.find_spec("segment_anything") is None,
    reason="visionkit-sam (and segment_anything) not installed",
)

HEAVY = ("torch", "torchvision", "ultralytics", "transformers", "segment_anything")
PROMPTS: list[dict[str, Any]] = [
    {"points": [(30, 40)]},  # one click: 3 ranked masks
    {"boxes": [(10, 10, 80, 70), (5, 20, 60, 85)]},  # two prompts in one decoder batch
    {"points": [(30, 40), (70, 50)], "labels": [1, 0], "multimask_output": True},
    {"points": [(20, 30)], "boxes": [(5, 5, 100, 80)]},
]


def _registry() -> visionkit.Registry:
    import visionkit_onnx
    import visionkit_sam

    return visionkit.Registry(entry_points=[], plugins=[visionkit_sam, visionkit_onnx])


@pytest.fixture(scope="module")
def sam_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    import torch

    tmp = tmp_path_factory.mktemp("deploy-sam")
    out = {}
    for name in ("sam", "mobile-sam"):
        torch.manual_seed(0)
        backend = visionkit.load(name, weights=None, registry=_registry())
        report = export(backend, precision="fp32", output=tmp / f"{name}.onnx", cache_dir=tmp / "c")
        assert report["deploy"] == {"artifact": True, "reason": None}
        assert Path(report["files"]["decoder_forward"]).name == f"{name}.decoder_forward.onnx"
        sdk = wrap(backend, precision="fp32", cache_dir=tmp / "c")  # the exported backend, now on ORT
        out[name] = (tmp / f"{name}.onnx", sdk)
    return out


@pytest.mark.parametrize("name", ["sam", "mobile-sam"])
def test_sam_artifact_matches_the_sdk_path(name: str, sam_artifacts: dict[str, tuple[Path, Any]]) -> None:
    path, sdk = sam_artifacts[name]
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["visionkit"])
    assert meta["kind"] == "sam" and meta["output"]["decoder_file"] == f"{name}.decoder_forward.onnx"
    dep = visionkit.load(str(path), registry=_registry())
    assert dep.tasks == (visionkit.Task.SEGMENT_PROMPT,)
    img = np.random.default_rng(0).integers(0, 255, (90, 120, 3), np.uint8)
    for prompt in PROMPTS:
        a, b = sdk.segment_prompt(img, **prompt), dep.segment_prompt(img, **prompt)
        assert a.mask.shape == b.mask.shape and b.mask.shape[1:] == (90, 120)
        np.testing.assert_array_equal(a.prompt_index, b.prompt_index)
        # measured: identical scores, logits and masks (one network, the same Pillow resize)
        np.testing.assert_allclose(a.score, b.score, atol=1e-5)
        np.testing.assert_allclose(a.logits, b.logits, atol=1e-4)
        ious = (a.mask & b.mask).sum((1, 2)) / np.maximum((a.mask | b.mask).sum((1, 2)), 1)
        assert ious.min() >= 0.98, ious
        assert b.metadata.multimask_output == a.metadata.multimask_output


def test_sam_embedding_cache_and_handles(sam_artifacts: dict[str, tuple[Path, Any]]) -> None:
    dep = visionkit.load(str(sam_artifacts["sam"][0]), registry=_registry())
    img = np.random.default_rng(1).integers(0, 255, (64, 48, 3), np.uint8)
    first = dep.segment_prompt(img, points=[(10, 10)])
    assert dep.last_timing["cache_hit"] == 0.0
    again = dep.segment_prompt(img.copy(), points=[(10, 10)])  # same pixels: the encoder is skipped
    assert dep.last_timing["cache_hit"] == 1.0 and dep.cache_info()["hits"] == 1
    np.testing.assert_array_equal(first.mask, again.mask)
    handle = dep.embed(img)
    assert handle.image_shape == (64, 48)
    np.testing.assert_array_equal(dep.segment_prompt(handle, points=[(10, 10)]).mask, first.mask)
    other = visionkit.load(str(sam_artifacts["sam"][0]), registry=_registry())
    with pytest.raises(visionkit.InvalidPromptError, match="another model"):
        other.segment_prompt(handle, points=[(1, 1)])
    dep.clear_cache()
    assert dep.cache_info()["size"] == 0


def test_sam_artifact_needs_its_decoder_file(
    sam_artifacts: dict[str, tuple[Path, Any]], tmp_path: Path
) -> None:
    path = sam_artifacts["sam"][0]
    lone = tmp_path / "sam.onnx"
    shutil.copy(path, lone)
    with pytest.raises(
        visionkit.InvalidOptionError, match=r"prompt decoder 'sam\.decoder_forward\.onnx' is missing"
    ):
        visionkit.load(str(lone), registry=_registry())
    other = sam_artifacts["mobile-sam"][0].with_name("mobile-sam.decoder_forward.onnx")
    shutil.copy(other, tmp_path / "sam.decoder_forward.onnx")  # a decoder from another export
    with pytest.raises(visionkit.InvalidOptionError, match="sha256 differs"):
        visionkit.load(str(lone), registry=_registry())


def test_sam_deploy_process_imports_no_torch(sam_artifacts: dict[str, tuple[Path, Any]]) -> None:
    code = "import sys, numpy as np, visionkit\nn = []\n"
    for name in ("sam", "mobile-sam"):
        code += (
            f"m = visionkit.load({str(sam_artifacts[name][0])!r})"
            ".segment_prompt(np.full((40, 50, 3), 90, np.uint8), boxes=[(2, 2, 30, 30)])\n"
            "n.append(m.mask.shape)\n"
        )
    code += f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules], n)\n"
    env = {**os.environ, "VISIONKIT_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY [] [(1, 40, 50), (1, 40, 50)]" in out.stdout, out.stdout + out.stderr[-2000:]


class TestDeployedSamConformance(PromptSegmenterConformance):
    """A deployed SAM honours the prompt-segmenter contract (visionkit.testing)."""

    @pytest.fixture
    def backend(self, sam_artifacts: dict[str, tuple[Path, Any]]) -> Any:
        return visionkit.load(str(sam_artifacts["mobile-sam"][0]), registry=_registry())
