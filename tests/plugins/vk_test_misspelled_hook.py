"""A plugin with a misspelled hook name: pluggy's check_pending must flag it."""

from typing import Any

import visionkit


@visionkit.hookimpl
def register_backend(register: Any) -> None:  # missing "s": not a visionkit hook
    register("never", object, tasks=["detect"])
