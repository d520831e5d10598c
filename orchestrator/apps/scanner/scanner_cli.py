"""The scanner's command: ``orchestrator scan-discovery``."""

from __future__ import annotations

import json
import sys

import click

from orchestrator.cli import EXIT_FAILURE, EXIT_USAGE, config_option, load
from orchestrator.config import ConfigError
from orchestrator.logs import setup_logging


@click.command(name="scan-discovery")
@config_option
@click.option("--state", default="{}", show_default=True, help="The scanners' state (JSON object).")
def scan_discovery(config_path: str | None, state: str) -> None:
    """Run the discovery scanners once; candidates to stdout as JSON lines.

    Exit 1 if a scanner failed or timed out (the others' candidates are printed).
    """
    from orchestrator.apps.scanner.discovery import Status, run_discovery

    config = load(config_path)
    setup_logging(config.log)
    try:
        initial = json.loads(state)
    except ValueError:
        initial = None
    if not isinstance(initial, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--state")
    sys.path.insert(0, str(config.root))  # scanner modules may live in the repo
    try:
        result = run_discovery(config.sections["scanner"].discovery, initial)
    except ConfigError as exc:  # a target that cannot be imported
        for line in exc.problems:
            click.echo(line, err=True)
        sys.exit(EXIT_USAGE)
    for candidate in result.candidates:
        click.echo(json.dumps(candidate, default=str, ensure_ascii=False))
    if any(o.status is not Status.OK for o in result.outcomes):
        sys.exit(EXIT_FAILURE)
