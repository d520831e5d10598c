"""What the spawner counts about itself, for its metrics and its history.

``Telemetry`` observes the calls that already say what happened (the log
lines of ``messages.SpawnerLog`` and the recoveries of ``recovery``), so the
spawner's code gains no counting of its own: spawns, exits by cause,
entries recovered and dead-lettered, and how long a gone worker's entries
waited to be handed on. It also rides on the tick's one round trip
(``queues.TickProbe``'s extra): it keeps the snapshot the tick published
(the gauges of the metrics), times the round trip, and lets ``history``
queue its writes on the same pipeline.

Nothing here imports ``prometheus_client``: ``metrics`` renders these
figures only when ``spawner.metrics_port`` is set. A spawner with metrics
and history off has no ``Telemetry`` at all (see ``configured``).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loguru import logger

from orchestrator.fleet import StopReason
from orchestrator.procs import ExitStatus, signal_name
from orchestrator.worker.reaction import LATENCY_BUCKETS_S

if TYPE_CHECKING:
    import redis

    from orchestrator.config import Config, SpawnerConfig
    from orchestrator.connections import RedisHealth
    from orchestrator.history import History
    from orchestrator.logs import Events
    from orchestrator.metrics import MetricsServer
    from orchestrator.status import HostStatus

ROUND_TRIP_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Parked entries whose hand-out is awaited, per queue, at most (older ones
# are forgotten: another host may have handed them on, or they were
# dead-lettered).
PENDING_RECOVERIES_MAX = 1000


@dataclass(slots=True)
class Histogram:
    """Bucket counts (``counts[i]``: observations <= ``bounds[i]``, the last
    one above every bound) and their sum: what a Prometheus histogram is."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total)


def exit_cause(stop_reason: StopReason | None, status: ExitStatus) -> tuple[str, str]:
    """(cause, status) labels of an exit: ``max_runtime``, ``memory`` or
    ``stopped`` (the spawner asked it to go) before how it ended: ``code``
    (status ``"0"``, ``"75"``...) or ``signal`` (``"SIGKILL"``); ``gone``
    for an adopted worker whose end nobody saw."""
    how = (
        signal_name(status.signal)
        if status.signal is not None
        else ("" if status.code is None else str(status.code))
    )
    if stop_reason in (StopReason.MAX_RUNTIME, StopReason.MEMORY):
        return stop_reason.value, how
    if stop_reason is not None:
        return "stopped", how
    if status.signal is not None:
        return "signal", how
    return ("gone", how) if status.code is None else ("code", how)


@dataclass(frozen=True, slots=True)
class Totals:
    """The counters at one moment (copied under the lock)."""

    spawns: Mapping[str, int]
    exits: Mapping[tuple[str, str, str], int]  # (queue, cause, status)
    recovered: Mapping[str, int]
    dead_lettered: Mapping[str, int]
    recovery: Mapping[str, Histogram]
    round_trip: Histogram

    def exits_of(self, queue: str) -> int:
        return sum(n for (q, _, _), n in self.exits.items() if q == queue)


