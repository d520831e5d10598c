"""The market scanner as an app: its config section, command and status figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.apps.scanner.scanner_settings import parse_scanner_settings
from orchestrator.plugins import App, Metric, StatusFigures


def _commands() -> Sequence[Any]:
    from orchestrator.apps.scanner.scanner_cli import scan_discovery

    return [scan_discovery]


def _read(client: Any) -> list[dict[str, Any]]:
    from orchestrator.apps.scanner.metrics_report import read_scanners

    return read_scanners(client)


def _line(metrics: Mapping[str, Any]) -> str:
    from orchestrator.apps.scanner.metrics_report import scanner_line

    return f"scanner {scanner_line(metrics)}"


def _counter(field: str, what: str) -> Metric:
    return Metric(f"orch_scanner_{field}_total", field, f"Ticks {what}, by this scanner", "counter")


METRICS = (
    _counter("submitted", "accepted by the pool"),
    _counter("completed", "processed and reported"),
    _counter("skipped_backlog", "shed by on_backlog_full: shed_oldest"),
    _counter("invalid", "that could not be parsed"),
    _counter("acked", "acknowledged"),
    Metric("orch_scanner_alerts_total", "alerts", "Alerts raised", "counter"),
    Metric("orch_scanner_ticks_per_second", "ticks_per_s", "Ticks completed per second, last 10 s"),
    Metric("orch_scanner_lag", "lag", "Ticks not yet delivered to the scanner group"),
    Metric("orch_scanner_batches_in_flight", "batches_in_flight", "Batches in the pool"),
    Metric("orch_scanner_held", "held", "Ticks read and not yet acknowledged"),
)
COLUMNS = (
    ("worker_id", "scanner"),
    ("host", "host"),
    ("ticks_per_s", "ticks/s"),
    ("submitted", "submitted"),
    ("completed", "completed"),
    ("skipped_backlog", "skipped"),
    ("alerts", "alerts"),
    ("lag", "lag"),
    ("batches_in_flight", "in flight"),
)

APP = App(
    name="scanner",
    sections={"scanner": parse_scanner_settings},
    commands=_commands,
    status=[
        StatusFigures(
            key="scanners",
            read=_read,
            line=_line,
            title="Scanners",
            columns=COLUMNS,
            metrics=METRICS,
            labels=("queue", "worker_id"),
            host_key="host",
        )
    ],
)
