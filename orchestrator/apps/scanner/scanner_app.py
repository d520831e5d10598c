"""The market scanner as an app: its config section, command and status figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.apps.scanner.scanner_settings import parse_scanner_settings
from orchestrator.plugins import App, StatusFigures


def _commands() -> Sequence[Any]:
    from orchestrator.apps.scanner.scanner_cli import scan_discovery

    return [scan_discovery]


def _read(client: Any) -> list[dict[str, Any]]:
    from orchestrator.apps.scanner.metrics_report import read_scanners

    return read_scanners(client)


def _line(metrics: Mapping[str, Any]) -> str:
    from orchestrator.apps.scanner.metrics_report import scanner_line

    return f"scanner {scanner_line(metrics)}"


APP = App(
    name="scanner",
    sections={"scanner": parse_scanner_settings},
    commands=_commands,
    status=[StatusFigures(key="scanners", read=_read, line=_line)],
)
