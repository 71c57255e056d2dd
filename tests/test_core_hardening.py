"""Core contract hardening (issue 18 items 2, 3, 10, 11): locks, limits, lazy decoding, typed errors."""

from __future__ import annotations

import base64
import copy
import io
import pickle
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

import visionkit
from visionkit import (
    Detections,
    InstanceMasks,
    InvalidImageError,
    InvalidOptionError,
    LimitExceededError,
    PromptMasks,
    Task,
    load_image,
)
from visionkit.backend import check_limit, limit_option, parse_device
from visionkit.testing import FakeDetector, make_test_image
from visionkit.testing.fakes import FakeOptions


# -- thread safety: the lock and copies --------------------------------------------------------------
def test_backend_declares_thread_safety_and_has_a_reentrant_lock() -> None:
    det = FakeDetector()
    assert FakeDetector.thread_safe is True
    assert det.lock is det.lock
    with det.lock, det.lock:  # re-entrant: a stage may call another verb of the same backend
        assert len(det.detect(make_test_image())) == 3


def test_lock_survives_pickle_deepcopy_and_copy() -> None:
    det = FakeDetector(conf=0.5)
    restored = pickle.loads(pickle.dumps(det))  # e.g. a backend shipped to a Ray worker
    assert restored.options.conf == 0.5 and restored.lock is not det.lock
    assert restored.detect(make_test_image()) == det.detect(make_test_image())
    deep = copy.deepcopy(det)
    assert deep.lock is not det.lock
    shallow = copy.copy(det)  # shares the model, so it shares the lock that guards it
    assert shallow.lock is det.lock


