"""Ray Data pipeline on a local Ray (2 CPUs): same results as the local streaming path, resumable.

Images: the first coco-mini images when VISIONKIT_DATA points at the data kit, else generated ones.
One Ray session for the module; the whole file stays well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import visionkit
from visionkit.registry import Registry
from visionkit.stream import predict_stream, read_records
from visionkit.testing import fake_plugin, make_test_image

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from visionkit.ray import BackendLoader, _translate_ray_error, build_dataset, predict_ray  # noqa: E402

FAKES = ("visionkit.testing.fakes:fake_plugin",)
N = 10


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray-images")
    data = os.environ.get("VISIONKIT_DATA")
    coco = Path(data) / "coco-mini" / "images" if data else None
    if coco is not None and coco.is_dir():
        for src in sorted(coco.glob("*.jpg"))[:N]:
            shutil.copy(src, folder / src.name)  # a copy: the corrupt file below must not go in the kit
    else:
        for i in range(N):
            Image.fromarray(make_test_image(120, 160, seed=i)).save(folder / f"{i:012d}.png")
    (folder / "zz-corrupt.jpg").write_bytes(b"\xff\xd8\xff junk")
    return folder


def _local(
    images: Path, tmp_path: Path, name: str = "fake-instance", task: str = "segment_instances"
) -> dict[str, Any]:
    backend = visionkit.load(
        name, weights=None, registry=Registry(entry_points=[], plugins=[fake_plugin()], use_environment=False)
    )
    out = tmp_path / "local.jsonl"
    predict_stream(backend, [images], out=out, task=task, batch_size=4, progress=False)
    return {r["source"]: r for r in read_records(out)}


def test_jsonl_matches_local_streaming_and_resumes(ray_session: None, images: Path, tmp_path: Path) -> None:
    loader = BackendLoader("fake-instance", weights=None, plugins=FAKES)
    out = tmp_path / "ray.jsonl"
    summary = predict_ray(loader, [str(images)], out=out, task="segment_instances", batch_size=4, workers=2)
    assert summary.processed == N and summary.skipped == 0
    assert [Path(f.source).name for f in summary.failed] == ["zz-corrupt.jpg"]
    assert "Cannot decode" in summary.failed[0].message
    ray_records = {r["source"]: r for r in read_records(out)}
    assert ray_records == _local(images, tmp_path)  # identical records, masks included

    # everything done: nothing is sent to Ray (the corrupt file would be retried, so leave it out)
    good = [str(p) for p in sorted(images.iterdir()) if "corrupt" not in p.name]
    again = predict_ray(loader, good, out=out, task="segment_instances", batch_size=4, workers=2)
    assert (again.processed, again.skipped, len(again.failed)) == (0, N, 0)
    assert len(list(read_records(out))) == N


def test_parquet_directory_output(ray_session: None, images: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    loader = BackendLoader("fake-detector", weights=None, plugins=FAKES)
    out = tmp_path / "results"
    summary = predict_ray(loader, [str(images / "*")], out=out, batch_size=3, workers=2)
    assert summary.processed == N and len(summary.failed) == 1
    rows = pq.read_table(out).to_pylist()  # the files Ray's workers wrote
    assert len(rows) == N + 1
    local = _local(images, tmp_path, "fake-detector", "detect")
    for row in rows:
        if row["error"]:
            assert row["source"].endswith("zz-corrupt.jpg") and row["result"] == ""
        else:
            assert json.loads(row["result"]) == local[row["source"]]["result"]
    with pytest.raises(visionkit.InvalidOptionError, match="already exists and is not empty"):
        predict_ray(loader, [str(images)], out=out)


def test_worker_errors_are_one_clear_error(ray_session: None, images: Path, tmp_path: Path) -> None:
    # load()'s own checks run on the driver (the recipe's check()): a precision the backend cannot
    # run is refused before Ray starts ...
    loader = BackendLoader("fake-detector", weights=None, plugins=FAKES, precision="int8")
    with pytest.raises(visionkit.InvalidOptionError, match="does not support precision 'int8'"):
        predict_ray(loader, [str(images / "0*")], out=tmp_path / "x.jsonl", workers=1)
    # ... what fails only inside an actor reaches the caller as one error naming the backend
    wrapped = RuntimeError(
        "ray::_Predictor.__init__() ... visionkit.errors.WeightsNotFoundError: Weights 'w.pt' not found."
    )
    err = _translate_ray_error(wrapped, loader)
    assert isinstance(err, visionkit.BackendError)
    assert str(err) == (
        "A Ray worker could not run backend 'fake-detector': WeightsNotFoundError: Weights 'w.pt' not found."
    )
    # ... and the output it had locked is free again
    again = BackendLoader("fake-detector", weights=None, plugins=FAKES)
    assert predict_ray(again, [str(images / "0*")], out=tmp_path / "x.jsonl", workers=1).processed >= 1


def test_checked_before_ray_starts(tmp_path: Path, images: Path) -> None:
    with pytest.raises(visionkit.UnknownBackendError, match="Unknown backend 'nope'"):
        predict_ray(BackendLoader("nope", plugins=FAKES), [str(images)], out=tmp_path / "x.jsonl")
    # the fakes declare a light options model: a misspelt option is refused on this machine
    with pytest.raises(visionkit.InvalidOptionError, match="Unknown option 'treshold'"):
        predict_ray(
            BackendLoader("fake-detector", plugins=FAKES, options={"treshold": 0.5}),
            [str(images)],
            out=tmp_path / "x.jsonl",
        )
    with pytest.raises(visionkit.TaskNotSupportedError, match="does not do task 'classify'"):
        predict_ray(
            BackendLoader("fake-detector", plugins=FAKES),
            [str(images)],
            out=tmp_path / "x.jsonl",
            task="classify",
        )
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(visionkit.InvalidOptionError, match="is streamed frame by frame on this machine"):
        build_dataset([str(tmp_path / "clip.mp4")], BackendLoader("fake-detector", plugins=FAKES))
    with pytest.raises(visionkit.InvalidOptionError, match="no such file or directory"):
        build_dataset([str(tmp_path / "missing")], BackendLoader("fake-detector", plugins=FAKES))


def test_every_public_name_is_in_docs_ray_md() -> None:
    import visionkit.ray

    text = (Path(__file__).parents[1] / "docs" / "ray.md").read_text()
    assert [n for n in visionkit.ray.__all__ if n not in text] == []


@pytest.mark.real_weights
def test_real_yolo_on_ray_equals_local(ray_session: None, tmp_path: Path) -> None:
    weights_dir, data = os.environ.get("VISIONKIT_WEIGHTS"), os.environ.get("VISIONKIT_DATA")
    if not (weights_dir and data):
        pytest.skip("set VISIONKIT_WEIGHTS and VISIONKIT_DATA to the data kit")
    pytest.importorskip("visionkit_yolo", reason="visionkit-yolo is not installed")
    weights = Path(weights_dir) / "yolov8n-dq.pt"
    images = [str(p) for p in sorted((Path(data) / "coco-mini" / "images").glob("*.jpg"))[:4]]
    if not weights.is_file() or len(images) < 4:
        pytest.skip("yolov8n-dq.pt or coco-mini images missing")
    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    det = visionkit.load("yolo", weights=str(weights))
    predict_stream(det, images, out=local_out, batch_size=2, progress=False)
    loader = BackendLoader("yolo", weights=str(weights))
    summary = predict_ray(loader, images, out=ray_out, batch_size=2, workers=1)
    assert summary.processed == 4 and summary.ok
    # Batches of 2 on both paths (YOLO letterboxes a batch to one size). Torch in a Ray actor runs
    # with OMP_NUM_THREADS=1, which changes float summation order: equal up to float rounding.
    ray_res = {r["source"]: visionkit.Detections.from_dict(r["result"]) for r in read_records(ray_out)}
    local_res = {r["source"]: visionkit.Detections.from_dict(r["result"]) for r in read_records(local_out)}
    assert sorted(ray_res) == sorted(local_res) == sorted(images)
    for src, a in local_res.items():
        b = ray_res[src]
        assert a.class_name == b.class_name, src
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-2, err_msg=src)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4, err_msg=src)
