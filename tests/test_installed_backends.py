"""Every installed plugin (built-in ones included) loads cleanly and declares its backends as data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import visionkit
from visionkit.registry import Registry

REGISTRY = Registry()  # the real entry points, as users get them
SPECS = REGISTRY.specs()


def test_no_installed_plugin_fails_to_load() -> None:
    assert [str(e) for e in REGISTRY.errors] == []
    assert [str(c) for c in REGISTRY.conflicts] == []


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_spec_is_complete_and_serialisable(spec: visionkit.BackendSpec) -> None:
    info = spec.to_dict()
    json.dumps(info)
    assert spec.tasks and spec.description, "declare tasks and a one-line description"
    assert spec.distribution, "built from an installed distribution's entry point"
    assert spec.available, f"dependencies missing: {spec.missing()} (install: {spec.install})"
    for task in spec.tasks:
        assert task in visionkit.Task


def test_options_models_are_readable_without_heavy_imports() -> None:
    # `visionkit info NAME` shows options before loading: their modules must not import torch & co.
    paths = sorted({s.options for s in SPECS if s.options})
    code = (
        "import sys, json\nfrom visionkit.registry import import_string\n"
        f"for p in {paths!r}:\n    import_string(p, owner='t')\n"
        "heavy = [m for m in ('torch','ultralytics','transformers','segment_anything','onnxruntime','cv2') "
        "if m in sys.modules]\nprint(json.dumps(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
