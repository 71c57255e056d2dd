"""The backend contract: the runtime slot, the loaded-backend protocol, the prompt driver, one device
resolver, and the structured errors (numpy fakes; torch only for the device rule)."""

from __future__ import annotations

import pickle
import time
from typing import Any, ClassVar

import numpy as np
import pytest

import visionkit
from visionkit import Backend, BackendOptions, Batch, InvalidOptionError, PromptMasks, Task, VisionKitError
from visionkit.backend import Encoded, SegmentsPrompts, install_runtime, parse_device, parse_options
from visionkit.errors import (
    DatasetError,
    ExportNotSupportedError,
    LimitExceededError,
    UnknownOptionError,
    unknown_option_error,
)
from visionkit.loading import LoadedBackend, LoadedDetector
from visionkit.prompts import Prompts, parse_prompts
from visionkit.registry import Registry
from visionkit.testing import make_test_image


def _detector(registry: Registry) -> Any:
    return visionkit.load("fake-detector", registry=registry)


# -- the runtime slot -------------------------------------------------------------------------------
def test_a_loaded_backend_declares_what_tools_read(fake_registry: Registry) -> None:
    det = _detector(fake_registry)
    assert isinstance(det, LoadedBackend) and isinstance(det, LoadedDetector)
    assert det.spec is not None and det.spec.name == "fake-detector"
    assert det.runtime is None and det.runtime_name == "native"  # its own code runs the network
    assert det.last_timing == {}
    det.detect(make_test_image())
    assert set(det.last_timing) == {"preprocess", "forward", "postprocess"}
    assert not isinstance(object(), LoadedBackend)


def test_install_runtime_replaces_the_stage_and_says_what_runs_it(fake_registry: Registry) -> None:
    det = _detector(fake_registry)
    image = make_test_image()
    expected = det.detect(image)
    native = det.native_stage("forward")
    calls: list[int] = []

    def engine(inputs: Any) -> Any:
        calls.append(len(inputs))
        return native(inputs)

    det.install_runtime({"name": "my-engine", "precision": "int8", "model_path": None}, {"forward": engine})
    assert det.detect(image) == expected and calls == [1]
    assert det.forward is engine  # what a caller (bench, a gate) finds at the stage
    assert det.runtime == {"name": "my-engine", "precision": "int8", "model_path": None}
    assert det.runtime_name == "my-engine" and det.precision == "int8"
    assert det.native_stage("forward") != engine  # the backend's own method is still reachable


def test_stage_replaced_restores_what_ran_before(fake_registry: Registry) -> None:
    det = _detector(fake_registry)
    image = make_test_image()

    def empty(inputs: Any) -> Any:
        return [np.zeros_like(x) for x in inputs]

    with det.stage_replaced("forward", empty):
        assert len(det.detect(image)) == 0
    assert "forward" not in vars(det) and len(det.detect(image)) > 0
    det.install_runtime({"name": "e", "precision": "fp32"}, {"forward": det.native_stage("forward")})
    installed = det.forward
    with pytest.raises(RuntimeError), det.stage_replaced("forward", empty):
        raise RuntimeError("a failing gate")
    assert det.forward is installed


@pytest.mark.parametrize(
    ("runtime", "stages", "match"),
    [
        ({"name": "e"}, {"forward": print}, "must report precision"),
        ({"name": "e", "precision": "fp32"}, {}, "no stage"),
        (
            {"name": "e", "precision": "fp32"},
            {"decoder_forward": print},
            "no network stage 'decoder_forward'",
        ),
        ({"name": "e", "precision": "fp32"}, {"_lock": print}, "no network stage '_lock'"),
        ({"name": "e", "precision": "fp32"}, {"forward": 3}, "must be callable"),
    ],
)
def test_install_runtime_refuses_what_it_cannot_install(
    fake_registry: Registry, runtime: dict[str, Any], stages: dict[str, Any], match: str
) -> None:
    det = _detector(fake_registry)
    with pytest.raises(InvalidOptionError, match=match):
        det.install_runtime(runtime, stages)
    assert det.runtime is None and "forward" not in vars(det)


