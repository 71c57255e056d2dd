"""`import visionkit` / `visionkit list` import no model library; the public surface stays curated."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import visionkit

HEAVY = (
    "torch",
    "torchvision",
    "ultralytics",
    "transformers",
    "segment_anything",
    "onnxruntime",
    "onnx",
    "cv2",
)
ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys, runpy
sys.argv = {argv!r}
{body}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print("HEAVY=" + json.dumps(heavy), file=sys.stderr)
"""


def _probe(body: str, argv: list[str]) -> tuple[list[str], str]:
    code = PROBE.format(body=body, argv=argv, heavy=HEAVY)
    env = {k: v for k, v in os.environ.items() if k != "VISIONKIT_PLUGINS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    line = next(x for x in proc.stderr.splitlines() if x.startswith("HEAVY="))
    return json.loads(line[len("HEAVY=") :]), proc.stdout


def test_import_visionkit_imports_no_backend_library() -> None:
    heavy, _ = _probe("import visionkit", ["python"])
    assert heavy == []


def test_visionkit_list_imports_no_backend_library() -> None:
    # Runs over every plugin installed in this environment (the built-in ones included).
    body = "from visionkit.cli import main\ntry:\n    main(['list'])\nexcept SystemExit:\n    pass"
    heavy, out = _probe(body, ["visionkit", "list"])
    assert heavy == [], f"`visionkit list` imported {heavy}"
    assert "NAME" in out


def test_all_is_sorted_and_complete() -> None:
    assert len(set(visionkit.__all__)) == len(visionkit.__all__), "duplicate names in __all__"
    public = {
        n for n in dir(visionkit) if not n.startswith("_") and not inspect.ismodule(getattr(visionkit, n))
    } - {"annotations"}
    missing = public - set(visionkit.__all__)
    assert not missing, f"public names missing from __all__: {sorted(missing)}"
    for name in visionkit.__all__:
        assert hasattr(visionkit, name), name


def test_every_public_name_and_hook_is_documented() -> None:
    docs = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md")) + (ROOT / "README.md").read_text()
    undocumented = [
        n for n in visionkit.__all__ if n != "__version__" and not re.search(rf"\b{re.escape(n)}\b", docs)
    ]
    assert not undocumented, f"public names not mentioned in docs/: {undocumented}"
    from visionkit import hookspecs

    for hook in ("register_backends", "register_runtimes"):
        assert hasattr(hookspecs, hook) and hook in docs, hook
