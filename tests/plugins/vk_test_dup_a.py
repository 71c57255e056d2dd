"""First of two plugins claiming the same backend name."""

from typing import Any

import visionkit
from visionkit.testing.fakes import FakeDetector


@visionkit.hookimpl
def register_backends(register: Any) -> None:
    register("clash", FakeDetector, tasks=["detect"])