def test_install_runtime_on_a_duck_typed_backend() -> None:
    class Plain:
        def forward(self, x: Any) -> Any:
            return x

    plain = Plain()
    install_runtime(plain, {"name": "e", "precision": "int8"}, {"forward": abs})
    assert plain.forward is abs and plain.runtime["name"] == "e" and plain.precision == "int8"  # type: ignore[attr-defined]


# -- the prompt driver ------------------------------------------------------------------------------
class _PromptOptions(BackendOptions):
    max_points: int | None = 4
    max_prompts: int | None = 8


class TinyPrompter(Backend[_PromptOptions], SegmentsPrompts):
    """Encoder: the mean colour (cached by content); decoder: pixels near the clicked colour."""

    name = "tiny-prompter"
    tasks: ClassVar[tuple[Task, ...]] = (Task.SEGMENT_PROMPT,)
    Options: ClassVar[type[BackendOptions]] = _PromptOptions

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder_runs = 0
        self.cache: dict[bytes, Any] = {}

    def preprocess(self, images: list[np.ndarray], options: Any, tag: str = "") -> Batch[Any]:
        return Batch(images, np.stack(images).astype(np.float32), [{"tag": tag} for _ in images], options)

    def forward(self, inputs: Any) -> Any:
        self.encoder_runs += 1
        time.sleep(0.002)  # a measurable encoder
        return inputs

    def postprocess(self, outputs: Any, batch: Batch[Any], task: Task) -> list[Any]:
        return [(outputs[i], m["tag"]) for i, m in enumerate(batch.metas)]

    def encode_image(self, image: Any) -> Encoded[Any]:
        arr = visionkit.load_image(image)
        key = arr.tobytes()
        if key in self.cache:
            return self.cache[key].reused()
        self.cache[key] = encoded = self.encode_stages(arr, tag="encoder")
        return encoded

    def parse_prompts(self, encoded: Encoded[Any], **prompts: Any) -> Prompts:
        return parse_prompts(
            **prompts,
            image_shape=encoded.image_shape,
            low_res_size=8,
            max_points=self.options.max_points,
            max_prompts=self.options.max_prompts,
        )

    def decode(self, embedding: Any, prompts: Prompts) -> Any:
        pixels, tag = embedding
        assert tag == "encoder"  # preprocess got the driver's extra argument
        assert prompts.points is not None
        x, y = prompts.points[0, 0].astype(int)
        return np.abs(pixels - pixels[y, x]).max(-1) < 30

    def prompt_result(self, encoded: Encoded[Any], prompts: Prompts, raw: Any) -> PromptMasks:
        h, w = encoded.image_shape
        return PromptMasks(
            mask=raw[None],
            score=np.ones(1, np.float32),
            prompt_index=np.zeros(1, np.int64),
            metadata=visionkit.ResultMeta(image_shape=(h, w), backend=self.name),
        )


def test_prompt_driver_times_encode_and_decode_and_reuses_the_embedding() -> None:
    seg = TinyPrompter()
    image = make_test_image()
    assert isinstance(seg, visionkit.PromptSegmenter)
    first = seg.segment_prompt(image, points=[(10, 10)])
    t = seg.last_timing
    assert set(t) == {"preprocess", "forward", "embed_total", "decode", "postprocess", "cache_hit"}
    assert t["cache_hit"] == 0.0 and t["forward"] >= 2.0 and t["embed_total"] >= t["forward"]
    again = seg.segment_prompt(image.copy(), points=[(10, 10)])
    assert again == first and seg.encoder_runs == 1
    assert seg.last_timing["cache_hit"] == 1.0 and seg.last_timing["forward"] == 0.0
    assert not [k for k in vars(seg) if "stage" in k]  # no side channel for the encoder's timing


def test_prompt_driver_checks_prompts_with_the_shared_grammar() -> None:
    seg = TinyPrompter()
    image = make_test_image(40, 50)
    with pytest.raises(visionkit.InvalidPromptError, match="no prompt"):
        seg.segment_prompt(image)
    with pytest.raises(visionkit.InvalidPromptError, match="outside the image of width 50"):
        seg.segment_prompt(image, points=[(60, 5)])
    with pytest.raises(LimitExceededError, match="max_points"):
        seg.segment_prompt(image, points=[(1, 1)] * 5)


