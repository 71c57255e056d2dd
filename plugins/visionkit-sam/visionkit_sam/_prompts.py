"""SAM's prompt grammar now lives in the core (:mod:`visionkit.prompts`), shared with SAM 2; kept importable here."""

from __future__ import annotations

from visionkit.prompts import Prompts, parse_prompts

__all__ = ["Prompts", "parse_prompts"]
