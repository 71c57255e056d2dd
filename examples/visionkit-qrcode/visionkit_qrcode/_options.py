"""Options of the QR-code detector; free of OpenCV so they can be read before loading."""

from __future__ import annotations

from pydantic import Field

import visionkit


class QRCodeOptions(visionkit.BackendOptions):
    """Options of the ``qrcode`` backend."""

    conf: float = Field(
        0.0, ge=0.0, le=1.0, description="Drop codes below this confidence (0.6 keeps only decoded ones)."
    )
    decode: bool = Field(True, description="Decode the payload (slower); False only locates codes.")
