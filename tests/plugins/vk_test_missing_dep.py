"""A plugin whose backend needs a library that is not installed."""

from typing import Any

import visionkit


@visionkit.hookimpl
def register_backends(register: Any) -> None:
    register(
        "needs-missing",
        "vk_test_missing_dep_impl:Backend",
        tasks=["detect"],
        requires=["visionkit_definitely_not_installed"],
        install="pip install visionkit-definitely-not-installed",
    )
