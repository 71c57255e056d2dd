"""Second of two plugins claiming the same backend name."""

from typing import Any

import visionkit
from visionkit.testing.fakes import FakeClassifier


@visionkit.hookimpl
def register_backends(register: Any) -> None:
    register("clash", FakeClassifier, tasks=["classify"])
    register("dup-b-only", FakeClassifier, tasks=["classify"])
