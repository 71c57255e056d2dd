"""A plugin whose hook raises half-way: nothing it registered may leak in."""

from typing import Any

import visionkit
from visionkit.testing.fakes import FakeDetector


@visionkit.hookimpl
def register_backends(register: Any) -> None:
    register("half-registered", FakeDetector, tasks=["detect"])
    raise ValueError("hook failed after registering one backend")
