"""Shared fixtures: test-only plugins as real modules loaded through real entry points."""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import visionkit
from visionkit.registry import Registry, reset_registry
from visionkit.testing import fake_plugin

PLUGIN_DIR = Path(__file__).parent / "plugins"
sys.path.insert(0, str(PLUGIN_DIR))


def entry_point(name: str, module: str) -> md.EntryPoint:
    """An entry point in the visionkit group, as an installed distribution would declare it."""
    return md.EntryPoint(name=name, value=module, group="visionkit")


@pytest.fixture
def fake_registry() -> Iterator[Registry]:
    """The process-wide registry replaced by one holding only the fakes (no installed plugins leak in)."""
    reg = Registry(entry_points=[], plugins=[fake_plugin()], use_environment=False)
    reset_registry(reg)
    yield reg
    reset_registry(None)


def data_dir() -> Path | None:
    """``$VISIONKIT_DATA`` when it points at the shared data kit."""
    raw = os.environ.get("VISIONKIT_DATA")
    return Path(raw) if raw and Path(raw).is_dir() else None


__all__ = ["data_dir", "entry_point", "visionkit"]
