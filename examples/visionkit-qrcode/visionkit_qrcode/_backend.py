"""OpenCV's QR-code detector as a visionkit Detector."""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np

import visionkit
from visionkit_qrcode._options import QRCodeOptions

#: Confidence of a code that was located and decoded / located only (OpenCV reports no score).
DECODED, LOCATED = 1.0, 0.5


class QRCodeDetector(visionkit.Backend[QRCodeOptions], visionkit.Detects):
    """QR codes as ``qrcode`` boxes, with the payload in ``data["text"]`` and corners in ``data["corners"]``."""

    name = "qrcode"
    tasks = (visionkit.Task.DETECT,)
    Options: ClassVar[type[visionkit.BackendOptions]] = QRCodeOptions

    def __init__(
        self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any
    ) -> None:
        super().__init__(weights=weights, device=device, precision=precision, **options)
        if self.device not in ("cpu", "auto"):
            raise visionkit.InvalidOptionError(
                f"qrcode runs on the CPU only, but device={device!r} was given."
            )
        if weights is not None:
            raise visionkit.InvalidOptionError(f"qrcode needs no weights, but got weights={weights!r}.")
        self.detector = cv2.QRCodeDetector()

    def preprocess(self, images: list[np.ndarray], options: QRCodeOptions) -> visionkit.Batch[QRCodeOptions]:
        # OpenCV works in BGR; whether to decode travels with the input because forward sees only inputs.
        inputs = [(np.ascontiguousarray(im[:, :, ::-1]), options.decode) for im in images]
        return visionkit.Batch(images, inputs, [{} for _ in images], options)

    def forward(self, inputs: Any) -> Any:
        out = []
        for bgr, decode in inputs:
            if decode:
                ok, texts, corners, _ = self.detector.detectAndDecodeMulti(bgr)
            else:
                ok, corners = self.detector.detectMulti(bgr)
                texts = ("",) * (0 if corners is None else len(corners))
            out.append((list(texts) if ok else [], np.zeros((0, 4, 2), np.float32) if not ok else corners))
        return out

    def postprocess(
        self, outputs: Any, batch: visionkit.Batch[QRCodeOptions], task: visionkit.Task
    ) -> list[visionkit.Detections]:
        results = []
        for (texts, corners), image in zip(outputs, batch.images, strict=True):
            h, w = image.shape[:2]
            corners = np.asarray(corners, np.float32).reshape(-1, 4, 2)
            xyxy = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1).reshape(-1, 4)
            xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
            conf = np.array([DECODED if t else LOCATED for t in texts], np.float32)
            keep = np.flatnonzero(conf >= batch.options.conf)
            # OpenCV's multi-code order varies run to run (threads): sort by confidence, then top-left.
            keep = keep[np.lexsort((xyxy[keep, 0], xyxy[keep, 1], -conf[keep]))]
            results.append(
                visionkit.Detections(
                    xyxy=xyxy[keep],
                    confidence=conf[keep],
                    class_id=np.zeros(len(keep), np.int64),
                    class_name=("qrcode",) * len(keep),
                    data={"text": np.array([texts[i] for i in keep], dtype=str), "corners": corners[keep]},
                    metadata=self.meta(image),
                )
            )
        return results
