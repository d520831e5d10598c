"""Entries a worker has read but not started: given back when they wait.

A ``run_worker`` worker reads ahead only what it expects to start within
``PREFETCH_WINDOW_S``, judging by its recent time per job. When a job runs
longer than that (slow jobs after quick ones), the entries behind it would
wait for it while other workers sit idle or are never started. So once the
job in hand has run ``GIVE_BACK_AFTER_S``, the heartbeat thread gives them
back: claimed by the parking consumer in one MULTI/EXEC, their delivery
uncounted (``RETRYCOUNT`` one less, as the reaper does for entries a dead
worker never started), and the spawner woken (``orch:wake:<host>``), which
hands them to idle workers or starts new ones at once. The main thread
takes each next job under the same lock, so an entry is either started
here or given back, never both. The same thread then writes the outcomes
of the jobs done before the long one (``Acks.flush`` on its connection):
they do not stay pending, to be charged and run again if the worker dies.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from typing import Any

import redis

from orchestrator import keys
from orchestrator.worker.acks import Acks
from orchestrator.worker.jobs import Job
from orchestrator.worker.workerenv import Settings

# A ``run_worker`` worker reads ahead only the entries it expects to start
# within this window, judging by its recent time per job (at first: one
# entry). Slow jobs are therefore never read ahead, and N jobs on M idle
# workers start min(N, M) at once; tiny jobs are still read up to
# ``batch_size`` at a time. (A batch handler starts all it reads at once.)
PREFETCH_WINDOW_S = 0.02
# Entries behind a job that has run this long are given back; the heartbeat
# thread of a ``run_worker`` worker looks every ``CHECK_INTERVAL_S``.
GIVE_BACK_AFTER_S = 0.05
CHECK_INTERVAL_S = 0.025


class ReadAhead:
    """The jobs of one read that have not started yet, in order."""

    def __init__(self, settings: Settings, acks: Acks) -> None:
        self.s = settings
        self.acks = acks
        self._lock = threading.Lock()
        self._jobs: list[Job] = []
        self._next = 0  # index of the next job to start
        self._started_at = math.inf  # monotonic: when the job in hand started (inf: none)
        self._seen_late = False  # the job in hand was found late (and acted on)
        self.given_back = 0  # entries given back so far (for the exit line)

    @property
    def holding(self) -> bool:
        """Some job waits behind the one in hand (read without the lock)."""
        return self._next < len(self._jobs)

    def late(self, now: float) -> bool:
        """The job in hand has run ``GIVE_BACK_AFTER_S``, not yet acted on
        (read without the lock: ``on_late`` looks again under it)."""
        return not self._seen_late and now - self._started_at >= GIVE_BACK_AFTER_S

    def hold(self, jobs: list[Job]) -> None:
        """The main thread is about to run ``jobs`` one by one."""
        with self._lock:
            self._jobs, self._next = jobs, 0
            self._started_at = math.inf

    def take(self, now: float) -> Job | None:
        """The next job, starting ``now`` (monotonic), or None: all started
        or given back."""
        with self._lock:
            if self._next >= len(self._jobs):
                return None
            self._next += 1
            self._started_at, self._seen_late = now, False
            return self._jobs[self._next - 1]

    def finished(self) -> None:
        """The job in hand is done (what follows, such as waiting for a rate
        limit's token, is not a job running long)."""
        self._started_at = math.inf

    def on_late(self, client: redis.Redis, now: float) -> None:
        """From the heartbeat thread, on ``client``: if the job in hand is
        late, give back the jobs behind it and write the outcomes of those
        done before it.

        The jobs are dropped here before Redis is asked: if the call fails,
        they stay pending on this worker, which reads its own pending
        entries again before its next read and runs them.
        """
        with self._lock:
            if self._seen_late or now - self._started_at < GIVE_BACK_AFTER_S:
                return
            self._seen_late = True
            behind = self._jobs[self._next :]
            del self._jobs[self._next :]
            if behind:
                give_back(client, self.s, behind)
                self.given_back += len(behind)
        self.acks.flush(client=client)


def give_back(client: redis.Redis, settings: Settings, jobs: list[Job]) -> None:
    """Park ``jobs`` uncounted and wake this host's spawner (one MULTI/EXEC)."""
    by_count: dict[int, list[Any]] = defaultdict(list)  # ids, as redis-py types them
    for job in jobs:
        by_count[job.attempts].append(job.id)
    s = settings
    pipe = client.pipeline(transaction=True)
    for attempts, ids in by_count.items():
        pipe.xclaim(
            s.stream, s.group, keys.PARKING_CONSUMER, 0, ids,
            retrycount=max(attempts - 1, 0), justid=True,
        )  # fmt: skip
    if host := keys.consumer_host(s.consumer):
        pipe.xadd(keys.wake(host), {"entries": len(jobs)}, maxlen=1, approximate=False)
    pipe.execute()
