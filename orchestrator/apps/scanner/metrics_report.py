"""The scanner's metrics: published to Redis for ``orchestrator status``, and logged.

Every ``PUBLISH_EVERY_S`` the scanner writes ``orch:scanner:<consumer>``
(JSON, TTL ``METRICS_TTL_S``, deleted on a clean exit) holding the pool's
counters (``submitted``, ``completed``, ``skipped_backlog``, ``alerts``,
``invalid``, ``failed``, ``suppressed``, restarts, ``ticks_per_s``,
``batches_in_flight``, ``backlog``, ``workers``), its own (``acked``,
``dead_lettered``, ``held``: read and not yet acknowledged, ``read_size``),
the group's ``lag`` (entries not yet delivered; Redis >= 7, else None) and
``pending`` on this consumer, and who it is (queue, worker id, consumer,
host, pid, start and publication times). Every ``log_interval`` the same
figures make one log line (``scanner_line``, as ``orchestrator status``
shows them: the scanner app registers them as its status figures).

The same round trip tells the caller whether Redis holds more entries for
this consumer than it knows of (``Published.handed``): the spawner handed
it entries recovered from a dead worker, to be read from its own pending
list.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from loguru import logger

from orchestrator import codec, keys
from orchestrator.worker import Settings

__all__ = [
    "PUBLISH_EVERY_S",
    "Published",
    "Reporter",
    "metrics_key",
    "read_scanners",
    "scanner_line",
]

PUBLISH_EVERY_S = 1.0
METRICS_TTL_S = 10.0


@dataclass(frozen=True, slots=True)
class Published:
    lag: int | None
    pending: int  # on this consumer, as Redis counts it
    handed: bool  # Redis holds more for us than we know of


class Reporter:
    """Publishes and logs the metrics of one scanner consumer."""

    def __init__(
        self,
        client: redis.Redis,
        worker: Settings,
        log_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.s = worker
        self.key = metrics_key(worker.consumer)
        self.log_interval_s = log_interval_s
        self.clock = clock
        self.next_publish = 0.0
        self.next_log = clock() + log_interval_s
        self.started_at = time.time()

    def due(self) -> bool:
        return self.clock() >= self.next_publish

    def publish(self, metrics: Mapping[str, Any], held: int) -> Published:
        """Read lag and our pending count, publish ``metrics`` with them; log when due."""
        now = self.clock()
        self.next_publish = now + PUBLISH_EVERY_S
        pipe = self.client.pipeline(transaction=False)
        pipe.xinfo_groups(self.s.stream)
        pipe.xpending(self.s.stream, self.s.group)
        groups, summary = pipe.execute()
        lag = _lag(groups, self.s.group)
        pending = _pending_of(summary, self.s.consumer)
        row = {**metrics, "held": held, "lag": lag, "pending": pending, **self._identity()}
        self.client.set(self.key, json.dumps(row), px=int(METRICS_TTL_S * 1000))
        if now >= self.next_log:
            self.next_log = now + self.log_interval_s
            logger.bind(event="scanner_metrics", **_loggable(row)).info(scanner_line(row))
        return Published(lag, pending, pending > held)

    def withdraw(self) -> None:
        self.client.delete(self.key)

    def _identity(self) -> dict[str, Any]:
        return {
            "queue": self.s.queue,
            "worker_id": self.s.worker_id,
            "consumer": self.s.consumer,
            "host": self.s.host,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "at": time.time(),
        }


def _lag(groups: Any, group: str) -> int | None:
    for info in groups or []:
        name = info["name"]
        if codec.text(name) == group:
            lag = info.get("lag")
            return None if lag is None else int(lag)
    return None


def _pending_of(summary: Any, consumer: str) -> int:
    for row in (summary or {}).get("consumers") or []:
        name = row["name"]
        if codec.text(name) == consumer:
            return int(row["pending"])
    return 0


def _loggable(row: Mapping[str, Any]) -> dict[str, Any]:
    skip = {"queue", "worker_id", "consumer", "host", "pid", "started_at", "at"}
    return {k: v for k, v in row.items() if k not in skip}


def metrics_key(consumer: str) -> str:
    """``orch:scanner:<consumer>``: a scanner's published metrics."""
    return f"{keys.PREFIX}scanner:{consumer}"


def read_scanners(client: redis.Redis) -> list[dict[str, Any]]:
    """Metrics the running scanner workers publish (``orch:scanner:<consumer>``)."""
    names = sorted(client.scan_iter(match=metrics_key("*"), count=100))
    raw: Any = client.mget(names) if names else []
    return [json.loads(r) for r in raw if r]


def scanner_line(m: Mapping[str, Any]) -> str:
    """``scanner_1: 98,765 ticks/s, submitted 1,234, ...``: status and the scanner's log."""
    lag = "-" if m.get("lag") is None else f"{m['lag']:,}"
    return (
        f"{m.get('worker_id', '?')}: {m.get('ticks_per_s', 0):,.0f} ticks/s, "
        f"submitted {m.get('submitted', 0):,}, completed {m.get('completed', 0):,}, "
        f"skipped_backlog {m.get('skipped_backlog', 0):,}, alerts {m.get('alerts', 0):,}, "
        f"lag {lag}, in flight {m.get('batches_in_flight', 0)}/{m.get('backlog', 0)} batches"
    )
