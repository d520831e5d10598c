"""The batch engine as an app: its config section, its commands, and its
batches' progress as status figures (``orchestrator status``, the dashboard's
progress bars, the metrics)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.apps.batch.batch_settings import parse_batch_settings
from orchestrator.plugins import App, Metric, StatusFigures


def _commands() -> Sequence[Any]:
    from orchestrator.apps.batch.batch_cli import batch

    return [batch]


def _read(client: Any) -> list[dict[str, Any]]:
    from orchestrator.apps.batch.batch_status import recent_batches

    return recent_batches(client)


def _line(record: Mapping[str, Any]) -> str:
    from orchestrator.apps.batch.batch_status import format_line, status_of

    return f"batch {format_line(status_of(record), time.time())}"


def _progress(record: Mapping[str, Any]) -> float | None:
    ratio = record.get("ratio")
    return float(ratio) if isinstance(ratio, int | float) else None


# Batches are the Redis' own, not a host's: every spawner exports the same
# (take max by batch_id in a dashboard).
METRICS = (
    Metric("orch_batch_symbols", "total", "Symbols in the batch"),
    Metric("orch_batch_symbols_completed", "completed", "Symbols finished"),
    Metric("orch_batch_symbols_failed", "errors", "Symbols finished with an error"),
    Metric("orch_batch_rate_symbols_per_second", "rate", "Symbols per second, now"),
    Metric("orch_batch_progress_ratio", "ratio", "Share of the symbols finished, 0 to 1"),
)

APP = App(
    name="batch",
    extra="batch",
    sections={"batch": parse_batch_settings},
    commands=_commands,
    status=[
        StatusFigures(
            key="batches",
            read=_read,
            line=_line,
            title="Batch jobs",
            columns=(
                ("batch_id", "batch"),
                ("state", "state"),
                ("progress", "symbols"),
                ("errors", "errors"),
                ("rate", "symbols/s"),
                ("eta_s", "ETA s"),
                ("formula", "formula"),
            ),
            progress=_progress,
            metrics=METRICS,
            labels=("batch_id",),
        )
    ],
)
