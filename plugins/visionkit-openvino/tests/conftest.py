"""Test-only exportable backends (tiny torch nets) and fixtures for the visionkit-openvino tests.

``TinyDetector`` has what makes YOLO hard to quantize: one output concatenating pixel-scale boxes
(0..64) with 0-1 scores, its box branch ending in a DFL-style softmax + fixed 1x1 conv.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image
from pydantic import Field

torch = pytest.importorskip("torch")
pytest.importorskip("openvino")

import visionkit_openvino  # noqa: E402

import visionkit  # noqa: E402
from visionkit import Backend, BackendOptions, Batch, Classifications, Classifies, Detections, Detects, Task  # noqa: E402
from visionkit.export import ExportSpec, tensors_fingerprint  # noqa: E402
from visionkit.testing import make_test_image  # noqa: E402

SIZE = 64
BINS = 8
CLASSES = ("square", "disc", "stripe")


class TinyDetNet(torch.nn.Module):
    """Two conv layers, a box branch with DFL-style decoding and a score branch, concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.ReLU()
        )
        self.box = torch.nn.Conv2d(16, 4 * BINS, 1)
        self.cls = torch.nn.Conv2d(16, len(CLASSES), 1)
        self.dfl = torch.nn.Conv2d(BINS, 1, 1, bias=False)
        self.dfl.weight.data[:] = torch.arange(BINS, dtype=torch.float32).view(1, BINS, 1, 1)
        self.dfl.weight.requires_grad_(False)
        g = SIZE // 4
        ys, xs = torch.meshgrid(torch.arange(g) + 0.5, torch.arange(g) + 0.5, indexing="ij")
        self.register_buffer("anchors", torch.stack([xs.flatten(), ys.flatten()]) * 4.0)  # (2, N) pixels

    def forward(self, x: Any) -> Any:
        f = self.backbone(x)
        b, _, h, w = f.shape
        box = self.box(f).view(b, 4, BINS, h * w).transpose(2, 1).softmax(1)  # (b, BINS, 4, N)
        dist = self.dfl(box).view(b, 4, h * w) * 4.0
        lt, rb = dist.chunk(2, 1)
        xyxy = torch.cat([self.anchors - lt, self.anchors + rb], 1)
        return torch.cat([xyxy, self.cls(f).view(b, len(CLASSES), h * w).sigmoid()], 1)


class TinyOptions(BackendOptions):
    conf: float = Field(0.25, ge=0, le=1)
    iou: float = Field(0.5, ge=0, le=1)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


class TinyDetector(Backend[TinyOptions], Detects):
    """An exportable detector built from a seeded random ``TinyDetNet``."""

    name = "tiny-det"
    tasks = (Task.DETECT,)
    Options: ClassVar[type[BackendOptions]] = TinyOptions

    def __init__(self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any):
        super().__init__(weights=weights, device=device, precision=precision, **options)
        torch.manual_seed(0)
        self.net = TinyDetNet().eval()

    def preprocess(self, images: list[np.ndarray], options: TinyOptions) -> Batch[TinyOptions]:
        x = np.stack([_resize(im, SIZE) for im in images]).astype(np.float32) / 255.0
        metas = [{"scale": (im.shape[1] / SIZE, im.shape[0] / SIZE)} for im in images]
        return Batch(images, torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), metas, options)

    def forward(self, inputs: Any) -> Any:
        with torch.no_grad():
            return self.net(inputs)

    def postprocess(self, outputs: Any, batch: Batch[TinyOptions], task: Task) -> list[Any]:
        from torchvision.ops import batched_nms

        out = []
        for pred, im, meta in zip(outputs, batch.images, batch.metas, strict=True):
            boxes, scores = pred[:4].T, pred[4:].T
            conf, cls = scores.max(1)
            keep = conf >= batch.options.conf
            boxes, conf, cls = boxes[keep], conf[keep], cls[keep]
            idx = batched_nms(boxes, conf, cls, batch.options.iou)[:100]
            sx, sy = meta["scale"]
            h, w = im.shape[:2]
            xyxy = (boxes[idx] * torch.tensor([sx, sy, sx, sy])).numpy()
            xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
            xyxy[:, 2:] = np.maximum(xyxy[:, 2:], xyxy[:, :2])
            ids = cls[idx].numpy().astype(np.int64)
            out.append(
                Detections(
                    xyxy=xyxy,
                    confidence=conf[idx].numpy().astype(np.float32),
                    class_id=ids,
                    class_name=tuple(CLASSES[i] for i in ids),
                    metadata=self.meta(im),
                )
            )
        return out

    def export_spec(self) -> ExportSpec:
        return ExportSpec(
            module=self.net,
            example_inputs=(torch.zeros(1, 3, SIZE, SIZE),),
            input_names=["images"],
            output_names=["output0"],
            key=f"tiny-det-{tensors_fingerprint(self.net)}",
            dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
            sensitive_outputs=["output0"],
            calibration_inputs=lambda ims: self.preprocess(ims, self.options).inputs,
        )


class TinyClassifier(Backend[BackendOptions], Classifies):
    """An exportable classifier: a conv, pooling and a linear head."""

    name = "tiny-cls"
    tasks = (Task.CLASSIFY,)

    def __init__(self, *, weights: Any = None, device: str = "cpu", precision: str = "fp32", **options: Any):
        super().__init__(weights=weights, device=device, precision=precision, **options)
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, 2, 1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(16, 10),
        ).eval()

    def preprocess(self, images: list[np.ndarray], options: BackendOptions) -> Batch[BackendOptions]:
        x = np.stack([_resize(im, 32) for im in images]).astype(np.float32) / 255.0
        return Batch(
            images, torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), [{} for _ in images], options
        )

    def forward(self, inputs: Any) -> Any:
        with torch.no_grad():
            return self.net(inputs)

    def postprocess(self, outputs: Any, batch: Batch[BackendOptions], task: Task) -> list[Any]:
        out = []
        for logits, im in zip(outputs.softmax(-1), batch.images, strict=True):
            p, i = logits.sort(descending=True)
            out.append(
                Classifications(
                    class_id=i[:5].numpy().astype(np.int64),
                    confidence=p[:5].numpy().astype(np.float32),
                    class_name=tuple(f"c{k}" for k in i[:5].tolist()),
                    metadata=self.meta(im),
                )
            )
        return out

    def export_spec(self) -> ExportSpec:
        return ExportSpec(
            module=self.net,
            example_inputs=(torch.zeros(1, 3, 32, 32),),
            input_names=["images"],
            output_names=["logits"],
            key=f"tiny-cls-{tensors_fingerprint(self.net)}",
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )


class _TinyPlugin:
    @visionkit.hookimpl
    def register_backends(self, register: Any) -> None:
        register("tiny-det", TinyDetector, tasks=["detect"], categories=CLASSES)
        register("tiny-cls", TinyClassifier, tasks=["classify"])


@pytest.fixture
def tiny_plugin() -> object:
    """The plugin registering ``tiny-det`` and ``tiny-cls``."""
    return _TinyPlugin()


@pytest.fixture
def registry() -> visionkit.Registry:
    """Only the tiny backends and this plugin (installed plugins cannot leak in)."""
    return visionkit.Registry(
        entry_points=[], plugins=[_TinyPlugin(), visionkit_openvino], use_environment=False
    )


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def images() -> list[np.ndarray]:
    return [make_test_image(96, 128, seed=s) for s in range(6)]


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("calib")
    for i in range(8):
        Image.fromarray(make_test_image(96, 128, seed=10 + i)).save(d / f"img{i}.png")
    return d
