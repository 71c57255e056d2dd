"""Every accepted image input, and an InvalidImageError that says what was received for the rest."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionkit import InvalidImageError, load_image
from visionkit.images import as_batch

RGB = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)


def test_ndarray_rgb_is_passed_through() -> None:
    out = load_image(RGB)
    assert out.dtype == np.uint8 and out.shape == (12, 16, 3) and np.array_equal(out, RGB)


def test_path_str_bytes_and_pil_agree(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(RGB).save(path)
    for src in (path, str(path), path.read_bytes(), Image.open(path)):
        assert np.array_equal(load_image(src), RGB)


def test_grayscale_rgba_and_16bit() -> None:
    gray = RGB[..., 0]
    assert np.array_equal(load_image(gray), np.repeat(gray[..., None], 3, -1))
    assert np.array_equal(load_image(gray[..., None]), np.repeat(gray[..., None], 3, -1))
    rgba = np.concatenate([RGB, np.full((12, 16, 1), 7, np.uint8)], -1)
    assert np.array_equal(load_image(rgba), RGB)
    assert np.array_equal(load_image(Image.fromarray(rgba, "RGBA")), RGB)
    sixteen = RGB.astype(np.uint16) * 257  # 8-bit value v maps to v*257 in 16-bit
    assert np.array_equal(load_image(sixteen), RGB)
    pil16 = Image.fromarray(gray.astype(np.uint16) * 257)
    assert pil16.mode.startswith("I;16")
    assert np.array_equal(load_image(pil16)[..., 0], gray)
    assert np.array_equal(load_image(RGB.astype(np.float32) / 255.0), RGB)
    assert np.array_equal(load_image(Image.fromarray(RGB).convert("P")).shape, (12, 16, 3))


def test_torch_tensor_chw() -> None:
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(RGB).permute(2, 0, 1)
    assert np.array_equal(load_image(t), RGB)
    assert np.array_equal(load_image(t.float() / 255.0), RGB)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.fromarray(RGB)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=100)
    out = load_image(path)
    assert out.shape == (16, 12, 3)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((0, 5, 3), np.uint8), r"empty array of shape \(0, 5, 3\)"),
        (np.zeros((4, 4, 2), np.uint8), r"array of shape \(4, 4, 2\)"),
        (np.zeros((3, 8, 8), np.uint8), r"looks channels-first.*transpose\(1, 2, 0\)"),
        (np.zeros(5, np.uint8), r"shape \(5,\) \(ndim 1\)"),
        (np.full((4, 4), np.nan, np.float32), "NaN or inf"),
        (np.full((4, 4), 2.0), r"values in \[2, 2\].*\[0, 1\]"),
        (np.zeros((4, 4), bool), "boolean array"),
        (np.full((4, 4), -1, np.int32), "negative values"),
        (np.zeros((4, 4), np.complex64), "dtype complex64"),
        ("/no/such/file.jpg", "'/no/such/file.jpg' does not exist"),
        (b"", "empty bytes"),
        (b"definitely not an image", "Cannot decode image bytes"),
        (12345, "object of type builtins.int"),
        (None, "object of type builtins.NoneType"),
    ],
)
def test_invalid_inputs(bad: object, message: str) -> None:
    with pytest.raises(InvalidImageError, match=message) as info:
        load_image(bad)
    assert (
        "Expected" in str(info.value)
        or "does not exist" in str(info.value)
        or "Cannot decode" in str(info.value)
    )


def test_corrupt_truncated_and_empty_files(tmp_path: Path) -> None:
    good = io.BytesIO()
    Image.fromarray(RGB).save(good, format="JPEG")
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(good.getvalue()[:60])
    with pytest.raises(InvalidImageError, match="corrupt or not an image"):
        load_image(truncated)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(InvalidImageError, match=r"is empty \(0 bytes\)"):
        load_image(empty)
    with pytest.raises(InvalidImageError, match="is a directory"):
        load_image(tmp_path)


def test_as_batch_convention() -> None:
    assert as_batch(RGB) == ([RGB], True)
    assert as_batch([RGB, RGB])[1] is False
    with pytest.raises(InvalidImageError, match="pass a batch as a list"):
        as_batch(np.zeros((2, 4, 4, 3), np.uint8))
