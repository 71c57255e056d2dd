"""Every fenced shell or Python block in README.md and docs/*.md is run here, or says why it is not.

The HTML comment on the line right before a block's opening fence says what happens to it (readers of
the rendered page do not see it):

``<!-- docs-test: run -->``
    Run offline as written, in a scratch directory with sample images under the names the docs use
    (``street.jpg``, ``beach.jpg``, ``photos/`` ...) and, for official checkpoints no data kit has,
    random-weight files of the same format and name (``mobile_sam.pt``: MobileSAM; ``yolov8n-cls.pt``:
    YOLOv8n-cls; randomly initialised), first in ``VISIONKIT_WEIGHTS``.
``<!-- docs-test: run-with-data -->``
    The same, with the data kit (real weights and COCO images): the sample images are COCO photos and
    the kit's YOLOv8n checkpoints stand in under the official names the docs use (``yolov8n.pt`` is
    the kit's ``yolov8n-dq.pt``). Skipped, with that reason, when ``VISIONKIT_WEIGHTS`` /
    ``VISIONKIT_DATA`` are unset.
``<!-- docs-test: run continues -->`` (or ``run-with-data continues``)
    A Python block that goes on from the previous run block of the page (it uses its variables): the
    two run in one interpreter, in one test named after the first block (with the data kit if any of
    them needs it).
``<!-- docs-test: tested-by tests/FILE.py::TEST -->``
    Run by that test (which must exist), e.g. a block a feature's own tests already execute.
``<!-- docs-test: not-run: REASON -->``
    Not run, for the reason given (a cluster, a model hub, minutes of work, a server that runs until
    Ctrl-C, a package install...). The reason must not be empty.

Python blocks (``python``) run in a fresh interpreter; shell blocks (``bash``, ``sh``, ``shell``) run with
``bash -euo pipefail`` and this environment's ``visionkit`` and ``python`` first on the ``PATH``. Other info
strings (``text``, ``json``, ``toml`` ...) are output or data and need no marker; a fence without an info
string fails, so a command cannot hide in an unlabelled block.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CODE = {"python": "python", "py": "python", "bash": "shell", "sh": "shell", "shell": "shell"}
KINDS = ("run", "run-with-data", "tested-by", "not-run")
MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<kind>[a-z-]+)(?::|\s)?\s*(?P<arg>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+)(?P<info>[^`]*)$")
# Sample file names the docs use, linked to the data kit's COCO images (offline: synthetic images).
IMAGES = ("street.jpg", "a.jpg", "b.jpg", "beach.jpg", "photo.jpg")
IMAGE_HW = (480, 640)  # offline stand-ins: the size of a COCO photo, so the docs' pixel prompts fit
KIT_IMAGES = (
    "000000000139.jpg",
    "000000022192.jpg",
    "000000034417.jpg",
    "000000062554.jpg",
    "000000109313.jpg",
)
# Official checkpoint names → the data kit's files (the official ones could not be included in the kit).
KIT_WEIGHTS = {"yolov8n.pt": "yolov8n-dq.pt", "yolov8n-seg.pt": "yolov8n-seg-dq.pt"}
TIMEOUT_S = 300
# Runs the blocks of one chain in one namespace; a traceback names the block (``docs/sam.md:18``, line).
RUNNER = """
import sys
ns = {"__name__": "__main__"}
for name, code in BLOCKS:
    print("--- " + name, file=sys.stderr, flush=True)
    exec(compile(code, name, "exec"), ns)
"""


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    info: str
    code: str
    marker: str | None  # the comment's kind, or None when there is none
    arg: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def language(self) -> str | None:
        return CODE.get(self.info.split()[0].lower()) if self.info else None


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, with the docs-test marker above each."""
    lines = path.read_text().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = i + 1
        closing = re.compile(rf"^\s*{m['fence']}`*\s*$")
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        indent = len(m["indent"])
        code = "\n".join(x[indent:] if x[:indent].isspace() else x for x in lines[i + 1 : end]) + "\n"
        prev = lines[i - 1].strip() if i else ""
        mk = MARKER.match(prev)
        out.append(
            Block(path, i + 1, m["info"].strip(), code, mk["kind"] if mk else None, mk["arg"] if mk else "")
        )
        i = end + 1
    return out


ALL = [b for p in doc_files() for b in blocks_of(p)]


