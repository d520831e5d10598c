"""The spawner's history: its per-queue figures over the last hour, in Redis.

So the dashboard draws its charts without a Prometheus server. One hash per
host, ``orch:history:<host>``, one field per ``BUCKET_S`` (10 s) bucket,
named by the bucket's number modulo ``SLOTS`` (360): the hash never holds
more than an hour, however long the spawner runs, and it expires an hour
after the host's last write. A field's value is JSON::

    {"t": 1767225600, "q": {"ai_processing": [4, 2, 3, 2, 0, 1, 1, 0], ...}}

``t`` is the bucket's start (epoch seconds), and each queue's list follows
``FIELDS``: backlog, pending, live and busy workers and dead letters as
last seen in the bucket, then the spawns, exits and recovered entries
counted in it.

The writes ride on the tick's one round trip (``Telemetry`` is the tick's
extra) and are paced: the current bucket is rewritten at most once a second
however often the spawner ticks, and once more when it closes.

``spawner.history: auto`` (the default) records only while a dashboard
runs: the dashboard keeps ``orch:dashboard`` set (TTL 30 s), and the spawner
looks for it every ``WATCH_CHECK_S``, on the tick's round trip too; between
two looks, and while no dashboard runs, the tick is exactly what it is
without history. ``true`` records always (the last hour is there when a
dashboard is opened), ``false`` never.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator import codec, keys

if TYPE_CHECKING:
    import redis

    from orchestrator.status import HostStatus
    from orchestrator.telemetry import Totals

BUCKET_S = 10
SLOTS = 360
KEEP_S = BUCKET_S * SLOTS
WRITE_EVERY_S = 1.0
WATCH_CHECK_S = 10.0
DASHBOARD_TTL_S = 30
FIELDS = ("backlog", "pending", "live", "busy", "dead_letters", "spawns", "exits", "recovered")
GAUGES = FIELDS[:5]


class History:
    """Records one host's buckets; see the module doc."""

    def __init__(self, host: str, mode: str, clock: Callable[[], float] = time.time) -> None:
        self.key = keys.history(host)
        self.mode = mode
        self.clock = clock
        self.watched = mode == "true"
        self.next_check = 0.0
        self.next_write = 0.0
        self.checking = False  # the last queue_on asked whether a dashboard runs
        self.bucket: int | None = None  # the bucket being written
        self.base: dict[str, tuple[int, int, int]] = {}  # its queues' counters at its start
        self.resumed = False  # recording stopped (no dashboard) and starts again

    def queue_on(
        self, pipe: redis.client.Pipeline, snapshot: HostStatus, totals: Callable[[], Totals]
    ) -> int:
        """Queue this tick's commands (often none); how many."""
        now = self.clock()
        queued = 0
        self.checking = self.mode == "auto" and now >= self.next_check
        if self.checking:
            self.next_check = now + WATCH_CHECK_S
            pipe.exists(keys.DASHBOARD)
            queued += 1
        bucket = int(now // BUCKET_S)
        if not self.watched or (bucket == self.bucket and now < self.next_write):
            return queued
        self.next_write = now + WRITE_EVERY_S
        counts = _counts(totals())
        if self.bucket is None:  # the first recording counts from the start
            self.base = counts if self.resumed else self.base
        elif bucket != self.bucket:  # close the last one with what it counted
            pipe.hset(self.key, str(self.bucket % SLOTS), self._row(self.bucket, snapshot, counts))
            self.base = counts
            queued += 1
        self.bucket = bucket
        pipe.hset(self.key, str(bucket % SLOTS), self._row(bucket, snapshot, counts))
        pipe.expire(self.key, KEEP_S + BUCKET_S)
        return queued + 2

    def took(self, replies: list[Any]) -> None:
        """The replies to what ``queue_on`` queued: is a dashboard running?"""
        if self.checking and replies:
            self.watched = bool(replies[0])
            if not self.watched and self.bucket is not None:
                self.bucket = None  # when one comes back, count from then
                self.resumed = True

    def _row(self, bucket: int, snapshot: HostStatus, counts: Mapping[str, tuple[int, ...]]) -> str:
        rows: dict[str, list[int]] = {}
        for q in snapshot.queues:
            now, base = counts.get(q.name, (0, 0, 0)), self.base.get(q.name, (0, 0, 0))
            deltas = [max(0, n - b) for n, b in zip(now, base, strict=True)]
            rows[q.name] = [q.backlog, q.pending, q.live, q.busy, q.dead_letters, *deltas]
        return json.dumps({"t": bucket * BUCKET_S, "q": rows}, separators=(",", ":"))


def _counts(totals: Totals) -> dict[str, tuple[int, int, int]]:
    names = set(totals.spawns) | set(totals.recovered) | {q for q, _, _ in totals.exits}
    return {
        q: (totals.spawns.get(q, 0), totals.exits_of(q), totals.recovered.get(q, 0)) for q in names
    }


@dataclass(frozen=True, slots=True)
class Bucket:
    """One host's figures over one bucket: queue -> ``FIELDS`` -> value."""

    host: str
    t: int
    queues: Mapping[str, Mapping[str, int]]


def read_history(
    client: redis.Redis, hosts: Iterable[str], now: float | None = None
) -> list[Bucket]:
    """The buckets of the last hour of every host named, oldest first."""
    names = list(hosts)
    if not names:
        return []
    since = (time.time() if now is None else now) - KEEP_S
    pipe = client.pipeline(transaction=False)
    for host in names:
        pipe.hvals(keys.history(host))
    out = []
    for host, values in zip(names, pipe.execute(), strict=True):
        for raw in values or []:
            data = json.loads(codec.text(raw))
            if data["t"] >= since:
                queues = {q: dict(zip(FIELDS, row, strict=False)) for q, row in data["q"].items()}
                out.append(Bucket(host, int(data["t"]), queues))
    return sorted(out, key=lambda b: (b.t, b.host))


def mark_watched(pipe: redis.client.Pipeline) -> None:
    """A dashboard says it runs (see the module doc)."""
    pipe.set(keys.DASHBOARD, "1", ex=DASHBOARD_TTL_S)
