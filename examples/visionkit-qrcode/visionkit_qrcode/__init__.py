"""visionkit plugin registering OpenCV's QR-code detector (the example third-party plugin)."""

from __future__ import annotations

from typing import Any

import visionkit


@visionkit.hookimpl
def register_backends(register: Any) -> None:
    """Declare the backend as data; OpenCV is imported only when it is loaded."""
    register(
        "qrcode",
        "visionkit_qrcode._backend:QRCodeDetector",
        tasks=["detect"],
        aliases=["qr"],
        requires=["cv2"],
        install="pip install visionkit-qrcode",
        description="OpenCV QR-code detector + decoder (no weights needed)",
        categories=["qrcode"],
        batch=False,
        options="visionkit_qrcode._options:QRCodeOptions",
    )
