"""The core's import graph: no cycles, no tool reaching into another module's private names.

Every ``import`` is read from the source (also those inside functions, which hide a cycle from the
interpreter until someone moves them to the top), so a cycle fails here and not as a "partially
initialized module" error in a user's process. docs/architecture.md draws the layers this keeps.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import visionkit

ROOT = Path(visionkit.__file__).parent
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"

# Upward edges taken on purpose, imported on call only. Each says why; nothing else may close a cycle.
ALLOWED_LAZY_EDGES = {
    # Detections.to_supervision()/from_supervision() delegate to the adapter module, which builds results.
    ("visionkit.results", "visionkit.supervision"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[str, list[str], bool]]:
    """``(module imported, names taken from it, at module level?)`` for each visionkit import."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("visionkit")
        ):
            yield node.module or "", [a.name for a in node.names], id(node) in top
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("visionkit"):
                    yield alias.name, [], id(node) in top


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, names, _ in _imports(path):
            # ``from visionkit.cli import _args``: the submodule is the edge, not the package
            for sub in names:
                if f"{target}.{sub}" in modules:
                    graph[name].add(f"{target}.{sub}")
            # the package root re-exports and a package may import its own submodules: neither is a layer
            if target in modules and target not in ("visionkit", name):
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if (node, nxt) in ALLOWED_LAZY_EDGES:
                continue
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycles_in_the_core() -> None:
    cycles = _cycles(_graph())
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_sees_a_cycle_hidden_in_a_function() -> None:
    # the checker itself: a lazy import that closes a loop is still a loop
    graph = {"a": {"b"}, "b": {"a"}}
    assert _cycles(graph) == [["a", "b", "a"]]


def test_allowed_lazy_edges_are_really_lazy() -> None:
    for importer, target in ALLOWED_LAZY_EDGES:
        path = ROOT.parent / (importer.replace(".", "/") + ".py")
        levels = [top for mod, _, top in _imports(path) if mod == target]
        assert levels and not any(levels), f"{importer} imports {target} at module level"


def _private_imports(paths: list[Path], own: str | None) -> list[str]:
    bad = []
    for path in paths:
        me = _module_name(path) if own is None else own
        for target, names, _ in _imports(path):
            for name in names:
                if name.startswith("_") and not name.startswith("__") and target != me:
                    bad.append(f"{path.name}: from {target} import {name}")
    return bad


def test_no_module_takes_another_modules_private_names() -> None:
    # Shared internals live in modules named with an underscore (visionkit._records, ._tools) under
    # public names; a leading underscore on a name means "this module only".
    paths = [p for p in ROOT.rglob("*.py")]
    assert _private_imports(paths, None) == []


def test_plugins_use_no_private_core_names() -> None:
    paths = sorted(PLUGINS.glob("*/visionkit_*/**/*.py"))
    if not paths:
        pytest.skip("plugins are not beside this checkout")
    bad = [
        line
        for line in _private_imports(paths, "plugin")
        if " visionkit." in line or "from visionkit " in line
    ]
    assert bad == []


def test_the_cli_commands_stand_on_args_not_on_each_other() -> None:
    graph = _graph()
    commands = [
        m
        for m in graph
        if m.startswith("visionkit.cli._")
        and not m.startswith("visionkit.cli.__")
        and m != "visionkit.cli._args"
    ]
    assert commands, "no command modules found"
    for cmd in commands:
        others = {t for t in graph[cmd] if t.startswith("visionkit.cli") and t != "visionkit.cli._args"}
        assert others == set(), f"{cmd} imports {sorted(others)}"


def _ruff_order(name: str) -> tuple[int, str]:
    # isort-style, as ruff's RUF022 sorts: CONSTANTS, then Classes, then functions
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def test_every_modules_all_is_sorted_and_names_what_exists() -> None:
    import importlib

    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        if name.startswith(("visionkit.ray", "visionkit.serve", "visionkit.cli.__main__")):
            continue  # need optional libraries (ray, fastapi) or run on import
        tree = ast.parse(path.read_text())
        if not any(
            isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets)
            for n in tree.body
        ):
            continue
        module = importlib.import_module(name)
        names = list(module.__all__)
        if names != sorted(names, key=_ruff_order):
            problems.append(f"{name}.__all__ is not sorted")
        problems += [f"{name}.__all__ names missing {n!r}" for n in names if not hasattr(module, n)]
    assert problems == []


def test_what_plugins_import_from_the_core_is_public() -> None:
    """The plugin-author surface: every core name a built-in plugin imports is in its module's __all__."""
    import importlib

    paths = sorted(PLUGINS.glob("*/visionkit_*/**/*.py"))
    if not paths:
        pytest.skip("plugins are not beside this checkout")
    private = []
    for path in paths:
        for target, names, _ in _imports(path):
            if not target.startswith("visionkit") or target.startswith("visionkit_"):
                continue
            module = importlib.import_module(target)
            exported = set(getattr(module, "__all__", ()))
            private += [f"{path.name}: {target}.{n}" for n in names if n not in exported]
    assert private == [], "plugins use core names that are not public (add them to __all__ and docs)"
