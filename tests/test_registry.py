"""Plugin discovery, lookup and every registry/load error message."""

from __future__ import annotations

import importlib.metadata as md
from typing import Any

import pytest

import visionkit
from visionkit.registry import Registry
from visionkit.testing import fake_plugin


def ep(name: str, module: str) -> md.EntryPoint:
    return md.EntryPoint(name=name, value=module, group="visionkit")


ALL_TEST_PLUGINS = [
    ep("good", "vk_test_good"),
    ep("broken", "vk_test_broken_import"),
    ep("dup_a", "vk_test_dup_a"),
    ep("dup_b", "vk_test_dup_b"),
    ep("missing", "vk_test_missing_dep"),
    ep("misspelled", "vk_test_misspelled_hook"),
    ep("raises", "vk_test_hook_raises"),
]


@pytest.fixture
def reg() -> Registry:
    return Registry(entry_points=ALL_TEST_PLUGINS, use_environment=False)


def test_broken_plugins_are_reported_and_others_still_load(reg: Registry) -> None:
    failed = {e.plugin: str(e) for e in reg.errors}
    assert set(failed) == {"broken", "misspelled", "raises"}
    assert "broken on purpose" in failed["broken"]
    assert "register_backend" in failed["misspelled"]  # pluggy names the unknown hook
    assert "hook failed" in failed["raises"]
    names = {s.name for s in reg.specs()}
    assert {"good-detector", "needs-missing", "dup-b-only"} <= names
    assert "half-registered" not in names, "a plugin whose hook raised must not leave half its backends"
    det = visionkit.load("good", registry=reg)
    assert isinstance(det, visionkit.Detector)


def test_unknown_backend_lists_close_matches_and_known_names(reg: Registry) -> None:
    with pytest.raises(visionkit.UnknownBackendError) as info:
        visionkit.load("good-detectr", registry=reg)
    msg = str(info.value)
    assert "Unknown backend 'good-detectr'" in msg
    assert "Did you mean 'good-detector'" in msg
    assert "dup-b-only" in msg and "needs-missing" in msg  # the full list
    assert "failed to load (broken" in msg  # hints that a broken plugin may be the one
    assert isinstance(info.value, LookupError)


def test_unknown_builtin_name_suggests_its_distribution() -> None:
    reg = Registry(entry_points=[], use_environment=False)
    with pytest.raises(visionkit.UnknownBackendError, match=r"pip install visionkit-yolo"):
        visionkit.load("yolo", registry=reg)


def test_duplicate_name_names_both_plugins(reg: Registry) -> None:
    with pytest.raises(visionkit.DuplicateBackendError) as info:
        visionkit.load("clash", registry=reg)
    assert "'dup_a'" in str(info.value) and "'dup_b'" in str(info.value)
    assert [c.name for c in reg.conflicts] == ["clash"]
    # the second plugin's other backend is unaffected
    assert visionkit.load("dup-b-only", registry=reg).classify is not None


def test_missing_dependency_gives_install_hint(reg: Registry) -> None:
    spec = reg.get("needs-missing")
    assert not spec.available and spec.missing() == ["visionkit_definitely_not_installed"]
    with pytest.raises(visionkit.BackendUnavailableError) as info:
        visionkit.load("needs-missing", registry=reg)
    assert "pip install visionkit-definitely-not-installed" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_task_not_supported(reg: Registry) -> None:
    with pytest.raises(visionkit.TaskNotSupportedError) as info:
        visionkit.load("good", task="classify", registry=reg)
    assert "does not do task 'classify'" in str(info.value) and "supports: detect" in str(info.value)
    backend = visionkit.load("good", registry=reg)
    with pytest.raises(visionkit.TaskNotSupportedError):
        backend.predict([], "segment_semantic")


def test_unknown_option_and_bad_value() -> None:
    reg = Registry(entry_points=[], plugins=[fake_plugin()], use_environment=False)
    with pytest.raises(visionkit.InvalidOptionError) as info:
        visionkit.load("fake-detector", registry=reg, conff=0.5)
    assert "Unknown option 'conff'" in str(info.value) and "Did you mean 'conf'" in str(info.value)
    assert "Valid options: batch_size, conf" in str(info.value)
    with pytest.raises(visionkit.InvalidOptionError, match=r"conf=2.0.*less than or equal to 1"):
        visionkit.load("fake-detector", registry=reg, conf=2.0)
    det = visionkit.load("fake-detector", registry=reg)
    with pytest.raises(visionkit.InvalidOptionError, match="Unknown option 'bogus'"):
        det.detect(visionkit.testing.make_test_image(), bogus=1)