def test_lock_is_created_for_subclasses_that_skip_backend_init() -> None:
    class NoInit(FakeDetector):
        def __init__(self) -> None:
            self.options = FakeOptions()
            self.device = "cpu"

    det = NoInit()
    locks: list[Any] = []
    threads = [threading.Thread(target=lambda: locks.append(det.lock)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(lk is locks[0] for lk in locks)
    assert len(det.detect(make_test_image())) == 3


def test_last_timing_is_set_per_call() -> None:
    det = FakeDetector()
    det.detect([make_test_image()] * 3, batch_size=2)
    assert set(det.last_timing) == {"preprocess", "forward", "postprocess"}


# -- lazy decoding -----------------------------------------------------------------------------------
def test_images_are_decoded_one_batch_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = []
    for i in range(7):
        p = tmp_path / f"{i}.png"
        Image.fromarray(make_test_image(40, 48, seed=i)).save(p)
        paths.append(str(p))
    decoded: list[int] = []
    ahead: list[int] = []
    real = visionkit.backend.load_image

    def counting(x: Any) -> np.ndarray:
        decoded.append(1)
        return real(x)

    class Watching(FakeDetector):
        def preprocess(self, images: list[np.ndarray], options: Any) -> Any:
            done = sum(len(b) for b in ahead_batches)
            ahead.append(len(decoded) - done)  # decoded but not yet handed to preprocess
            ahead_batches.append(images)
            return super().preprocess(images, options)

    ahead_batches: list[list[np.ndarray]] = []
    monkeypatch.setattr(visionkit.backend, "load_image", counting)
    results = Watching().detect(paths, batch_size=3)
    assert len(results) == 7 and len(decoded) == 7
    assert max(ahead) <= 3, f"decoded {max(ahead)} images ahead of the model with batch_size=3"


# -- limits ------------------------------------------------------------------------------------------
def test_max_images_is_a_documented_limit() -> None:
    det = FakeDetector(max_images=2)
    with pytest.raises(LimitExceededError, match="max_images=3 exceeds the limit of 2") as info:
        det.detect([make_test_image()] * 3)
    assert (info.value.limit, info.value.value, info.value.maximum) == ("max_images", 3, 2)
    assert "load(..., max_images=N)" in str(info.value)
    assert isinstance(info.value, InvalidOptionError)
    assert FakeDetector().options.max_images == 1024


def test_a_per_call_override_may_lower_a_limit_but_not_raise_it() -> None:
    det = FakeDetector(max_images=4)
    with pytest.raises(LimitExceededError, match="per-call option may lower a limit but not raise it"):
        det.detect(make_test_image(), max_images=5)
    with pytest.raises(LimitExceededError, match="max_images"):
        det.detect(make_test_image(), max_images=None)  # None: unlimited, also a raise
    with pytest.raises(LimitExceededError):
        det.detect([make_test_image()] * 2, max_images=1)
    assert len(det.detect([make_test_image()] * 2, max_images=2)) == 2
    assert len(FakeDetector(max_images=None).detect([make_test_image()] * 3)) == 3


def test_check_limit_and_limit_option_for_plugins() -> None:
    check_limit("max_prompts", 5, 5)
    check_limit("max_prompts", 10**9, None)  # None: unlimited
    with pytest.raises(LimitExceededError, match=r"Requested points in one call: 6\.") as info:
        check_limit("max_prompts", 6, 5, what="points in one call")
    assert info.value.limit == "max_prompts"

    class Opts(visionkit.BackendOptions):
        max_prompts: int | None = limit_option(64, "Most prompts per call.")

    assert Opts().max_prompts == 64
    with pytest.raises(ValidationError):
        Opts(max_prompts=0)
    assert set(visionkit.backend.limit_fields(Opts)) == {"max_images", "max_prompts"}


# -- typed errors for API mistakes -------------------------------------------------------------------
@pytest.mark.parametrize("name", [None, 123, ""])
def test_load_with_a_non_string_name_is_a_typed_error(name: Any, fake_registry: Any) -> None:
    with pytest.raises(InvalidOptionError, match="Backend name must be a non-empty string") as info:
        visionkit.load(name)
    assert "fake-detector" in str(info.value)


def test_unknown_task_is_a_typed_value_error_listing_tasks() -> None:
    with pytest.raises(InvalidOptionError, match="Unknown task 'banana'") as info:
        Task.parse("banana")
    assert isinstance(info.value, ValueError)
    assert "Valid tasks: classify, detect, segment_instances, segment_prompt, segment_semantic" in str(
        info.value
    )
    with pytest.raises(InvalidOptionError, match="Did you mean 'detect'"):
        Task.parse("detetc")


@pytest.mark.parametrize("device", [0, 1, True])
def test_integer_device_is_refused_not_read_as_cpu(device: Any) -> None:
    with pytest.raises(InvalidOptionError, match=f"pass a string: 'cuda:{int(device)}'"):
        parse_device(device)
    with pytest.raises(InvalidOptionError):
        FakeDetector(device=device)


def test_device_objects_by_their_string() -> None:
    TorchDevice = type("device", (), {"__module__": "torch", "__str__": lambda self: "cuda:1"})
    assert parse_device(TorchDevice()) == "cuda:1"
    assert parse_device(None) == "cpu"
    with pytest.raises(InvalidOptionError, match="of type list"):
        parse_device(["cpu"])  # type: ignore[arg-type]


# -- results: indexing and JSON ----------------------------------------------------------------------
def _dets() -> Detections:
    return Detections(
        xyxy=[[0, 0, 10, 10], [5, 5, 20, 25]],
        confidence=[0.9, 0.4],
        class_id=[0, 2],
        class_name=("person", "car"),
        data={"track": np.arange(2)},
        metadata={"image_shape": (30, 40), "backend": "test"},
    )


def test_empty_list_index_gives_an_empty_result() -> None:
    empty = _dets()[[]]
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4) and empty.data["track"].shape == (0,)
    assert len(Detections.empty((5, 5))[[]]) == 0


def test_empty_prompt_masks_with_logits_round_trip() -> None:
    pm = PromptMasks(
        mask=np.zeros((0, 30, 40), bool),
        score=np.zeros(0, np.float32),
        prompt_index=np.zeros(0, np.int64),
        logits=np.zeros((0, 64, 64), np.float32),
        metadata=(30, 40),
    )
    back = PromptMasks.from_json(pm.to_json())
    assert back == pm and back.logits is not None and back.logits.shape == (0, 64, 64)
    assert PromptMasks.from_dict(pm.to_dict()) == pm


def _masks() -> InstanceMasks:
    mask = np.zeros((2, 30, 40), bool)
    mask[0, 2:9, 3:11] = True
    mask[1, 5:26, 10:30] = True
    return InstanceMasks(**{**_dets().model_dump(), "mask": mask})


def test_truncated_packed_masks_are_refused() -> None:
    data = _masks().to_dict()
    packed = base64.b64decode(data["mask"]["packbits"])
    data["mask"]["packbits"] = base64.b64encode(packed[: len(packed) // 2]).decode()
    with pytest.raises(ValidationError, match="must hold 300 bytes for shape"):
        InstanceMasks.from_dict(data)


@pytest.mark.parametrize("bad", ["!!not base64!!", "AAA", "A" * 399 + "*"])
def test_invalid_base64_masks_are_refused(bad: str) -> None:
    data = _masks().to_dict()
    data["mask"]["packbits"] = bad
    with pytest.raises(ValidationError, match=r"not valid base64|must hold"):
        InstanceMasks.from_dict(data)


def test_corrupt_array_dicts_are_refused_before_allocating() -> None:
    pm = PromptMasks(
        mask=np.zeros((1, 4, 4), bool),
        score=[0.5],
        prompt_index=[0],
        logits=np.zeros((1, 2, 2), np.float32),
        metadata=(4, 4),
    )
    text = pm.to_json()
    huge = text.replace('"shape":[1,4,4]', '"shape":[100000,100000,100000]')
    with pytest.raises(ValidationError, match="must hold"):
        PromptMasks.from_json(huge)
    d = pm.to_dict()
    d["logits"] = {"dtype": "<f4", "shape": [0, 9, 9], "data": [1.0]}
    with pytest.raises(ValidationError, match="must hold 0 values"):
        PromptMasks.from_dict(d)
    d["logits"] = {"dtype": "O", "shape": [0, 9, 9], "data": []}
    with pytest.raises(ValidationError, match="boolean, integer, float or unicode dtype"):
        PromptMasks.from_dict(d)
    d["logits"] = {"shape": [-1, 2], "data": []}
    with pytest.raises(ValidationError, match="non-negative integers"):
        PromptMasks.from_dict(d)


# -- images ------------------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _png(width: int, height: int, rows: int, interlace: int = 0) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, interlace)
    raw = b"".join(b"\x00" + bytes([200]) * (3 * width) for _ in range(rows))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def test_png_with_valid_header_and_short_data_is_refused(tmp_path: Path) -> None:
    short = _png(64, 64, rows=10)  # a well-formed file whose pixel data stops after 10 of 64 rows
    with pytest.raises(InvalidImageError, match="truncated"):
        load_image(short)
    path = tmp_path / "short.png"
    path.write_bytes(short)
    with pytest.raises(InvalidImageError, match=r"short\.png"):
        load_image(path)
    assert load_image(_png(64, 64, rows=64)).mean() == 200


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16", "1"])
@pytest.mark.parametrize("interlace", [False, True])
def test_complete_pngs_of_every_kind_still_load(mode: str, interlace: bool) -> None:
    rgb = make_test_image(37, 53, seed=3)
    img = (
        Image.fromarray(rgb).convert(mode if mode != "I;16" else "I").convert(mode)
        if mode != "RGB"
        else Image.fromarray(rgb)
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG", interlace=interlace)
    assert load_image(buf.getvalue()).shape == (37, 53, 3)


@pytest.mark.parametrize(
    "url", ["http://example.com/a.jpg", "https://example.com/a.jpg", "s3://bucket/a.jpg"]
)
def test_urls_are_refused_with_their_text_intact(url: str) -> None:
    with pytest.raises(InvalidImageError, match="URLs are not supported") as info:
        load_image(url)
    assert repr(url) in str(info.value) and "download the file first" in str(info.value).lower()


def test_non_image_file_after_ultralytics_patches_pil(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ultralytics replaces PIL.Image.open process-wide; a text file must still be reported as not an image."""
    monkeypatch.setenv("YOLO_OFFLINE", "True")
    monkeypatch.setattr(Image, "open", Image.open)  # whatever happens below is undone after the test
    patches = pytest.importorskip("ultralytics.utils.patches")  # importing ultralytics applies the patch
    monkeypatch.setattr(Image, "open", patches.image_open)  # and again, had an earlier test imported it
    assert Image.open.__module__ != "PIL.Image"
    text = tmp_path / "notes.jpg"
    text.write_text("hello\n" * 20)
    with pytest.raises(InvalidImageError) as info:
        load_image(text)
    assert "notes.jpg" in str(info.value) and "not an image format" in str(info.value)
    assert "pi_heif" not in str(info.value) and not isinstance(info.value.__cause__, ImportError)
    assert load_image(_png(8, 8, rows=8)).shape == (8, 8, 3)  # real images still open
