"""One shard's progress: counting results, pacing writes, measuring the rate.

Pure bookkeeping (no Redis). A batch worker writes to its batches' hashes
at most every ``interval_s`` (the batch section's ``progress_interval``, at
least half a second), the write carrying a shard's results and the one
marking the batch done included: the worker's ``Pacer``, which the ledger
consults before every write, keeps the time of its last write across
shards. So that the last write need not wait, a progress update is skipped
when the shard should end within ``interval_s`` anyway (but updates are
never more than ``2 x interval_s`` apart while results come in); and a
shard that ends before its first update is written once. The rate is measured over
the updates of the last ``RATE_WINDOW_S`` seconds, so it follows a batch
that speeds up or slows down, and an ETA computed from it does not swing
with every result.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from orchestrator.apps.batch.batch_record import ShardRecord
from orchestrator.apps.batch.engine import ProcessingResult

__all__ = ["RATE_WINDOW_S", "Pacer", "ShardProgress"]

RATE_WINDOW_S = 5.0


class Pacer:
    """When a worker last wrote to Redis, and when it may write again."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.last: float | None = None

    def wait_s(self) -> float:
        if self.last is None:
            return 0.0
        return max(0.0, self.last + self.interval_s - self.clock())

    def wait_turn(self) -> None:
        """Sleep until a write may go out (before an obligatory one)."""
        delay = self.wait_s()
        if delay:
            time.sleep(delay)

    def wrote(self) -> None:
        self.last = self.clock()


class ShardProgress:
    """Counts one shard's results and says when an update may go out."""

    def __init__(
        self, total: int, pacer: Pacer, worker: str, wall: Callable[[], float] = time.time
    ) -> None:
        self.total = total
        self.pacer = pacer
        self.worker = worker
        self.wall = wall
        self.completed = 0
        self.errors = 0
        self.updates = 0  # records made for this shard
        self.started = pacer.clock()
        self.started_at = wall()
        self.samples: deque[tuple[float, int]] = deque([(self.started, 0)])

    def add(self, result: ProcessingResult) -> None:
        self.completed += 1
        self.errors += result.error is not None

    def due(self) -> bool:
        """Should a progress update go out now? Not before the pacer allows;
        not when the shard should end (its last write) within the interval
        anyway, unless the last write is ``2 x interval`` old: an estimate
        misled by a mix of fast and slow symbols delays an update, never
        stops them."""
        interval = self.pacer.interval_s
        if self.pacer.wait_s() > 0 or self.completed >= self.total:
            return False
        now = self.pacer.clock()
        if now - self.started < interval:
            return False
        last = self.started if self.pacer.last is None else max(self.pacer.last, self.started)
        if now - last >= 2 * interval:
            return True
        rate = self.completed / (now - self.started)
        return rate <= 0 or (self.total - self.completed) / rate >= interval

    def rate(self, now: float) -> float:
        """Results per second over the recent updates."""
        while len(self.samples) > 1 and now - self.samples[1][0] >= RATE_WINDOW_S:
            self.samples.popleft()
        then, done_then = self.samples[0]
        return (self.completed - done_then) / (now - then) if now > then else 0.0

    def update(self, state: str = "running") -> ShardRecord:
        """The record to write now (the ledger writes it, paced)."""
        now = self.pacer.clock()
        rate = self.rate(now) if state == "running" else 0.0
        self.samples.append((now, self.completed))
        self.updates += 1
        return ShardRecord(
            state=state,
            completed=self.completed,
            total=self.total,
            errors=self.errors,
            rate=round(rate, 3),
            worker=self.worker,
            started_at=round(self.started_at, 3),
            updated_at=round(self.wall(), 3),
        )

    def stopped(self) -> ShardRecord:
        """The record of a shard given back: it starts again from zero."""
        self.completed = self.errors = 0
        return self.update("queued")
