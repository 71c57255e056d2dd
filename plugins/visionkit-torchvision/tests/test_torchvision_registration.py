"""Registration is data: cheap, torch-free, and consistent with torchvision's own metadata."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from torchvision.models import get_model_weights
from visionkit_torchvision._catalog import COCO_CATEGORIES, ENTRIES, VOC_CATEGORIES

import visionkit

REGISTRY = visionkit.Registry()


def test_registering_and_checking_options_import_no_torch() -> None:
    code = (
        "import sys, json, visionkit\n"
        "from visionkit.registry import Registry\n"
        "reg = Registry()\n"
        "names = [s.name for s in reg.specs() if s.plugin == 'torchvision']\n"
        "try:\n"
        "    visionkit.load('maskrcnn', registry=reg, treshold=0.5)\n"
        "except visionkit.InvalidOptionError as exc:\n"
        "    err = str(exc)\n"
        "print(json.dumps([names, err, [m for m in ('torch', 'torchvision') if m in sys.modules]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    names, err, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == []
    assert set(names) == {e.name for e in ENTRIES}
    assert "Unknown option 'treshold'" in err and "score_threshold" in err


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_specs_match_torchvision(entry: object) -> None:
    spec = REGISTRY.get(entry.name)  # type: ignore[attr-defined]
    assert spec.requires == ("torch", "torchvision") and spec.precisions == ("fp32", "bf16") and spec.batch
    assert spec.options and spec.options.startswith("visionkit_torchvision._options:")
    if entry.arch is None:  # generic: arch chosen at load time
        assert spec.default_weights == "DEFAULT"
        return
    member = get_model_weights(entry.arch)[spec.default_weights]
    assert member is get_model_weights(entry.arch).DEFAULT
    names = tuple(member.meta["categories"])
    if isinstance(spec.categories, tuple):
        assert spec.categories == names  # the copies in _catalog have not drifted
    else:
        assert spec.categories == "imagenet1k" and len(names) == 1000  # the canonical tag


def test_category_copies() -> None:
    assert tuple(get_model_weights("maskrcnn_resnet50_fpn_v2").DEFAULT.meta["categories"]) == COCO_CATEGORIES
    assert tuple(get_model_weights("deeplabv3_resnet50").DEFAULT.meta["categories"]) == VOC_CATEGORIES


def test_tasks_and_aliases() -> None:
    assert {t.value for t in REGISTRY.get("maskrcnn").tasks} == {"detect", "segment_instances"}
    assert REGISTRY.get("mask-rcnn").name == "maskrcnn"
    assert REGISTRY.get("faster-rcnn").name == "fasterrcnn"
    assert [s.name for s in REGISTRY.specs("segment_instances") if s.plugin == "torchvision"] == ["maskrcnn"]
