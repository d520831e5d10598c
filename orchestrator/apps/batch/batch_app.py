"""The batch engine as an app: its config section and its commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.apps.batch.batch_settings import parse_batch_settings
from orchestrator.plugins import App


def _commands() -> Sequence[Any]:
    from orchestrator.apps.batch.batch_cli import batch

    return [batch]


APP = App(name="batch", sections={"batch": parse_batch_settings}, commands=_commands)