def test_bad_device_and_precision() -> None:
    reg = Registry(entry_points=[], plugins=[fake_plugin()], use_environment=False)
    with pytest.raises(visionkit.InvalidOptionError, match="Invalid device 'gpu0'"):
        visionkit.load("fake-detector", registry=reg, device="gpu0")
    with pytest.raises(visionkit.InvalidOptionError, match=r"does not support precision 'int4'.*fp32"):
        visionkit.load("fake-detector", registry=reg, precision="int4")
    with pytest.raises(visionkit.InvalidOptionError, match="Unknown runtime 'tensorrt'"):
        visionkit.load("fake-detector", registry=reg, runtime="tensorrt")


def test_per_call_options_do_not_leak() -> None:
    reg = Registry(entry_points=[], plugins=[fake_plugin()], use_environment=False)
    det = visionkit.load("fake-detector", registry=reg)
    img = visionkit.testing.make_test_image()
    assert len(det.detect(img)) == 3
    assert len(det.detect(img, margin=255)) == 0  # no colour can beat the others by 255
    assert len(det.detect(img)) == 3 and det.options.margin == 60


def test_list_backends_filters_and_describes() -> None:
    reg = Registry(entry_points=[], plugins=[fake_plugin()], use_environment=False)
    assert [s.name for s in reg.specs("detect")] == ["fake-detector", "fake-instance"]
    assert [s.name for s in reg.specs("semantic")] == ["fake-semantic"]
    info = reg.get("fake-prompt").to_dict()
    assert info["tasks"] == ["segment_prompt"] and info["prompt_types"] == ["point", "box"]
    with pytest.raises(ValueError, match="Unknown task 'dance'"):
        reg.specs("dance")


def test_environment_allow_and_deny_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONKIT_PLUGINS", "good,broken")
    reg = Registry(entry_points=ALL_TEST_PLUGINS)
    assert {s.plugin for s in reg.specs()} == {"good"} and [e.plugin for e in reg.errors] == ["broken"]
    monkeypatch.delenv("VISIONKIT_PLUGINS")
    monkeypatch.setenv("VISIONKIT_DISABLE_PLUGINS", "broken,misspelled,raises")
    reg = Registry(entry_points=ALL_TEST_PLUGINS)
    assert reg.errors == []


def test_trace_logs_hook_calls(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VISIONKIT_TRACE", "1")
    Registry(entry_points=[ep("good", "vk_test_good")])
    assert "register_backends" in capsys.readouterr().err


def test_runtime_plugin_wraps_exportable_backend() -> None:
    calls: dict[str, Any] = {}

    def wrap(backend: Any, precision: str, **kw: Any) -> Any:
        calls.update(precision=precision, kw=kw, native=backend.precision)
        backend.precision = precision
        return backend

    class RuntimePlugin:
        @visionkit.hookimpl
        def register_runtimes(self, register: Any) -> None:
            register("toyruntime", wrap, precisions=["int8"])

    reg = Registry(entry_points=[], plugins=[fake_plugin(), RuntimePlugin()], use_environment=False)
    det = visionkit.load("fake-detector", precision="int8", runtime_options={"calib": "x"}, registry=reg)
    assert det.precision == "int8"
    assert calls == {"precision": "int8", "kw": {"calib": "x"}, "native": "fp32"}
    with pytest.raises(visionkit.InvalidOptionError, match="does not offer precision 'fp16'"):
        visionkit.load("fake-detector", precision="fp16", runtime="toyruntime", registry=reg)


def test_registration_is_validated() -> None:
    class Bad:
        @visionkit.hookimpl
        def register_backends(self, register: Any) -> None:
            register("nofactory", "no_colon_here", tasks=["detect"])

    reg = Registry(entry_points=[], plugins=[Bad()], use_environment=False)
    assert "must be 'module:attr'" in str(reg.errors[0])
