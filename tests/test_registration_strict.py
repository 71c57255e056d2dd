"""Strict plugin registration: every malformed ``register(...)`` is a precise, per-plugin error.

Each bad plugin is loaded next to the good fakes, to show a broken plugin never takes others down.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import visionkit
from visionkit import hookspecs
from visionkit.errors import (
    BackendUnavailableError,
    InvalidOptionError,
    PluginLoadError,
    RegistrationError,
)
from visionkit.registry import CATEGORY_TAGS, Registry
from visionkit.testing import fake_plugin

ROOT = Path(__file__).resolve().parents[1]


def registering(**kwargs: Any) -> object:
    """A plugin object whose hook makes one ``register("mything", FakeDetector, **kwargs)`` call."""

    class Plugin:
        @visionkit.hookimpl
        def register_backends(self, register: Any) -> None:
            call = {"tasks": ["detect"], **kwargs}
            register(call.pop("name", "mything"), call.pop("factory", visionkit.testing.FakeDetector), **call)

    return Plugin()


def load_error(plugin: object) -> PluginLoadError:
    """The one error a registry of ``plugin`` plus the fakes reports; the fakes still load."""
    reg = Registry(entry_points=[], plugins=[plugin, fake_plugin()], use_environment=False)
    assert len(reg.errors) == 1, [str(e) for e in reg.errors]
    assert visionkit.load("fake-detector", registry=reg).detect is not None  # not fatal for others
    assert "mything" not in {s.name for s in reg.specs()}
    return reg.errors[0]


def message(**kwargs: Any) -> str:
    err = load_error(registering(**kwargs))
    assert isinstance(err.cause, RegistrationError), repr(err.cause)
    assert "Plugin 'Plugin-0' failed to load" in str(err)  # names the plugin
    return str(err)


def test_unknown_keyword_is_rejected_with_a_close_match() -> None:
    msg = message(categorys=["cat"])
    assert "register('mything') got an unknown keyword 'categorys'. Did you mean 'categories'?" in msg
    assert "Valid keywords: aliases, batch, categories" in msg


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"aliases": 5}, "aliases= must be a list of names, but got 5 of type int"),
        ({"batch": "yes"}, "batch= must be True or False, but got 'yes'"),
        ({"description": 3}, "description= must be a string"),
        ({"default_weights": 3.5}, "default_weights= must be a string"),
        ({"install": ["pip"]}, "install= must be a string"),
        ({"requires": ["torch>=2"]}, "requires= must be importable module names"),
        ({"categories": [1, 2]}, "categories= must be a list of class names"),
        ({"suffixes": ["onnx"]}, "suffixes= must be file suffixes starting with '.'"),
        ({"name": "my thing"}, "name 'my thing' must not contain spaces or ':'"),
        ({"name": ""}, "name must be a non-empty string"),
        ({"aliases": ["a", "a"]}, "aliases= lists ['a'] more than once"),
        ({"tasks": []}, "tasks= must be a task name or a list of them"),
        ({"tasks": ["detect", "detection"]}, "tasks= lists 'detect' more than once"),
        (
            {"prompt_types": ["point"]},
            "prompt_types=['point'] is only for backends with the segment_prompt task",
        ),
    ],
)
def test_wrong_value_types_name_the_keyword(kwargs: dict[str, Any], fragment: str) -> None:
    assert fragment in message(**kwargs)


def test_unknown_precision_and_prompt_type() -> None:
    msg = message(precisions=["fp32", "int4"])
    assert (
        "unknown precision 'int4' in precisions=. Did you mean 'int8'? Valid: fp32, fp16, bf16, int8." in msg
    )
    msg = message(tasks=["segment_prompt"], prompt_types=["points"])
    assert "unknown prompt type 'points'" in msg and "Did you mean 'point'?" in msg


def test_tasks_as_one_string_is_one_task_never_its_letters() -> None:
    reg = Registry(entry_points=[], plugins=[registering(tasks="detect")], use_environment=False)
    assert reg.errors == [] and reg.get("mything").tasks == (visionkit.Task.DETECT,)
    msg = message(tasks="dance")
    assert "Unknown task 'dance'" in msg and "'d'" not in msg


def test_ambiguous_segment_is_rejected_with_the_valid_tasks() -> None:
    msg = message(tasks=["segment"])
    assert (
        "task 'segment' is ambiguous; name one of segment_semantic, segment_instances, segment_prompt" in msg
    )
    # Unambiguous spellings stay accepted.
    reg = Registry(entry_points=[], plugins=[registering(tasks=["detection"])], use_environment=False)
    assert reg.get("mything").tasks == (visionkit.Task.DETECT,)


def test_categories_tags_are_validated_normalised_and_listed() -> None:
    for tag in CATEGORY_TAGS:
        reg = Registry(entry_points=[], plugins=[registering(categories=tag)], use_environment=False)
        assert reg.get("mything").categories == tag
    reg = Registry(entry_points=[], plugins=[registering(categories="ImageNet-1k")], use_environment=False)
    assert reg.get("mything").categories == "imagenet1k"
    msg = message(categories="coco_800")
    assert "categories='coco_800' is not a known label-space tag. Did you mean 'coco80'" in msg
    assert "Known tags: ade20k, cityscapes19, class-agnostic, coco80, coco91" in msg
    docs = (ROOT / "docs" / "plugins.md").read_text()
    undocumented = [t for t in CATEGORY_TAGS if f"`{t}`" not in docs]
    assert not undocumented, f"tags missing from docs/plugins.md: {undocumented}"


class Undecorated:
    def register_backends(self, register: Any) -> None:  # forgot @visionkit.hookimpl
        register("mything", visionkit.testing.FakeDetector, tasks=["detect"])


class HookCallsNothing:
    @visionkit.hookimpl
    def register_backends(self, register: Any) -> None:
        return None


class NoHooks:
    pass


@pytest.mark.parametrize(
    "plugin, fragment",
    [
        (Undecorated(), "defines register_backends without the @visionkit.hookimpl decorator"),
        (HookCallsNothing(), "its hooks (register_backends) ran but never called register(...)"),
        (NoHooks(), "implements no visionkit hook"),
    ],
)
def test_a_plugin_that_registers_nothing_is_reported(plugin: object, fragment: str) -> None:
    err = load_error(plugin)
    assert fragment in str(err) and isinstance(err.cause, RegistrationError)


@pytest.mark.parametrize(
    "factory, fragment",
    [
        ("visionkit.testing.fakse:FakeDetector", "package 'visionkit.testing' has no module 'fakse'"),
        (
            "visionkit.testing.fakes:FakeDetectr",
            "has no attribute 'FakeDetectr' (did you mean 'FakeDetector'",
        ),
        ("visionkit_no_such_pkg._backend:X", "module 'visionkit_no_such_pkg' is not installed"),
        ("visionkit.testing.fakes.FakeDetector", "must be 'module:attr'"),
    ],
)
def test_factory_path_typos_are_plugin_bugs_at_registration(factory: str, fragment: str) -> None:
    msg = message(factory=factory)
    assert fragment in msg and "pip install" not in msg


def test_factory_path_typo_found_at_load_is_a_plugin_bug_not_an_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A package not yet imported: its submodules cannot be checked at registration without importing it.
    pkg = tmp_path / "vk_strict_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_needs_lib.py").write_text("import vk_strict_absent_lib\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = registering(factory="vk_strict_pkg._backnd:X", install="pip install visionkit-mything")
    reg = Registry(entry_points=[], plugins=[plugin], use_environment=False)
    assert reg.errors == []
    with pytest.raises(PluginLoadError) as info:
        visionkit.load("mything", registry=reg)
    assert "module 'vk_strict_pkg._backnd' cannot be found" in str(info.value)
    assert "pip install" not in str(info.value)
    # A module that exists but imports a missing library is a missing dependency: the install hint.
    plugin = registering(factory="vk_strict_pkg._needs_lib:X", install="pip install visionkit-mything")
    reg = Registry(entry_points=[], plugins=[plugin], use_environment=False)
    with pytest.raises(BackendUnavailableError, match="pip install visionkit-mything"):
        visionkit.load("mything", registry=reg)


def test_options_must_be_an_import_string_of_a_backend_options_class() -> None:
    msg = message(options=visionkit.testing.fakes.FakeOptions)
    assert "options= must be an import string 'module:attr'" in msg
    assert "'visionkit.testing.fakes:FakeOptions'" in msg  # the string to write instead
    reg = Registry(
        entry_points=[],
        plugins=[registering(options="visionkit.testing.fakes:COLORS")],
        use_environment=False,
    )
    with pytest.raises(
        PluginLoadError, match=r"names 'tuple', which is not a subclass of visionkit\.BackendOptions"
    ):
        visionkit.load("mything", registry=reg)


def test_one_name_twice_in_one_plugin_says_so() -> None:
    class Twice:
        @visionkit.hookimpl
        def register_backends(self, register: Any) -> None:
            register("mything", visionkit.testing.FakeDetector, tasks=["detect"], aliases=["mt"])
            register("other", visionkit.testing.FakeDetector, tasks=["detect"], aliases=["mt"])

    err = load_error(Twice())
    assert (
        "plugin 'Twice-0' registers 'mt' twice: as an alias of 'mything', then as an alias of 'other'"
        in str(err)
    )
    assert "two plugins" not in str(err)
    assert "the name is also listed in its aliases" in message(aliases=["mything"])


def test_runtime_registration_is_strict_too() -> None:
    class BadRuntime:
        @visionkit.hookimpl
        def register_runtimes(self, register: Any) -> None:
            register("rt", lambda backend, **kw: backend, precisions=["int4"])

    assert "unknown precision 'int4'" in str(load_error(BadRuntime()))

    class TypoRuntime:
        @visionkit.hookimpl
        def register_runtimes(self, register: Any) -> None:
            register("rt", lambda backend, **kw: backend, precisions=["int8"], exporters="x:y")

    assert "unknown keyword 'exporters'. Did you mean 'exporter'?" in str(load_error(TypoRuntime()))


class Exportable(visionkit.testing.FakeDetector):
    name = "exportable"

    def export_spec(self) -> Any:
        raise NotImplementedError


def exportable_factory(**kwargs: Any) -> Exportable:
    return Exportable(**kwargs)


def test_int8_hint_only_for_exportable_backends_and_never_for_fp16() -> None:
    class Plugin:
        @visionkit.hookimpl
        def register_backends(self, register: Any) -> None:
            register("exportable", Exportable, tasks=["detect"])
            register("exportable-fn", exportable_factory, tasks=["detect"])

    reg = Registry(entry_points=[], plugins=[fake_plugin(), Plugin()], use_environment=False)
    for name in ("exportable", "exportable-fn"):  # a class, or a function whose return annotation says
        with pytest.raises(
            InvalidOptionError,
            match=r"For int8, install the ONNX runtime plugin: `pip install visionkit-onnx`",
        ):
            visionkit.load(name, precision="int8", registry=reg)
    with pytest.raises(InvalidOptionError) as info:
        visionkit.load("fake-detector", precision="int8", registry=reg)
    assert "cannot run in another runtime" in str(info.value) and "visionkit-onnx" not in str(info.value)
    for name in ("exportable", "fake-detector"):
        with pytest.raises(InvalidOptionError) as info:
            visionkit.load(name, precision="fp16", registry=reg)
        assert (
            "does not support precision 'fp16'" in str(info.value) and "onnx" not in str(info.value).lower()
        )


def ep(name: str, module: str) -> md.EntryPoint:
    return md.EntryPoint(name=name, value=module, group="visionkit")


def test_allow_list_naming_no_installed_plugin_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONKIT_PLUGINS", "good,goood,nosuch")
    reg = Registry(entry_points=[ep("good", "vk_test_good")])
    assert [s.name for s in reg.specs()] == ["good-detector"]
    msgs = {e.plugin: str(e) for e in reg.errors}
    assert set(msgs) == {"goood", "nosuch"}
    assert "VISIONKIT_PLUGINS names 'nosuch', but no installed plugin has that name" in msgs["nosuch"]
    assert "Installed plugins: good." in msgs["nosuch"]
    assert "Did you mean 'good'?" in msgs["goood"]


def test_trace_names_each_plugin_and_what_it_registered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VISIONKIT_TRACE", "1")
    Registry(entry_points=[ep("good", "vk_test_good"), ep("raises", "vk_test_hook_raises")])
    err = capsys.readouterr().err
    assert "visionkit: plugin 'good' registered backend 'good-detector' [detect, aliases good]" in err
    assert "visionkit: Plugin 'raises' failed to load: ValueError: hook failed" in err


def test_hookspecs_hold_the_callback_protocols_and_never_import_the_registry() -> None:
    from visionkit import registry

    assert registry.RegisterBackend is hookspecs.RegisterBackend
    assert registry.RegisterRuntime is hookspecs.RegisterRuntime
    tree = ast.parse(inspect.getsource(hookspecs))
    imported = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    assert not {m for m in imported if m and re.match(r"visionkit\.(registry|loading)\b", m)}, imported
    # Every keyword the callback Protocol declares is one the registry accepts, and the reverse.
    declared = set(inspect.signature(hookspecs.RegisterBackend.__call__).parameters) - {"self"}
    from visionkit.registry import _BACKEND_KEYWORDS

    assert declared == {"name", "factory", *_BACKEND_KEYWORDS}


def test_the_documented_registration_is_valid() -> None:
    """docs/plugins.md's `register(...)` example registers cleanly (its modules are not installed here,
    which its `requires` covers: the backend is listed as unavailable, not as a plugin bug)."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    marker = "tested-by tests/test_registration_strict.py::test_the_documented_registration_is_valid"
    block = text.split(marker, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(block, "docs/plugins.md", "exec"), namespace)

    class Plugin:
        register_backends = staticmethod(namespace["register_backends"])

    reg = Registry(entry_points=[], plugins=[Plugin()], use_environment=False)
    assert reg.errors == []
    spec = reg.get("mt")
    assert spec.name == "mything" and spec.categories == ("cat", "dog") and not spec.available
    with pytest.raises(BackendUnavailableError, match="pip install visionkit-mything"):
        visionkit.load("mything", registry=reg)


def test_claimed_suffixes_route_files_to_the_backend(tmp_path: Path) -> None:
    reg = Registry(entry_points=[], plugins=[registering(suffixes=".VKM")], use_environment=False)
    assert reg.get("mything").suffixes == (".vkm",)
    model = tmp_path / "model.vkm"
    model.write_bytes(b"")
    assert reg.for_file(model) is reg.get("mything")
    assert reg.for_file(tmp_path / "absent.vkm") is None