def chains(blocks: list[Block]) -> list[list[Block]]:
    """Run blocks grouped: each with the ``continues`` blocks that follow it on the same page."""
    out: list[list[Block]] = []
    for b in blocks:
        if b.marker not in ("run", "run-with-data"):
            continue
        if b.arg == "continues":
            assert out and out[-1][0].path == b.path, f"{b.id}: continues, but no run block precedes it"
            assert b.language == "python" == out[-1][0].language, f"{b.id}: only Python blocks continue"
            out[-1].append(b)
        else:
            out.append([b])
    return out


RUN = chains(ALL)


def test_every_code_block_is_run_or_says_why_not() -> None:
    problems = []
    for b in ALL:
        if not b.info:
            problems.append(f"{b.id}: fence without an info string (bash/python for code, text for output)")
        elif b.language is None:
            if b.marker is not None and b.marker != "not-run":
                problems.append(
                    f"{b.id}: '{b.info}' is not code this test can run, but it is marked {b.marker!r}"
                )
        elif b.marker is None:
            problems.append(f"{b.id}: {b.info} block without a <!-- docs-test: ... --> comment above it")
        elif b.marker not in KINDS:
            problems.append(f"{b.id}: unknown docs-test kind {b.marker!r} (known: {', '.join(KINDS)})")
        elif b.marker in ("not-run", "tested-by") and len(b.arg) < 10:
            problems.append(f"{b.id}: {b.marker} needs a reason or a test id, got {b.arg!r}")
        elif b.marker in ("run", "run-with-data") and b.arg not in ("", "continues"):
            problems.append(f"{b.id}: {b.marker} takes nothing or 'continues', got {b.arg!r}")
    assert not problems, "\n".join(problems)


