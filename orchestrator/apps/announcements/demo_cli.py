"""The announcement pipeline's command: ``orchestrator demo`` (what ``make run`` runs)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator import shipped
from orchestrator.cli import config_option
from orchestrator.config import ConfigError, find_config


@click.command()
@config_option
def demo(config_path: str | None) -> None:
    """The demo pipeline end to end (what 'make run' runs).

    With no config of yours (no -c, no ORCH_CONFIG, none on the search path)
    it runs the shipped one, its database under ./var/.
    """
    from orchestrator.apps.announcements.demo import run_demo

    if config_path is None:
        try:
            find_config()
        except ConfigError:
            sys.exit(run_demo(str(shipped.config_path()), data_root=Path.cwd()))
    sys.exit(run_demo(config_path))
