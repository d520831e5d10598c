"""A worker's reaction times, for the spawner's metrics.

A job's reaction time is from its entry id (the millisecond its XADD was
stored, by Redis' clock) to its handler's start (the worker's clock; a
negative difference, clock skew between hosts, counts as zero). Only first
deliveries count: a retry's id says when the job was first added.

The worker keeps them as histogram bucket counts and adds them to
``orch:reaction:<host>`` (fields ``<queue>:<le>``, and ``<queue>:sum``) in
the acknowledgement's MULTI/EXEC (``acks``), never in a round trip of their
own; the spawner's metrics server reads the hash when it is scraped. Only
while ``spawner.metrics_port`` is set (``ORCH_METRICS=1``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING

from orchestrator import keys

if TYPE_CHECKING:
    import redis

    from orchestrator.worker.jobs import Job
    from orchestrator.worker.workerenv import Settings

# Seconds; Prometheus' defaults stretched to the minutes a job may wait.
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0,
)  # fmt: skip
LABELS = (*(f"{b:g}" for b in LATENCY_BUCKETS_S), "+Inf")
KEEP_S = 86_400  # the hash outlives its host's last report by a day


class Reaction:
    """The reaction times of one worker's jobs, until they are flushed."""

    def __init__(self, settings: Settings) -> None:
        self.key = keys.reaction(settings.host)
        self.queue = settings.queue
        self.counts: dict[int, int] = {}
        self.total_s = 0.0

    def started(self, jobs: Iterable[Job]) -> None:
        """These jobs' handler starts now."""
        now_s = time.time()
        for job in jobs:
            if job.attempts > 1:
                continue
            added_ms = job.id.partition("-")[0]
            lag_s = max(0.0, now_s - int(added_ms) / 1000) if added_ms.isdigit() else 0.0
            index = bisect_left(LATENCY_BUCKETS_S, lag_s)
            self.counts[index] = self.counts.get(index, 0) + 1
            self.total_s += lag_s

    def queue_on(self, pipe: redis.client.Pipeline) -> None:
        """Add what was measured to the host's hash, on ``pipe`` (a MULTI)."""
        if not self.counts:
            return
        for index, n in self.counts.items():
            pipe.hincrby(self.key, f"{self.queue}:{LABELS[index]}", n)
        pipe.hincrbyfloat(self.key, f"{self.queue}:sum", round(self.total_s, 6))
        pipe.expire(self.key, KEEP_S)
        self.counts, self.total_s = {}, 0.0
