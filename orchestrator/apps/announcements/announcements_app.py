"""The announcement pipeline as an app: its config sections and the demo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.apps.announcements.pipeline_settings import SECTION_PARSERS
from orchestrator.plugins import App


def _commands() -> Sequence[Any]:
    from orchestrator.apps.announcements.demo_cli import demo

    return [demo]


APP = App(name="announcements", sections=SECTION_PARSERS, commands=_commands, extra="announcements")
