"""``visionkit.testing``'s fakes, synthetic images and checks work where pytest is not installed."""

from __future__ import annotations

import subprocess
import sys

# A meta-path finder that refuses pytest, as an environment without it would: any import of pytest,
# direct or through another module, fails with ModuleNotFoundError.
BLOCKER = """
import importlib.abc, sys

class NoPytest(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pytest", "_pytest"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, NoPytest())
"""

BODY = """
import visionkit.testing.fakes
import visionkit.testing.checks
from visionkit.testing import (
    FakeDetector, check_thread_safety, dissimilar_images, fake_plugin, make_shapes_image, make_test_image,
    results_close,
)

det = FakeDetector()
print(len(det.detect(make_test_image())), len(dissimilar_images()), make_shapes_image().shape)
check_thread_safety(det.detect, dissimilar_images(), threads=2, calls=1)
print("pytest imported:", any(m.split(".")[0] in ("pytest", "_pytest") for m in sys.modules))
try:
    from visionkit.testing import DetectorConformance
except ImportError as exc:
    print("conformance:", exc)
"""


def test_fakes_images_and_checks_import_with_pytest_blocked() -> None:
    out = subprocess.run([sys.executable, "-c", BLOCKER + BODY], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "3 3 (72, 100, 3)"
    assert lines[1] == "pytest imported: False"
    assert lines[2].startswith("conformance: visionkit.testing.DetectorConformance is a pytest test class")
    assert "`pip install pytest`" in lines[2]


def test_blocker_really_blocks_pytest() -> None:
    """The control: the same blocker makes importing the conformance module itself fail."""
    code = BLOCKER + "import visionkit.testing.conformance\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "No module named 'pytest' (blocked)" in out.stderr
