"""Smoke test of the installed wheels, run by `.ci/wheels` in a fresh venv from outside the checkout.

It fails when a wheel lacks a module, a package-data file or an entry point, when an extra names a
distribution that does not exist, or when a backend cannot load and predict offline with random
weights. Usage: ``python wheel_smoke.py CHECKOUT`` (the checkout is only used to refuse running it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib import metadata, resources
from pathlib import Path

import numpy as np
from PIL import Image

# Every distribution `visionkit-core[all]` must bring, and the entry point each one registers.
PLUGINS = {
    "visionkit-yolo": "yolo",
    "visionkit-onnx": "onnx",
    "visionkit-openvino": "openvino",
    "visionkit-sam": "sam",
    "visionkit-torchvision": "torchvision",
    "visionkit-transformers": "transformers",
}
# Files a package needs at run time besides its modules (a wheel built without them still imports).
PACKAGE_DATA = {
    "visionkit": ["py.typed"],
    "visionkit_yolo": ["py.typed"],
    "visionkit_onnx": [
        "py.typed",
        "calibration/LICENSES.md",
        "calibration/astronaut.jpg",
        "calibration/camera.jpg",
        "calibration/chelsea.jpg",
        "calibration/coffee.jpg",
        "calibration/rocket.jpg",
    ],
    "visionkit_openvino": ["py.typed"],
    "visionkit_sam": ["py.typed"],
    "visionkit_torchvision": ["py.typed"],
    "visionkit_transformers": ["py.typed"],
}


def step(name: str, t0: float) -> None:
    print(f"  ok {name} ({time.perf_counter() - t0:.1f} s)", flush=True)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `visionkit` console script (the entry point a user types)."""
    exe = Path(sys.executable).with_name("visionkit")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"`visionkit {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def main() -> None:
    checkout = Path(sys.argv[1]).resolve()
    import visionkit

    where = Path(visionkit.__file__).resolve()
    if where.parent == checkout / "visionkit":
        sys.exit(f"visionkit was imported from the checkout ({where}), not from the installed wheel")
    t0 = time.perf_counter()
    dists = {d: metadata.version(d) for d in ("visionkit-core", *PLUGINS)}
    for dist in dists:
        files = metadata.files(dist) or []
        if any(".pth" in f.name or "__editable__" in f.name for f in files):
            sys.exit(f"{dist} is an editable install; this check is about the built wheels")
    print(f"  installed: {dists}")
    for package, names in PACKAGE_DATA.items():
        missing = [n for n in names if not resources.files(package).joinpath(n).is_file()]
        if missing:
            sys.exit(f"package data missing from the {package} wheel: {missing}")
    step("versions, no editable installs, package data", t0)

    t0 = time.perf_counter()
    listed = json.loads(cli("list", "--json").stdout)
    if listed["plugin_errors"]:
        sys.exit(f"plugins failed to load: {listed['plugin_errors']}")
    by_dist = {b["distribution"] for b in listed["backends"]} | {
        f"visionkit-{r['plugin']}" for r in listed["runtimes"]
    }
    if set(PLUGINS) - by_dist:
        sys.exit(f"`visionkit list` shows nothing from {sorted(set(PLUGINS) - by_dist)}")
    broken = [b["name"] for b in listed["backends"] if not b["available"]]
    if broken:
        sys.exit(f"backends listed as unavailable in the everything install: {broken}")
    names = {b["name"] for b in listed["backends"]}
    runtimes = sorted(r["name"] for r in listed["runtimes"])
    step(f"visionkit list: {len(names)} backends from {sorted(by_dist)}, runtimes {runtimes}", t0)

    work = Path.cwd()
    img = work / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(img)

    t0 = time.perf_counter()
    cli("predict", "yolo", str(img), "--weights", "none", "--json", "yolo.json", "--save-dir", "annotated")
    records = json.loads((work / "yolo.json").read_text())
    if not records or not (work / "annotated" / "photo.jpg").is_file():
        sys.exit(f"visionkit predict wrote no result or annotated image: {records!r}")
    step("visionkit predict yolo --weights none", t0)

    # INT8 through visionkit-onnx: export + static calibration on the photos bundled in its wheel.
    t0 = time.perf_counter()
    det = visionkit.load("yolo", weights=None, precision="int8", imgsz=160)
    dets = det.detect(img)
    assert isinstance(dets, visionkit.Detections), type(dets)
    step("load('yolo', precision='int8') (ONNX export + calibration on the bundled photos)", t0)

    t0 = time.perf_counter()
    ov = visionkit.load("yolo", weights=None, runtime="openvino", imgsz=160)
    assert isinstance(ov.detect(img), visionkit.Detections)
    step("load('yolo', runtime='openvino') (visionkit-openvino)", t0)

    t0 = time.perf_counter()
    sam = visionkit.load("sam", weights=None)
    masks = sam.segment_prompt(img, points=[(100, 100)], labels=[1])
    assert masks.mask.shape[1:] == (240, 320), masks.mask.shape
    step("load('sam', weights=None).segment_prompt", t0)

    t0 = time.perf_counter()
    seg = visionkit.load("lraspp", weights=None)
    sem = seg.segment_semantic(img)
    assert sem.label_map.shape == (240, 320), sem.label_map.shape
    step("load('lraspp', weights=None).segment_semantic", t0)

    t0 = time.perf_counter()
    detr = visionkit.load("detr", weights=None)
    assert isinstance(detr.detect(img), visionkit.Detections)
    step("load('detr', weights=None).detect", t0)
    print("wheel smoke test passed", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("VISIONKIT_OFFLINE", "1")
    main()
