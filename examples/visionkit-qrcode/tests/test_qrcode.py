"""The example plugin passes the conformance kit and matches OpenCV called directly."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

import visionkit
from visionkit.testing import DetectorConformance, make_test_image


def qr(text: str, scale: int = 4) -> np.ndarray:
    """A real QR code (OpenCV's encoder), as a grayscale uint8 array."""
    code = cv2.QRCodeEncoder.create().encode(text)
    return cv2.resize(code, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def scene() -> np.ndarray:
    """Two codes on a white background, RGB."""
    img = np.full((240, 400, 3), 255, np.uint8)
    a, b = qr("hello visionkit"), qr("second")
    img[20 : 20 + a.shape[0], 20 : 20 + a.shape[1]] = a[..., None]
    img[30 : 30 + b.shape[0], 250 : 250 + b.shape[1]] = b[..., None]
    return img


class TestQRCodeConformance(DetectorConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Any:
        return visionkit.load("qrcode")

    @pytest.fixture
    def sample_images(self) -> list[np.ndarray]:
        return [scene(), make_test_image(80, 64, seed=1)]


def test_discovered_through_entry_point() -> None:
    spec = visionkit.get_registry().get("qr")
    assert spec.name == "qrcode"
    assert spec.distribution == "visionkit-qrcode"
    assert spec.plugin == "qrcode"


def test_parity_with_opencv() -> None:
    img = scene()
    dets = visionkit.load("qrcode").detect(img)
    ok, texts, corners, _ = cv2.QRCodeDetector().detectAndDecodeMulti(img[:, :, ::-1].copy())
    assert ok and len(texts) == 2
    assert sorted(dets.data["text"].tolist()) == sorted(texts) == ["hello visionkit", "second"]
    ref = {t: np.concatenate([c.min(axis=0), c.max(axis=0)]) for t, c in zip(texts, corners, strict=True)}
    for text, box in zip(dets.data["text"], dets.xyxy, strict=True):
        np.testing.assert_allclose(box, ref[str(text)], atol=1e-4)
    np.testing.assert_array_equal(dets.confidence, [1.0, 1.0])
    # each box lies inside the square where that code was pasted
    pasted = {"hello visionkit": (20, 20, 120, 120), "second": (250, 30, 350, 130)}
    for text, (x1, y1, x2, y2) in zip(dets.data["text"], dets.xyxy, strict=True):
        px1, py1, px2, py2 = pasted[str(text)]
        assert px1 <= x1 < x2 <= px2 and py1 <= y1 < y2 <= py2


def test_locate_only() -> None:
    dets = visionkit.load("qrcode", decode=False).detect(scene())
    assert len(dets) == 2 and np.all(dets.confidence == 0.5)


def test_rejects_weights_and_gpu() -> None:
    with pytest.raises(visionkit.InvalidOptionError, match="needs no weights"):
        visionkit.load("qrcode", weights="some.pt")
    with pytest.raises(visionkit.InvalidOptionError, match="CPU only"):
        visionkit.load("qrcode", device="cuda")


def test_options_validated_before_opencv_is_imported() -> None:
    with pytest.raises(visionkit.InvalidOptionError, match="Did you mean 'decode'"):
        visionkit.load("qrcode", decod=False)
