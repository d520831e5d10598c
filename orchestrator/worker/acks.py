"""What becomes of a worker's jobs, written back to Redis in one MULTI/EXEC.

A job that succeeded is acknowledged, and its result added to the ``then``
stream, in the same transaction, so a crash can neither lose nor duplicate
the hand-off. A job that can never run, or ran out of attempts, goes to
the dead-letter stream, acknowledged in the same transaction too. With the
first acknowledgement the worker marks ``orch:done:<consumer>``: it has
completed work, so its exit is no sign of a crash loop (the spawner reads
and deletes the mark when the worker is gone). A job delivered before runs
under the in-hand marker, cleared with its acknowledgement; entries read
and never started are released (the marker set empty), so none of them is
charged an attempt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from loguru import logger

from orchestrator import codec, keys
from orchestrator.deadletters import dead_letter_fields
from orchestrator.worker.jobs import Job
from orchestrator.worker.reaction import Reaction
from orchestrator.worker.workerenv import Settings

FLUSH_AFTER_S = 0.2  # results wait at most this long for their batch's ack
# A flush on another connection (the heartbeat's, with a 5 s read timeout)
# waits at most this long for replicas.
OTHER_WAIT_CAP_S = 3.0
DONE_MARK_SLACK_S = 600.0  # orch:done:<consumer> outlives the deadline by this


def mark_done(pipe: redis.client.Pipeline, settings: Settings) -> None:
    """Queue ``orch:done:<consumer>`` on ``pipe`` (see the module doc)."""
    ttl_s = max(0.0, settings.deadline - time.time()) + DONE_MARK_SLACK_S
    pipe.set(keys.worker_done(settings.consumer), 1, px=int(ttl_s * 1000))


class Acks:
    """The outcomes of one worker's jobs, until they are flushed."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.s = settings
        self.acks: list[str] = []
        self.forwards: list[dict[str, Any]] = []
        self.dead_letters: list[dict[bytes, bytes]] = []
        self.first_at = 0.0
        self.processed = 0  # jobs acknowledged as done
        self.reported = False  # orch:done:<consumer> is set
        self.short_of_replicas = False  # the last WAIT timed out (logged once per episode)
        self.reaction = Reaction(settings) if settings.report_reaction else None
        # The main thread adds outcomes; the heartbeat thread may flush them
        # while a long job runs (``readahead``).
        self._lock = threading.Lock()

    def ack(
        self, job: Job, result: dict[str, Any] | None, *, now: bool = False, at: float = 0.0
    ) -> bool:
        """``job`` succeeded; flushed when ``now`` or the batch is old enough
        (True: it was). ``at``: the monotonic time, if the caller has it."""
        at = at or time.monotonic()
        with self._lock:
            if not self.acks:
                self.first_at = at
            self.acks.append(job.id)
            if result is not None and self.s.then:
                self.forwards.append(result)
            self.processed += 1
            due = now or at - self.first_at >= FLUSH_AFTER_S
        if due:
            self.flush()
        return due

    def dead(self, job: Job, error: str) -> None:
        letter = dead_letter_fields(job.fields, error, job.attempts, job.id)
        with self._lock:
            if not self.acks:
                self.first_at = time.monotonic()
            self.acks.append(job.id)
            self.dead_letters.append(letter)
        logger.warning(f"{self.s.worker_id}: job {job.id} dead-lettered: {error}")

    def mark_in_hand(self, jobs: Sequence[Job]) -> None:
        """``jobs`` run under the in-hand marker (``orch:inhand:<consumer>``):
        a crash now is charged to them alone (see ``lua/park.lua``)."""
        self.client.set(keys.in_hand(self.s.consumer), " ".join(j.id for j in jobs))

    def release(self) -> None:
        """Stopping with entries read but not started: none was attempted."""
        self.client.set(keys.in_hand(self.s.consumer), "")

    def finish(self) -> None:
        """At a clean exit: what is left, the reaction times of failed jobs
        too (they ride on acknowledgements otherwise); one round trip at most."""
        if self.acks or self.reaction is None or not self.reaction.counts:
            self.flush()
            return
        pipe = self.client.pipeline(transaction=True)
        self.reaction.queue_on(pipe)
        pipe.execute()

    def flush(self, clear_in_hand: bool = False, *, client: redis.Redis | None = None) -> None:
        """Write what is pending in one MULTI/EXEC. ``client``: another
        connection than the worker's (the heartbeat thread's, while the main
        thread runs a long job; the reaction times then wait: they are the
        main thread's)."""
        with self._lock:
            if not self.acks and not clear_in_hand:
                return
            # Taken before the write: a write that fails leaves its entries
            # pending (run again, uncounted, by whoever gets them), never sent
            # twice by a later flush (its EXEC may have been applied).
            acks, forwards, dead = self.acks, self.forwards, self.dead_letters
            self.acks, self.forwards, self.dead_letters = [], [], []
            on = client or self.client
            pipe = on.pipeline(transaction=True)
            if clear_in_hand:
                pipe.delete(keys.in_hand(self.s.consumer))
            for result in forwards:
                pipe.xadd(self.s.then or "", {codec.PAYLOAD: codec.encode_payload(result)})
            for fields in dead:
                pipe.xadd(keys.dead_stream(self.s.stream), fields)  # type: ignore[arg-type]
            if acks:
                pipe.xack(self.s.stream, self.s.group, *acks)
                if not self.reported:
                    mark_done(pipe, self.s)
            if self.reaction is not None and client is None:
                self.reaction.queue_on(pipe)
            pipe.execute()
            if acks:
                self.reported = True
                self._wait_for_replicas(on, cap_s=None if client is None else OTHER_WAIT_CAP_S)

    def _wait_for_replicas(self, client: redis.Redis, cap_s: float | None = None) -> None:
        """``redis.wait_replicas``: the acknowledgement (and the results it
        handed on) is on that many replicas before the next job starts, so a
        failover cannot forget it. Short of them at the timeout: logged once,
        and the work goes on (Redis has it; only its copies are late).
        ``cap_s``: at most this long (another connection's read timeout)."""
        want = self.s.wait_replicas
        if not want:
            return
        timeout_s = self.s.wait_timeout_s if cap_s is None else min(cap_s, self.s.wait_timeout_s)
        got = int(client.wait(want, int(timeout_s * 1000)))
        if got < want and not self.short_of_replicas:
            logger.warning(
                f"{self.s.worker_id}: acknowledgement on {got} of {want} replica(s) after "
                f"{timeout_s:g}s (redis.wait_replicas); carrying on"
            )
        self.short_of_replicas = got < want
