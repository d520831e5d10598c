"""The announcement pipeline's command: ``orchestrator demo`` (what ``make run`` runs)."""

from __future__ import annotations

import sys

import click

from orchestrator.cli import config_option


@click.command()
@config_option
def demo(config_path: str | None) -> None:
    """The demo pipeline end to end (what 'make run' runs)."""
    from orchestrator.apps.announcements.demo import run_demo

    sys.exit(run_demo(config_path))
