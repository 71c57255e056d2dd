"""Streaming with the real YOLOv8n weights on coco-mini (skipped without the data kit or visionkit-yolo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import visionkit
from visionkit.stream import predict_stream, read_records

WEIGHTS = os.environ.get("VISIONKIT_WEIGHTS")
DATA = os.environ.get("VISIONKIT_DATA")

pytestmark = [
    pytest.mark.real_weights,
    pytest.mark.skipif(
        not (WEIGHTS and DATA), reason="set VISIONKIT_WEIGHTS and VISIONKIT_DATA to the data kit"
    ),
]


def test_folder_stream_equals_direct_batched_calls(tmp_path: Path) -> None:
    pytest.importorskip("visionkit_yolo", reason="visionkit-yolo is not installed")
    weights = Path(str(WEIGHTS)) / "yolov8n-dq.pt"
    if not weights.is_file():
        pytest.skip(f"{weights} not found")
    images = sorted((Path(str(DATA)) / "coco-mini" / "images").glob("*.jpg"))[:4]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for src in images:
        (folder / src.name).symlink_to(src)
    det = visionkit.load("yolo", weights=str(weights))
    out = tmp_path / "det.jsonl"
    summary = predict_stream(det, [folder], out=out, batch_size=2, progress=False)
    assert summary.processed == 4 and summary.ok
    records = list(read_records(out))
    # the same batches handed to the backend directly: streaming must not change a single number
    paths = [str(folder / p.name) for p in images]
    expected = det.detect(paths[:2]) + det.detect(paths[2:])
    assert [r["source"] for r in records] == paths
    got = [visionkit.Detections.from_dict(r["result"]) for r in records]
    assert got == expected
    assert sum(len(d) for d in got) > 0 and all(d.metadata.backend == "yolo" for d in got)
