"""Every `pip install ...` hint in code and docs names a distribution (and extras) this repository builds.

The name `visionkit` on the package index belongs to an unrelated project, so a hint such as
`pip install 'visionkit[serve]'` would install somebody else's code. Our distributions are the ones
whose `pyproject.toml` lives in this repository (`visionkit-core`, `visionkit-<plugin>`, the example
`visionkit-qrcode`); names outside the `visionkit` family (`pip install matplotlib`) are not ours to
check.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

ROOT = Path(__file__).resolve().parents[1]
# Where users read install hints: the library's code and messages, the docs, examples and benchmarks.
SCANNED = ("visionkit", "plugins", "docs", "examples", "benchmarks", "README.md")
SUFFIXES = {".py", ".md", ".toml", ".txt"}
# A made-up third-party plugin the plugin guide uses as its running example.
EXAMPLE_NAMES = {"visionkit-mything"}

# `pip install` and what follows on the same logical line (a docstring may wrap after `install`).
# pip options whose value is the next word (a file or URL, not a package).
WITH_VALUE = {"-c", "--constraint", "-r", "--requirement", "-f", "--find-links", "-i", "--index-url"}
WITH_VALUE |= {"--extra-index-url", "-t", "--target", "--prefix", "--root"}
HINT = re.compile(r"pip install\s+([^\n`]*)")
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[([^\]]*)\])?")


def built_distributions() -> dict[str, set[str]]:
    """Every distribution with a pyproject.toml in this repository → its extras."""
    out: dict[str, set[str]] = {}
    for path in [
        ROOT / "pyproject.toml",
        *ROOT.glob("plugins/*/pyproject.toml"),
        *ROOT.glob("examples/*/pyproject.toml"),
    ]:
        project = tomllib.loads(path.read_text())["project"]
        out[_normalise(project["name"])] = set(project.get("optional-dependencies", {}))
    return out


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _files() -> list[Path]:
    files: list[Path] = []
    for entry in SCANNED:
        path = ROOT / entry
        if path.is_file():
            files.append(path)
            continue
        files += [
            p
            for p in path.rglob("*")
            if p.suffix in SUFFIXES
            and p.is_file()
            and not any(
                part.endswith(".egg-info") or part in {"__pycache__", "build", "dist"} for part in p.parts
            )
        ]
    return sorted(files)


def hints(text: str) -> list[tuple[int, str]]:
    """(line number, requirement text) for each package named by a `pip install` in ``text``."""
    found = []
    for match in HINT.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        args = match.group(1)
        # A hint wrapped in a docstring continues on the next line (``pip install\n'visionkit[x]'``).
        if not args.strip():
            args = text[match.end() :].lstrip().split("\n", 1)[0]
        skip_next = False
        for token in args.split():
            token = token.strip("'\"`),.;:")
            if skip_next:
                skip_next = False
                continue
            if token.startswith("#") or token in {"&&", "|", "||"}:
                break
            skip_next = token in WITH_VALUE
            if not token or token.startswith("-") or "/" in token or token.startswith("."):
                continue  # flags (-e, -c FILE, --upgrade) and paths
            if any(c in token for c in "<{$*"):
                continue  # placeholders: visionkit-<name>, f-string fields, shell variables
            found.append((line, token))
    return found


def test_the_hint_parser_reads_names_extras_and_skips_the_rest() -> None:
    text = "x `pip install 'visionkit-core[serve]' httpx` y\npip install -c c.txt -e . visionkit-yolo  # c\n"
    text += "Needs ``pip install\n'visionkit-core[coco]'``.\npip install visionkit-<name>"
    assert [t for _, t in hints(text)] == [
        "visionkit-core[serve]",
        "httpx",
        "visionkit-yolo",
        "visionkit-core[coco]",
    ]


def test_every_hint_for_a_visionkit_distribution_names_one_this_repo_builds() -> None:
    built = built_distributions()
    assert "visionkit-core" in built and "visionkit" not in built
    wrong = []
    count = 0
    for path in _files():
        for line, token in hints(path.read_text(errors="replace")):
            match = REQUIREMENT.match(token)
            if not match:
                continue
            name, extras = _normalise(match.group(1)), match.group(2)
            if not name.startswith("visionkit") or name in EXAMPLE_NAMES:
                continue
            count += 1
            where = f"{path.relative_to(ROOT)}:{line}: {token}"
            if name not in built:
                wrong.append(f"{where} (no such distribution here; built: {sorted(built)})")
                continue
            unknown = {e.strip() for e in (extras or "").split(",") if e.strip()} - built[name]
            if unknown:
                wrong.append(f"{where} (no extra {sorted(unknown)} in {name}: {sorted(built[name])})")
    assert count > 10, "the scan found almost no hints: is the pattern still right?"
    assert not wrong, "install hints naming what this repository does not build:\n" + "\n".join(wrong)


@pytest.mark.parametrize("dist", ["visionkit-core"])
def test_the_everything_extra_pulls_every_built_in_plugin(dist: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    everything = {_normalise(REQUIREMENT.match(r).group(1)) for r in project["optional-dependencies"]["all"]}  # type: ignore[union-attr]
    plugins = {
        _normalise(tomllib.loads(p.read_text())["project"]["name"])
        for p in ROOT.glob("plugins/*/pyproject.toml")
    }
    assert plugins and plugins <= everything, sorted(plugins - everything)
    for path in ROOT.glob("plugins/*/pyproject.toml"):
        deps = tomllib.loads(path.read_text())["project"]["dependencies"]
        names = {_normalise(REQUIREMENT.match(d).group(1)) for d in deps}  # type: ignore[union-attr]
        assert dist in names and "visionkit" not in names, f"{path.relative_to(ROOT)} must depend on {dist}"
