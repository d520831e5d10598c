"""The announcement pipeline's command: ``orchestrator demo`` (what ``make run`` runs)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from orchestrator import shipped
from orchestrator.cli import config_option


@click.command()
@config_option
def demo(config_path: str) -> None:
    """The demo pipeline end to end (what 'make run' runs).

    With no config of yours (no -c, no ORCH_CONFIG, no config/workers.yaml
    here) it runs the shipped one, its database under ./var/.
    """
    from orchestrator.apps.announcements.demo import run_demo

    source = click.get_current_context().get_parameter_source("config_path")
    if source is ParameterSource.DEFAULT and not Path(config_path).exists():
        sys.exit(run_demo(str(shipped.config_path()), data_root=Path.cwd()))
    sys.exit(run_demo(config_path))
