"""What the built wheels will hold, checked from the pyproject files in seconds.

`.ci/wheels` builds and installs the real wheels (minutes); this catches the usual slips first: a data
file a package reads at run time that no `package-data` pattern ships, a plugin without its entry
point, a missing `py.typed`.
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = [ROOT, *sorted(ROOT.glob("plugins/visionkit-*"))]
SKIP = {"__pycache__"}


def _project(folder: Path) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text())


@pytest.mark.parametrize("folder", PROJECTS, ids=lambda p: p.name if p != ROOT else "visionkit-core")
def test_every_data_file_of_a_package_is_shipped_in_its_wheel(folder: Path) -> None:
    config = _project(folder)
    package_data = config.get("tool", {}).get("setuptools", {}).get("package-data", {})
    packages = [p for p in folder.glob("visionkit*") if (p / "__init__.py").is_file()]
    assert packages, f"no package in {folder}"
    unshipped = []
    for package in packages:
        patterns = package_data.get(package.name, []) + package_data.get("*", [])
        for path in package.rglob("*"):
            if path.is_dir() or SKIP & set(path.parts) or path.suffix in {".py", ".pyc"}:
                continue
            rel = path.relative_to(package).as_posix()
            if not any(fnmatch.fnmatch(rel, pattern) for pattern in patterns):
                unshipped.append(f"{package.name}/{rel}")
        assert (package / "py.typed").is_file(), f"{package.name} lacks py.typed (typed package marker)"
    assert not unshipped, f"files no package-data pattern ships (add them to pyproject.toml): {unshipped}"


@pytest.mark.parametrize("folder", PROJECTS[1:], ids=lambda p: p.name)
def test_every_plugin_declares_its_entry_point_and_depends_on_the_core(folder: Path) -> None:
    project = _project(folder)["project"]
    entry_points = project.get("entry-points", {}).get("visionkit", {})
    module = folder.name.replace("-", "_")
    assert list(entry_points.values()) == [module], entry_points
    assert "visionkit-core" in project["dependencies"]
