"""Text-prompted (open-vocabulary) detection in the core: the protocol, ``classes=`` checks, composition
with a prompt segmenter, the CLI's ``--classes`` and ``eval`` asking for the dataset's own names.

The backend here finds colours named in the prompt ("red car" → the red region), through the real
three-stage Backend path, so every tool sees what it sees with Grounding DINO or OWLv2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image
from pydantic import Field

import visionkit
from visionkit import hookimpl
from visionkit.backend import Batch, Detects, limit_option
from visionkit.cli import main
from visionkit.errors import InvalidOptionError, InvalidPromptError, LimitExceededError
from visionkit.prompts import MAX_CLASSES, parse_classes
from visionkit.protocols import Task, TextPromptedDetector
from visionkit.registry import Registry, reset_registry
from visionkit.results import Detections
from visionkit.testing import fake_plugin
from visionkit.testing.fakes import COLORS, FakeOptions, _FakeBase, make_test_image


class TextOptions(FakeOptions):
    classes: list[str] | None = Field(None, description="Names to find; a colour word in a name finds it.")
    max_classes: int | None = limit_option(MAX_CLASSES, "class names in one call")


class FakeTextDetector(_FakeBase, Detects):
    """Finds the colours its prompts name: ``classes=["red car"]`` boxes the red region as 'red car'."""

    name = "fake-text"
    tasks = (Task.DETECT,)
    Options: ClassVar[Any] = TextOptions
    open_vocabulary = True

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        if batch.options.classes is None:
            raise InvalidPromptError("fake-text finds what it is told: pass classes=['red car', ...].")
        names = parse_classes(batch.options.classes, max_classes=batch.options.max_classes)
        out = []
        for masks, image in zip(outputs, batch.images, strict=True):
            found = self._instances(masks, image, batch.options, False)
            keep, ids, asked = [], [], []
            for i, colour in enumerate(found.class_name):
                for j, name in enumerate(names):
                    if colour in name.lower().split():
                        keep.append(i)
                        ids.append(j)
                        asked.append(name)
            out.append(
                Detections(
                    xyxy=found.xyxy[keep].reshape(-1, 4),
                    confidence=found.confidence[keep],
                    class_id=np.asarray(ids, np.int64),
                    class_name=tuple(asked),
                    metadata=found.metadata,
                )
            )
        return out


class TextPlugin:
    @hookimpl
    def register_backends(self, register: Any) -> None:
        register("fake-text", FakeTextDetector, tasks=("detect",), prompt_types=("text",))


@pytest.fixture
def registry() -> Any:
    reg = Registry(entry_points=[], plugins=[fake_plugin(), TextPlugin()], use_environment=False)
    reset_registry(reg)
    yield reg
    reset_registry(None)


IMAGE = make_test_image(96, 128)


def test_the_protocol_tells_open_vocabulary_detectors_apart(registry: Registry) -> None:
    text = visionkit.load("fake-text")
    assert isinstance(text, TextPromptedDetector) and isinstance(text, visionkit.Detector)
    assert not isinstance(visionkit.load("fake-detector"), TextPromptedDetector)
    assert registry.get("fake-text").to_dict()["prompt_types"] == ["text"]  # visible in `visionkit info`


def test_classes_per_call_and_at_load(registry: Registry) -> None:
    text = visionkit.load("fake-text")
    dets = text.detect(IMAGE, classes=["blue sign", "red car"])
    assert sorted(zip(dets.class_name, dets.class_id.tolist(), strict=True)) == [
        ("blue sign", 0),
        ("red car", 1),
    ]
    closed = visionkit.load("fake-detector").detect(IMAGE)
    red = closed.class_name.index("red")
    np.testing.assert_array_equal(dets.xyxy[dets.class_name.index("red car")], closed.xyxy[red])
    preset = visionkit.load("fake-text", classes=["green field"])
    assert preset.detect(IMAGE).class_name == ("green field",)
    assert preset.detect(IMAGE, classes=["red"]).class_name == ("red",)  # a call overrides the load


@pytest.mark.parametrize(
    "classes, error, message",
    [
        (None, InvalidPromptError, "pass classes="),
        ([], InvalidPromptError, "classes is empty"),
        ("red", InvalidOptionError, "classes='red': Input should be a valid list"),
        (["red", "  "], InvalidPromptError, r"classes\[1\] = '  ' is not a name"),
        (["red", "Red"], InvalidPromptError, r"repeats classes\[0\]"),
        (["a", "b", "c"], LimitExceededError, "max_classes"),
    ],
)
def test_bad_classes_are_typed_errors(registry: Registry, classes: Any, error: type, message: str) -> None:
    text = visionkit.load("fake-text", max_classes=2)
    with pytest.raises(error, match=message):
        text.detect(IMAGE, **({} if classes is None else {"classes": classes}))


def test_parse_classes_normalises_spaces_and_keeps_order() -> None:
    assert parse_classes(["  red   car ", "dog"]) == ("red car", "dog")
    assert len(COLORS) == 3 and MAX_CLASSES >= 80  # COCO's 80 names fit by default


def test_names_to_a_closed_set_detector_say_what_would_work(registry: Registry) -> None:
    with pytest.raises(
        InvalidOptionError, match=r"fixed classes of its weights.*text-prompted detector \(fake-text\)"
    ):
        visionkit.load("fake-detector", classes=["dog"])


def test_text_then_prompt_segmenter_is_an_instance_segmenter(registry: Registry) -> None:
    seg = visionkit.pipeline(visionkit.load("fake-text"), visionkit.load("fake-prompt"))
    assert isinstance(seg, visionkit.InstanceSegmenter) and isinstance(seg, TextPromptedDetector)
    inst = seg.segment_instances(IMAGE, classes=["green thing"])
    assert inst.class_name == ("green thing",) and inst.mask.shape == (1, 96, 128) and inst.mask.any()
    closed = visionkit.pipeline(visionkit.load("fake-detector"), visionkit.load("fake-prompt"))
    assert not isinstance(closed, TextPromptedDetector)


def test_cli_classes_flag(registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "scene.png"
    Image.fromarray(IMAGE).save(path)
    out = tmp_path / "r.json"
    assert main(["predict", "fake-text", str(path), "--json", str(out), "--classes", "red car", "blue"]) == 0
    (record,) = json.loads(out.read_text())
    assert sorted(record["result"]["class_name"]) == ["blue", "red car"]
    capsys.readouterr()
    assert main(["predict", "fake-detector", str(path), "--classes", "dog"]) == 2
    assert "needs a text-prompted detector (fake-text)" in capsys.readouterr().err


def test_eval_asks_for_the_datasets_own_names(registry: Registry, tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("coco_maker", Path(__file__).with_name("test_eval_coco.py"))
    assert spec is not None and spec.loader is not None
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    RGB, make_coco = maker.RGB, maker.make_coco

    paint = {1: RGB["red"], 5: RGB["green"], 9: RGB["blue"]}
    plain = make_coco(
        tmp_path / "plain",
        [{"id": 1, "name": "red"}, {"id": 5, "name": "green"}, {"id": 9, "name": "blue"}],
        paint,
    )
    phrased = make_coco(
        tmp_path / "phrased",
        [{"id": 1, "name": "red car"}, {"id": 5, "name": "green box"}, {"id": 9, "name": "blue sign"}],
        paint,
    )
    closed = visionkit.evaluate("fake-detector", coco=plain, images=plain.parent / "images", progress=False)
    text = visionkit.evaluate("fake-text", coco=phrased, images=phrased.parent / "images", progress=False)
    assert closed.bbox.ap > 0.2  # something real to compare
    assert text.bbox.ap == pytest.approx(closed.bbox.ap, abs=1e-9)
    assert any("category names were the text prompts" in n for n in text.notes)


def test_serve_takes_classes_in_the_request(registry: Registry) -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    import base64
    import io

    from visionkit.serve import ServeConfig, ServerThread, create_app

    buf = io.BytesIO()
    Image.fromarray(IMAGE).save(buf, "PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    app = create_app({"fake-text": visionkit.load("fake-text", max_classes=2)}, config=ServeConfig(workers=1))
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        ok = client.post("/v1/detect/fake-text", json={"image": b64, "options": {"classes": ["red car"]}})
        assert ok.status_code == 200, ok.text
        assert Detections.from_dict(ok.json()["result"]).class_name == ("red car",)
        missing = client.post("/v1/detect/fake-text", json={"image": b64})
        assert missing.status_code == 422 and "pass classes=" in missing.text
        many = client.post(
            "/v1/detect/fake-text", json={"image": b64, "options": {"classes": ["a", "b", "c"]}}
        )
        assert many.status_code == 413 and "max_classes" in many.text
