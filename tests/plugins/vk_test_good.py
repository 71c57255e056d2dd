"""A well-behaved test plugin registering the fake detector under another name."""

from typing import Any

import visionkit
from visionkit.testing.fakes import FakeDetector


@visionkit.hookimpl
def register_backends(register: Any) -> None:
    register("good-detector", FakeDetector, tasks=["detect"], aliases=["good"], description="fake detector")