# -- one device rule -----------------------------------------------------------------------------
@pytest.fixture
def torch_devices(monkeypatch: pytest.MonkeyPatch) -> Any:
    torch = pytest.importorskip("torch")

    def set_available(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: int(cuda))
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_available


def test_auto_picks_cuda_then_mps_then_cpu(torch_devices: Any) -> None:
    from visionkit.devices import resolve_torch_device

    torch_devices(cuda=True, mps=True)
    assert resolve_torch_device("auto").type == "cuda"
    torch_devices(cuda=False, mps=True)
    assert resolve_torch_device("auto").type == "mps"
    torch_devices(cuda=False, mps=False)
    assert resolve_torch_device("auto").type == "cpu" and resolve_torch_device(None).type == "cpu"


def test_a_missing_device_is_a_typed_error(torch_devices: Any) -> None:
    from visionkit.devices import resolve_torch_device

    torch_devices(cuda=False, mps=False)
    for device, match in [
        ("cuda", "Device 'cuda' was requested but torch sees no CUDA device"),
        ("cuda:1", "Device 'cuda:1' was requested but torch sees no CUDA device"),
        ("mps", "no MPS device"),
        ("gpu", "expected 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"),
    ]:
        with pytest.raises(InvalidOptionError, match=match) as info:
            resolve_torch_device(device)
        assert info.value.key == "device"
    torch_devices(cuda=True, mps=False)
    with pytest.raises(InvalidOptionError, match=r"sees 1 CUDA device\(s\)"):
        resolve_torch_device("cuda:1")


def test_the_device_rule_imports_no_torch_at_import() -> None:
    import subprocess
    import sys

    code = "import sys, visionkit.devices; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- structured errors ------------------------------------------------------------------------------
def test_unknown_option_error_carries_key_and_valid_with_the_same_message() -> None:
    err = unknown_option_error("yolo", "treshold", ["conf", "iou", "threshold"])
    assert isinstance(err, UnknownOptionError) and isinstance(err, InvalidOptionError)
    assert err.key == "treshold" and err.valid == ["conf", "iou", "threshold"]
    assert str(err) == (
        "Unknown option 'treshold' for backend 'yolo'. Did you mean 'threshold'? Valid options: conf, iou, threshold."
    )
    with pytest.raises(UnknownOptionError) as info:
        parse_options(_PromptOptions, {"threads": 2}, "tiny-prompter")
    assert info.value.key == "threads" and "max_points" in info.value.valid


def test_invalid_values_and_devices_name_their_key() -> None:
    with pytest.raises(InvalidOptionError) as info:
        parse_options(_PromptOptions, {"batch_size": 0}, "tiny-prompter")
    assert info.value.key == "batch_size" and not isinstance(info.value, UnknownOptionError)
    assert str(info.value).startswith("Invalid option for backend 'tiny-prompter': batch_size=0:")
    with pytest.raises(InvalidOptionError) as info:
        parse_device(0)  # type: ignore[arg-type]
    assert info.value.key == "device"


def test_limit_errors_carry_their_limit_and_survive_pickling() -> None:
    err = LimitExceededError("max_imgsz", 4096, 2048, "Ask for less.")
    assert err.key == "max_imgsz"
    back = pickle.loads(pickle.dumps(err))  # Ray and multiprocessing send errors between processes
    assert type(back) is LimitExceededError and str(back) == str(err)
    assert (back.limit, back.value, back.maximum, back.key) == ("max_imgsz", 4096, 2048, "max_imgsz")
    unknown = pickle.loads(pickle.dumps(unknown_option_error("b", "k", ["x"])))
    assert unknown.key == "k" and unknown.valid == ["x"]


def test_export_and_dataset_errors_sit_in_the_tree() -> None:
    import visionkit.export

    assert visionkit.export.ExportNotSupportedError is ExportNotSupportedError
    assert issubclass(ExportNotSupportedError, VisionKitError)
    assert issubclass(DatasetError, VisionKitError)
    with pytest.raises(ExportNotSupportedError, match="does not implement `export_spec\\(\\)`"):
        visionkit.export.export_spec_of(TinyPrompter())
