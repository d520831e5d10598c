"""What a worker reads: its own pending entries first, then new ones.

The first round trip (``first_read.lua``) names the connection, takes its
client id and reads the first jobs. Then the worker's own pending list
(work handed to it, or its own failures, with their delivery counts) is
read when it can have gained entries, and before a read that comes
``OWN_CHECK_INTERVAL_S`` after the last look; new entries are read in a
blocking read (of at most ``BLOCK_MAX_S``) that a
stop signal cuts short (as it cuts short a ``pause``, a wait for a rate
limit's token), as many as ``read_size`` says. What was read is
triaged before a handler sees it: entries deleted while pending are
acknowledged, those that can never be decoded dead-lettered.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import redis

from orchestrator import codec, keys
from orchestrator.scripts import load_lua
from orchestrator.worker.acks import Acks
from orchestrator.worker.jobs import Handler, Job
from orchestrator.worker.readahead import PREFETCH_WINDOW_S
from orchestrator.worker.workerenv import Settings

# Our own pending entries are read again before a read that comes this long
# after the last look (so a busy worker finds entries handed to it as its
# next jobs; quick ones pay a round trip per 50 ms), and a blocking read for
# new ones lasts at most BLOCK_MAX_S (entries handed to an idle worker that
# was not yet blocked, so not woken, wait no longer).
OWN_CHECK_INTERVAL_S = 0.05
BLOCK_MAX_S = 1.0
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
FIRST_READ = load_lua("first_read.lua")


class StopWaiting(Exception):
    """Raised by the stop signal handler out of a blocking read."""


class StreamReads:
    """The reads of ``WorkerRuntime``, a mixin over its state: the names
    below are the runtime's."""

    s: Settings
    client: redis.Redis
    acks: Acks
    handle_one: Handler | None
    stopping: bool  # asked to stop (a signal)
    waiting: bool  # in a blocking read for new entries, or a pause
    drained: bool  # draining, and nothing of our own is left
    check_own: bool  # read our own pending entries before new ones
    own_script: Any  # first_read.lua, registered on the client (a redis-py Script)
    own_checked_at: float
    last_work: float
    avg_job_s: float

    def _first_read(self) -> tuple[int, list[Job]]:
        """The worker's first round trip: connect, its name (its consumer) and
        client id (for the heartbeat: the spawner cuts this connection's
        blocking read short with it) and its first jobs, own pending ones
        first (``first_read.lua``), sent together on the reading connection."""
        s, conn = self.s, self.client.connection
        assert conn is not None  # a single-connection client
        size = self.read_size()
        new = 0 if s.drain else size
        args = (s.group, s.consumer, s.batch_size, new, size, keys.PARKING_CONSUMER)
        commands = [
            ("CLIENT", "SETNAME", s.consumer),  # so the spawner finds it before the heartbeat
            ("CLIENT", "ID"),
            ("EVAL", FIRST_READ, 1, s.stream, *args),
        ]
        for attempt in (1, 2):  # a connection made ahead of need may have died since
            try:
                conn.send_packed_command(conn.pack_commands(commands))  # type: ignore[no-untyped-call]
                conn.read_response()
                client_id = int(conn.read_response())
                own, counts, fresh = conn.read_response()
                break
            except REDIS_DOWN:
                conn.disconnect()  # type: ignore[no-untyped-call]
                if attempt == 2:
                    raise
        now = time.monotonic()
        self.own_checked_at = now
        self.check_own = bool(own)
        jobs = jobs_of(own, counts) + [Job(i, fields_of(f), 1) for i, f in fresh]
        if jobs:
            self.last_work = now
        return client_id, jobs

    def _read(self) -> list[Job]:
        """Own pending entries first (with their delivery counts), then new.

        Our own pending list can only gain entries at start, after a failed
        attempt, or when the spawner hands us recovered or given-back work
        (it then cuts our blocking read short, or, while we run a job, they
        are to be our next). So it is read then, and before a read that
        comes ``OWN_CHECK_INTERVAL_S`` after the last look (every read, when
        jobs are slow), not before every batch of quick ones.
        """
        s = self.s
        now = time.monotonic()
        if self.check_own or now - self.own_checked_at >= OWN_CHECK_INTERVAL_S:
            self.own_checked_at = now
            own = self._read_own()
            self.check_own = bool(own)
            if own:
                return own
        if s.drain:  # what we were handed only: nothing new is taken
            self.drained = True
            return []
        block_s = min(
            s.idle_timeout_s - (time.monotonic() - self.last_work),
            self.work_left_s(),
            BLOCK_MAX_S,  # entries handed to us while we were not yet blocked
        )
        if block_s <= 0:
            return []
        reply = self._wait_for_new(max(1, int(block_s * 1000)), self.read_size())
        jobs = [Job(i, f, 1) for i, f in entries_of(reply)]
        self.check_own = not jobs  # timed out or woken: maybe we were handed work
        return jobs

    def work_left_s(self) -> float:
        """Seconds until the worker stops taking work: its deadline, less a
        margin for the job it would start (its recent time per job)."""
        return self.s.deadline - time.time() - max(0.5, 1.5 * self.avg_job_s)

    def read_size(self) -> int:
        """How many new entries to read. A batch handler starts its whole
        batch at once: ``batch_size``. Jobs run one by one: only those that
        will start within the prefetch window, at first one. A rate-limited
        queue's worker reads one at a time: it waits for a token per job."""
        if self.s.rate_per_s:
            return 1
        if self.handle_one is None:
            return self.s.batch_size
        if self.avg_job_s <= 0.0:
            return 1
        return max(1, min(self.s.batch_size, int(PREFETCH_WINDOW_S / self.avg_job_s)))

    def _wait_for_new(self, block_ms: int, count: int) -> Any:
        """XREADGROUP '>' that a stop signal interrupts (the reply is dropped:
        anything Redis delivered meanwhile stays pending on us and is passed
        on by the spawner with its count, which the in-hand marker says was
        never an attempt)."""
        s = self.s
        self.waiting = True
        try:
            if self.stopping:
                return None
            return self.client.xreadgroup(
                s.group, s.consumer, {s.stream: ">"}, count=count, block=block_ms
            )
        except StopWaiting:
            self.client.connection.disconnect()  # type: ignore[union-attr]
            with contextlib.suppress(redis.RedisError):
                self.acks.release()  # what Redis delivered meanwhile was never started
            return None
        finally:
            self.waiting = False

    def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` (a stop signal cuts it short); True if stopping."""
        self.waiting = True
        try:
            if not self.stopping:
                time.sleep(max(0.0, seconds))
        except StopWaiting:
            pass
        finally:
            self.waiting = False
        return self.stopping

    def _read_own(self) -> list[Job]:
        """Our own pending entries with their delivery counts, parked ones
        taken first (``first_read.lua``, one round trip)."""
        s = self.s
        args = [s.group, s.consumer, s.batch_size, 0, self.read_size(), keys.PARKING_CONSUMER]
        own, counts, _ = self.own_script(keys=[s.stream], args=args)
        return jobs_of(own, counts)

    def _triage(self, jobs: list[Job]) -> list[Job]:
        """The jobs a handler can run; entries deleted from the stream while
        pending are acknowledged, those that can never be decoded
        dead-lettered (neither charges another job)."""
        ready: list[Job] = []
        for job in jobs:
            if not job.fields:  # deleted from the stream while pending
                self.acks.ack(job, None)
            elif (problem := decode_job(job)) is not None:
                self.acks.dead(job, problem)
            else:
                ready.append(job)
        self.acks.flush()
        return ready


def entries_of(reply: Any) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    items = reply.items() if isinstance(reply, dict) else (reply or [])
    for item in items:
        for entry_id, fields in item[1]:
            out.append((entry_id, fields or {}))
    return out


def jobs_of(own: Sequence[Any], counts: Sequence[Any]) -> list[Job]:
    """Own pending entries as ``first_read.lua`` returns them, with their
    delivery counts."""
    delivered = {str(i): int(n) for i, n in counts}
    return [Job(i, fields_of(f), delivered.get(i, 1)) for i, f in own]


def fields_of(flat: Sequence[str]) -> dict[str, str]:
    """An entry's fields as Lua returns them (field, value, ...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def decode_job(job: Job) -> str | None:
    """Fill ``job.data``; the reason it can never be handled, if any."""
    raw = job.fields.get(codec.PAYLOAD)
    if raw is None:
        job.data = dict(job.fields)
        return None
    try:
        job.data = codec.decode_payload(raw)
    except codec.BadPayload as exc:
        return str(exc)
    return None
