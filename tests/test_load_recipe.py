"""LoadRecipe: load()'s arguments as one value that tools carry instead of command-line namespaces."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import visionkit
from visionkit.errors import InvalidOptionError, TaskNotSupportedError, UnknownBackendError
from visionkit.loading import LoadRecipe, resolve
from visionkit.protocols import Task

FAKES = ("visionkit.testing.fakes:fake_plugin",)


def test_check_runs_loads_checks_without_building_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    monkeypatch.setattr("visionkit.testing.fakes.FakeDetector.__init__", lambda *a, **k: built.append(a))
    assert LoadRecipe("fake-detector", plugins=FAKES).check().name == "fake-detector"
    with pytest.raises(UnknownBackendError):
        LoadRecipe("fake-detectr", plugins=FAKES).check()
    with pytest.raises(TaskNotSupportedError):
        LoadRecipe("fake-detector", plugins=FAKES, task=Task.CLASSIFY).check()
    with pytest.raises(InvalidOptionError, match="Unknown option 'nope'"):
        LoadRecipe("fake-detector", plugins=FAKES, options={"nope": 1}).check()
    with pytest.raises(InvalidOptionError, match="does not support precision 'int8'"):
        LoadRecipe("fake-detector", plugins=FAKES, precision="int8").check()
    assert built == []


def test_the_task_is_parsed_once_and_defaults_from_the_registration() -> None:
    assert LoadRecipe("fake-detector", task="detect").task is Task.DETECT
    assert LoadRecipe("fake-instance", plugins=FAKES).default_task() is Task.SEGMENT_INSTANCES
    assert LoadRecipe("fake-prompt", plugins=FAKES).default_task() is Task.SEGMENT_PROMPT
    with pytest.raises(InvalidOptionError, match="pass task="):
        LoadRecipe("fake-prompt", plugins=FAKES).default_task(prompt=False)
    with pytest.raises(InvalidOptionError, match="Unknown task"):
        LoadRecipe("fake-detector", task="nosuch")


def test_a_recipe_pickles_and_loads_like_load(tmp_path: Any) -> None:
    recipe = LoadRecipe("fake-detector", weights=None, options={"conf": 0.5}, plugins=FAKES)
    again = pickle.loads(pickle.dumps(recipe))
    assert again == recipe
    backend = again()
    assert isinstance(backend, visionkit.Detector) and backend.options.conf == 0.5
    loaded, name, precision = resolve(recipe)
    assert (name, precision) == ("fake-detector", "fp32") and loaded.options.conf == 0.5


def test_predict_dir_on_ray_parses_the_task_once_and_carries_one_recipe(
    fake_registry: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray.data")
    import visionkit.ray
    from visionkit.cli import main

    (tmp_path / "in").mkdir()
    parsed: list[Any] = []
    real_parse = Task.parse.__func__  # type: ignore[attr-defined]

    def counting_parse(cls: type[Task], value: Any) -> Task:
        if not isinstance(value, Task):
            parsed.append(value)  # text turned into a Task: this should happen once
        return real_parse(cls, value)

    seen: dict[str, Any] = {}

    def fake_predict_ray(loader: Any, inputs: Any, **kwargs: Any) -> Any:
        seen.update(loader=loader, kwargs=kwargs)
        loader.check()  # what the real one does first, on the driver
        loader.default_task(prompt=False)
        from visionkit.stream import StreamSummary

        return StreamSummary(out=str(kwargs["out"]))

    monkeypatch.setattr(Task, "parse", classmethod(counting_parse))
    monkeypatch.setattr(visionkit.ray, "predict_ray", fake_predict_ray)
    argv = ["predict", "fake-detector", str(tmp_path / "in"), "--ray", "--out", str(tmp_path / "o.jsonl")]
    assert main([*argv, "--task", "detect"]) == 0
    assert isinstance(seen["loader"], LoadRecipe) and seen["loader"].task is Task.DETECT
    assert "task" not in seen["kwargs"]  # the recipe carries it; no second copy travels
    assert parsed == ["detect"]