class Telemetry:
    """The spawner's own figures; its methods are called on the spawner's
    thread, ``totals()`` from the metrics server's too."""

    def __init__(self, host: str, history: History | None = None) -> None:
        self.host = host
        self.history = history
        self.lock = threading.Lock()
        self.spawns: Counter[str] = Counter()
        self.exits: Counter[tuple[str, str, str]] = Counter()
        self.recovered: Counter[str] = Counter()
        self.dead_lettered: Counter[str] = Counter()
        self.recovery: dict[str, Histogram] = {}
        self.round_trip = Histogram(ROUND_TRIP_BUCKETS_S)
        self.awaiting: dict[str, deque[list[float]]] = {}  # queue -> [since, entries left]
        self.latest: HostStatus | None = None  # the snapshot the last tick published
        self.health: RedisHealth | None = None
        self.server: MetricsServer | None = None

    @classmethod
    def configured(cls, spawner: SpawnerConfig) -> Telemetry | None:
        """A Telemetry when metrics or history may be wanted; None when both are off."""
        if spawner.metrics_port is None and spawner.history == "false":
            return None
        from orchestrator.history import History

        history = None if spawner.history == "false" else History(spawner.host, spawner.history)
        return cls(spawner.host, history)

    # -- events (SpawnerLog, Recovery) ----------------------------------------

    def spawned(self, queue: str) -> None:
        with self.lock:
            self.spawns[queue] += 1

    def exited(self, queue: str, stop_reason: StopReason | None, status: ExitStatus) -> None:
        cause, how = exit_cause(stop_reason, status)
        with self.lock:
            self.exits[queue, cause, how] += 1

    def recovered_entries(self, queue: str, parked: int, dead: int, since: float | None) -> None:
        """A gone consumer's entries: ``parked`` handed back (straight to a
        successor when ``since`` is None, else waiting for a worker since
        then, monotonic), ``dead`` dead-lettered."""
        with self.lock:
            self.recovered[queue] += parked
            self.dead_lettered[queue] += dead
            if parked and since is not None:
                waiting = self.awaiting.setdefault(queue, deque(maxlen=PENDING_RECOVERIES_MAX))
                waiting.append([since, float(parked)])

    def handed_on(self, queue: str, entries: int, since: float | None = None) -> None:
        """``entries`` parked entries went to workers (oldest recoveries first);
        a recovery whose entries are all handed on is timed, from ``since``
        when it went straight to its successor."""
        now = time.monotonic()
        with self.lock:
            histogram = self.recovery.setdefault(queue, Histogram(LATENCY_BUCKETS_S))
            if since is not None:
                histogram.observe(now - since)
                return
            waiting = self.awaiting.get(queue)
            while waiting and entries > 0:
                taken = min(entries, int(waiting[0][1]))
                entries -= taken
                waiting[0][1] -= taken
                if waiting[0][1] <= 0:
                    histogram.observe(now - waiting.popleft()[0])

    # -- the tick (TickProbe's extra) -----------------------------------------

    def queue_on(self, pipe: redis.client.Pipeline, snapshot: HostStatus) -> int:
        """Keep the snapshot; queue the history's writes; how many commands."""
        self.latest = snapshot
        if self.history is None:
            return 0
        try:
            return self.history.queue_on(pipe, snapshot, self.totals)
        except Exception:  # the spawner must not die of its history: it stops instead
            logger.opt(exception=True).error("History failed and stops; the spawner goes on")
            self.history = None
            return 0

    def took(self, replies: list[Any], round_trip_s: float) -> None:
        with self.lock:
            self.round_trip.observe(round_trip_s)
        if self.history is not None:
            self.history.took(replies)

    def totals(self) -> Totals:
        with self.lock:
            return Totals(
                dict(self.spawns),
                dict(self.exits),
                dict(self.recovered),
                dict(self.dead_lettered),
                {q: h.copy() for q, h in self.recovery.items()},
                self.round_trip.copy(),
            )

    # -- the metrics server -----------------------------------------------------

    def open(self, config: Config, health: RedisHealth, events: Events) -> None:
        """Serve the metrics when ``spawner.metrics_port`` is set; a port that
        cannot be bound is logged, and the spawner runs on without them."""
        self.health = health
        port = config.spawner.metrics_port
        if port is None:
            return
        from orchestrator.metrics import MetricsServer

        try:
            self.server = MetricsServer.start(self, config, port)
        except OSError as exc:
            events.error(
                "metrics_failed",
                "❌",
                f"Cannot serve metrics on {config.spawner.metrics_host}:{port}: {exc}",
            )
            return
        events.info(
            "metrics",
            "📈",
            f"Metrics on http://{config.spawner.metrics_host}:{port}/metrics",
            port=port,
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