def test_the_parser_reads_markers_fences_and_indented_blocks(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text(
        "<!-- docs-test: not-run: needs a cluster -->\n```bash\nray up\n```\n\n```\nbare\n```\n"
        "- item\n  <!-- docs-test: run -->\n  ```python\n  print(1)\n  ```\n"
    )
    got = [(b.line, b.info, b.marker, b.arg, b.code) for b in blocks_of(md)]
    assert got == [
        (2, "bash", "not-run", "needs a cluster", "ray up\n"),
        (6, "", None, "", "bare\n"),
        (11, "python", "run", "", "print(1)\n"),
    ]


@pytest.mark.parametrize("block", [b for b in ALL if b.marker == "tested-by"], ids=lambda b: b.id)
def test_tested_by_names_a_test_that_exists(block: Block) -> None:
    file, _, name = block.arg.partition("::")
    source = (ROOT / file).read_text() if (ROOT / file).is_file() else ""
    assert re.search(rf"^def {re.escape(name)}\(", source, re.M), f"{block.id}: no test {block.arg!r}"


# Random-weight files in the format of official checkpoints no data kit holds, written in a child process
# (ultralytics writes settings on import; the test process stays clean).
# Random-weight files in the format of official checkpoints no data kit holds: the file name, the
# backend names whose blocks need it, and the code that writes it. Written in a child process
# (ultralytics writes settings on import; the test process stays clean), only for blocks that use them.
STAND_INS = {
    "mobile_sam.pt": (
        ("mobile-sam", "mobile_sam"),
        "import torch\nfrom visionkit_sam._model import build_model, preset\ntorch.manual_seed(0)\n"
        # what the official mobile_sam.pt holds: the state dict of a full-size MobileSAM (TinyViT)
        "torch.save(build_model(preset('vit_t')).state_dict(), 'mobile_sam.pt')\n",
    ),
    "yolov8n-cls.pt": (
        ("yolo-cls", "yolov8n-cls"),
        # an ultralytics checkpoint of a randomly initialised YOLOv8n-cls, as the official file
        "from ultralytics import YOLO\nYOLO('yolov8n-cls.yaml').save('yolov8n-cls.pt')\n",
    ),
}


@pytest.fixture(scope="session")
def stand_in_weights(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``ensure(code)``: the folder of stand-ins, with those ``code`` needs written (once a session)."""
    folder = tmp_path_factory.mktemp("stand-in-weights")

    def ensure(code: str) -> Path:
        todo = [
            make
            for name, (users, make) in STAND_INS.items()
            if any(u in code for u in users) and not (folder / name).exists()
        ]
        if todo:
            env = {**os.environ, "YOLO_OFFLINE": "True", "YOLO_VERBOSE": "False"}
            argv = [sys.executable, "-c", "".join(todo)]
            proc = subprocess.run(
                argv, cwd=folder, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
        return folder

    return ensure


def _write_images(folder: Path, kit: Path | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    photos = folder / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i, name in enumerate(IMAGES):
        if kit is not None:
            for target in (folder / name, photos / name):
                target.symlink_to(kit / "coco-mini" / "images" / KIT_IMAGES[i])
        else:
            img = Image.fromarray(rng.integers(0, 255, (*IMAGE_HW, 3), dtype=np.uint8))
            img.save(folder / name)
            img.save(photos / name)


@pytest.mark.parametrize("chain", RUN, ids=lambda c: c[0].id)
def test_doc_block_runs(chain: list[Block], tmp_path: Path, stand_in_weights: Callable[[str], Path]) -> None:
    block = chain[0]
    env = {k: v for k, v in os.environ.items() if k != "VISIONKIT_PLUGINS"}
    env.update(VISIONKIT_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", YOLO_OFFLINE="True")
    env.update(MPLBACKEND="Agg", VISIONKIT_CACHE=str(tmp_path / "cache"))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    kit = None
    stand_ins = stand_in_weights("".join(b.code for b in chain))
    env["VISIONKIT_WEIGHTS"] = str(stand_ins)
    if any(b.marker == "run-with-data" for b in chain):
        weights, data = os.environ.get("VISIONKIT_WEIGHTS"), os.environ.get("VISIONKIT_DATA")
        if not (weights and data):
            pytest.skip("needs the data kit: set VISIONKIT_WEIGHTS and VISIONKIT_DATA")
        kit = Path(data)
        # the official names the docs use, first in the weights path
        named = tmp_path / "weights"
        named.mkdir()
        for official, ours in KIT_WEIGHTS.items():
            for folder in weights.split(os.pathsep):
                if (Path(folder) / ours).is_file():
                    (named / official).symlink_to(Path(folder) / ours)
                    break
        env["VISIONKIT_WEIGHTS"] = os.pathsep.join([str(named), str(stand_ins), weights])
    work = tmp_path / "work"
    _write_images(work, kit)
    if block.language == "python":
        blocks = [(b.id, b.code) for b in chain]
        argv = [sys.executable, "-c", f"BLOCKS = {blocks!r}\n{RUNNER}"]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", block.code]
    proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, (
        f"{block.id} exited {proc.returncode}\n--- code\n{''.join(b.code for b in chain)}"
        f"--- stdout\n{proc.stdout[-3000:]}"
        f"\n--- stderr\n{proc.stderr[-5000:]}"
    )


@pytest.mark.slow
def test_export_reads_a_relative_calibration_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README's `visionkit export ... --calib calib_images/`: the folder is relative to where you run it."""
    pytest.importorskip("visionkit_onnx", reason="needs the visionkit-onnx plugin")
    pytest.importorskip("visionkit_yolo", reason="needs the visionkit-yolo plugin")
    from visionkit.cli import main

    calib = tmp_path / "calib_images"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(calib / f"{i}.jpg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VISIONKIT_CACHE", str(tmp_path / "cache"))
    argv = ["export", "yolo", "--weights", "none", "-O", "imgsz=96", "--precision", "int8"]
    argv += ["--calib", "calib_images/", "-o", "yolo-int8.onnx"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert (tmp_path / "yolo-int8.onnx").is_file()
    assert report["calibration"]["images"] == 3, report["calibration"]
    assert Path(report["calibration"]["source"]).name == "calib_images"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file: lower case, punctuation dropped, spaces to '-'."""
    out = set()
    for line in path.read_text().splitlines():
        if m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            text = re.sub(r"[^\w\- ]", "", m[1].replace("`", "").lower())
            out.add(text.replace(" ", "-"))
    return out


def test_every_relative_link_and_anchor_in_the_docs_exists() -> None:
    broken = []
    for page in doc_files():
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links, not code
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading with that anchor)")
    assert not broken, "\n".join(broken)


def test_the_readme_links_a_page_for_every_built_in_plugin() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in ("docs/yolo.md", "docs/sam.md", "docs/transformers.md", "docs/torchvision.md"):
        assert f"]({page})" in readme and (ROOT / page).is_file(), page
    for plugin in ("visionkit-onnx", "visionkit-openvino"):
        assert f"](plugins/{plugin}/README.md)" in readme, plugin
