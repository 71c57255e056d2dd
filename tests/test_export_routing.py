"""``visionkit export -o FILE`` picks the runtime whose exporter writes FILE's suffix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import visionkit
from visionkit.cli._basic import _exporter_for_file
from visionkit.errors import PluginLoadError
from visionkit.registry import Registry


def _export(backend: Any, precision: str, output: str, **kw: Any) -> dict[str, Any]:
    return {}


def _registry(*runtimes: tuple[str, tuple[str, ...]]) -> Registry:
    class Runtimes:
        @visionkit.hookimpl
        def register_runtimes(self, register: Any) -> None:
            for name, suffixes in runtimes:
                register(name, _export, precisions=["int8"], exporter=_export, export_suffixes=suffixes)

    return Registry(entry_points=[], plugins=[Runtimes()], use_environment=False)


def test_the_suffix_picks_the_exporter() -> None:
    reg = _registry(("aaa-onnx", (".onnx",)), ("bbb-ir", (".xml",)), ("ccc-any", ()))
    runtimes = sorted(reg.runtimes.values(), key=lambda r: r.name)
    assert reg.runtimes["bbb-ir"].export_suffixes == (".xml",)
    assert _exporter_for_file(runtimes, Path("m.XML")).name == "bbb-ir"
    assert _exporter_for_file(runtimes, Path("out/m.onnx")).name == "aaa-onnx"
    assert _exporter_for_file(runtimes, Path("m.engine")).name == "ccc-any", "one that declares nothing may"


def test_a_suffix_no_exporter_writes_is_refused_with_the_choices() -> None:
    reg = _registry(("aaa-onnx", (".onnx",)), ("bbb-ir", (".xml",)))
    runtimes = sorted(reg.runtimes.values(), key=lambda r: r.name)
    with pytest.raises(
        visionkit.InvalidOptionError, match=r"\.onnx \(aaa-onnx\), \.xml \(bbb-ir\).*--runtime"
    ) as e:
        _exporter_for_file(runtimes, Path("m.bin"))
    assert e.value.key == "output"
    with pytest.raises(visionkit.InvalidOptionError, match=r"the exporter writes \.xml \(bbb-ir\)"):
        _exporter_for_file([reg.runtimes["bbb-ir"]], Path("m.onnx"))


def test_export_suffixes_are_validated() -> None:
    class Bad:
        @visionkit.hookimpl
        def register_runtimes(self, register: Any) -> None:
            register("noexp", _export, precisions=["int8"], export_suffixes=[".onnx"])

    class BadSuffix:
        @visionkit.hookimpl
        def register_runtimes(self, register: Any) -> None:
            register("nodot", _export, precisions=["int8"], exporter=_export, export_suffixes=["onnx"])

    for plugin, message in ((Bad(), "no exporter= is given"), (BadSuffix(), "starting with '.'")):
        reg = Registry(entry_points=[], plugins=[plugin], use_environment=False)
        assert not reg.runtimes
        (err,) = reg.errors
        assert isinstance(err, PluginLoadError) and message in f"{err} {err.__cause__}"
