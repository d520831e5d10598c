"""The read-handle-acknowledge loop of one worker process.

Its own pending entries first (work handed to it, or its own failures),
then new ones: a ``run_worker`` worker reads ahead only what it expects to
start within ``PREFETCH_WINDOW_S`` (its recent time per job; at first one
entry), and gives back what would wait behind a job that runs long
(``readahead``), so slow jobs spread over the workers; a batch handler gets
up to ``batch_size`` entries at once. An entry is acknowledged only after its
handler succeeded (``acks``). A handler exception is a failed attempt: the
entry stays pending and is retried, until the delivery count (Redis' own,
so crashes count too) reaches ``max_attempts`` and it is dead-lettered.
``Unavailable`` (or a Redis error out of the handler) gives the jobs back
uncounted and exits ``EX_TEMPFAIL``; ``Interrupted`` gives the job back
uncounted and exits 0; a failure of the runtime's own code gives every
entry back uncounted and exits ``EX_SOFTWARE``.

Crashes are charged to the job that caused them: entries delivered before
(suspects) run under an in-hand marker (``orch:inhand:<consumer>``) that
the reaper reads when the worker dies; see ``lua/park.lua``.

The worker exits 0 after ``idle_timeout`` without work, stops taking work
before its ``ORCH_DEADLINE``, and on SIGTERM, SIGINT or SIGUSR1 finishes
the job in hand, acknowledges, and exits 0.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Sequence
from typing import Any

import redis
from loguru import logger

from orchestrator import codec, keys
from orchestrator.connections import connect
from orchestrator.scripts import load_lua
from orchestrator.worker import heartbeat
from orchestrator.worker.acks import Acks
from orchestrator.worker.heartbeat import Heartbeat
from orchestrator.worker.jobs import (
    EX_OK,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    BatchHandler,
    Handler,
    Interrupted,
    Job,
    Unavailable,
)
from orchestrator.worker.readahead import PREFETCH_WINDOW_S, ReadAhead
from orchestrator.worker.workerenv import Settings

OWN_CHECK_INTERVAL_S = 1.0  # re-read our own pending entries at least this often
# SIGTERM and SIGINT stop a worker after the job in hand; so does SIGUSR1,
# the spawner's request to give the worker's slot to another queue.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
FIRST_READ = load_lua("first_read.lua")
RATE_TAKE = load_lua("rate_take.lua")


# A client made ahead of need (a fork server's standby connects before its
# job arrives), for the worker it becomes: Redis URL -> client.
_SPARE: dict[str, redis.Redis] = {}


def worker_client(settings: Settings) -> redis.Redis:
    """The worker's client: one connection (``CLIENT UNBLOCK`` of its id must
    reach the blocking read), replies decoded losslessly, a read timeout
    longer than the longest wait for work. A spare one, connected already,
    is taken when there is one."""
    timeout_s = max(settings.idle_timeout_s, 5.0) + 10.0
    client = _SPARE.pop(settings.redis_url, None)
    if client is not None and client.connection is not None:
        client.connection.socket_timeout = timeout_s
        if (sock := getattr(client.connection, "_sock", None)) is not None:
            sock.settimeout(timeout_s)
        return client
    return connect(
        settings.redis_url,
        timeout_s=timeout_s,
        connect_timeout_s=5.0,
        decode=True,  # by hiredis, in C; bytes that are not UTF-8 survive (codec)
        single_connection=True,
        fail_fast=False,
    )


def keep_spare(settings: Settings) -> None:
    """Connect the clients now for the worker this process will become."""
    keep_spare_client(settings.redis_url, worker_client(settings))
    heartbeat.keep_spare(settings.redis_url)


def keep_spare_client(url: str, client: redis.Redis) -> None:
    _SPARE[url] = client


class _StopWaiting(Exception):
    """Raised by the stop signal handler out of a blocking read."""


class WorkerRuntime:
    """The read-handle-acknowledge loop of one worker process."""

    def __init__(
        self,
        settings: Settings,
        handle_batch: BatchHandler,
        client: redis.Redis | None = None,
        *,
        handle_one: Handler | None = None,
    ) -> None:
        """``handle_one``: the per-job handler behind ``handle_batch``, if
        there is one; jobs are then run one at a time, and a stop request
        between two of them leaves the rest pending for the next worker."""
        self.s = settings
        self.handle_batch = handle_batch
        self.handle_one = handle_one
        self.client = client or worker_client(settings)
        self.acks = Acks(self.client, settings)
        self.stopping = False
        self.drained = False  # draining, and nothing of our own is left
        self.failed = 0
        self.rate = RateLimiter(self.client, settings) if settings.rate_per_s else None
        self.started = time.monotonic()
        self.last_work = time.monotonic()
        self.avg_job_s = 0.0
        self.heartbeat: Heartbeat | None = None
        self.ahead = ReadAhead(settings)  # read, not started: given back when they wait
        self.waiting = False  # in a blocking read for new entries
        self.check_own = True  # read our own pending entries before new ones
        self.own_checked_at = 0.0

    def request_stop(self, *_: object) -> None:
        """SIGTERM/SIGINT: finish the job in hand; cut a wait for work short."""
        self.stopping = True
        if self.waiting:  # Python would otherwise resume the blocking read
            raise _StopWaiting

    def run(self) -> int:
        """Serve until idle, deadline or SIGTERM; returns the exit code."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.request_stop)
        try:
            client_id, jobs = self._first_read()
            ahead = self.ahead if self.handle_one is not None else None
            self.heartbeat = Heartbeat(self.s, client_id, yields=True, ahead=ahead)
            self.heartbeat.start()
            if jobs:
                self._process(jobs)
            return self._loop()
        except Interrupted as exc:
            logger.info(f"{self.s.worker_id}: stopped mid-job ({exc}); the job goes back")
            return EX_OK
        except Unavailable as exc:
            logger.warning(f"{self.s.worker_id}: dependency unavailable: {exc}; exiting")
            return EX_TEMPFAIL
        except REDIS_DOWN as exc:
            logger.error(f"{self.s.worker_id}: Redis unavailable: {exc}; exiting")
            return EX_TEMPFAIL
        except Exception:  # the runtime's own failure, not a handler's: charge no job
            logger.exception(f"{self.s.worker_id}: runtime failure; its entries go back uncounted")
            with contextlib.suppress(redis.RedisError):
                self._release()
            return EX_SOFTWARE
        finally:
            if self.heartbeat is not None:
                self.heartbeat.stop()

    def _loop(self) -> int:
        while not self.stopping and not self.drained:
            if self._deadline_near():
                logger.info(f"{self.s.worker_id}: max_runtime near, taking no more work")
                break
            jobs = self._read()
            if jobs:
                self.last_work = time.monotonic()
                self._process(jobs)
            elif time.monotonic() - self.last_work >= self.s.idle_timeout_s:
                break
        self.acks.finish()
        given = f", {self.ahead.given_back} given back" if self.ahead.given_back else ""
        logger.info(
            f"{self.s.worker_id}: exiting after {time.monotonic() - self.started:.1f}s, "
            f"{self.acks.processed} done, {self.failed} failed{given}"
        )
        return EX_OK

    def _deadline_near(self) -> bool:
        margin = max(0.5, 1.5 * self.avg_job_s)
        return time.time() + margin >= self.s.deadline

    def _first_read(self) -> tuple[int, list[Job]]:
        """The worker's first round trip: connect, its name (its consumer) and
        client id (for the heartbeat: the spawner cuts this connection's
        blocking read short with it) and its first jobs, own pending ones
        first (``first_read.lua``), sent together on the reading connection."""
        s, conn = self.s, self.client.connection
        assert conn is not None  # a single-connection client
        args = (s.group, s.consumer, s.batch_size, 0 if s.drain else self.read_size())
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
        delivered = {str(i): int(n) for i, n in counts}
        jobs = [Job(i, _fields(f), delivered.get(i, 1)) for i, f in own]
        jobs += [Job(i, _fields(f), 1) for i, f in fresh]
        if jobs:
            self.last_work = now
        return client_id, jobs

    def _read(self) -> list[Job]:
        """Own pending entries first (with their delivery counts), then new.

        Our own pending list can only gain entries at start, after a failed
        attempt, or when the spawner hands us recovered work (it then cuts
        our blocking read short). So it is read then, and at least every
        ``OWN_CHECK_INTERVAL_S``, not before every batch.
        """
        s = self.s
        now = time.monotonic()
        if self.check_own or now - self.own_checked_at >= OWN_CHECK_INTERVAL_S:
            self.own_checked_at = now
            reply = self.client.xreadgroup(s.group, s.consumer, {s.stream: "0"}, count=s.batch_size)
            entries = _entries(reply)
            self.check_own = bool(entries)
            if entries:
                counts = self._delivery_counts([e[0] for e in entries])
                return [Job(i, f, counts.get(i, 1)) for i, f in entries]
        if s.drain:  # what we were handed only: nothing new is taken
            self.drained = True
            return []
        block_s = min(
            s.idle_timeout_s - (time.monotonic() - self.last_work),
            s.deadline - time.time() - max(0.5, 1.5 * self.avg_job_s),
            OWN_CHECK_INTERVAL_S,  # entries handed to us while we were not yet blocked
        )
        if block_s <= 0:
            return []
        reply = self._wait_for_new(max(1, int(block_s * 1000)), self.read_size())
        jobs = [Job(i, f, 1) for i, f in _entries(reply)]
        self.check_own = not jobs  # timed out or woken: maybe we were handed work
        return jobs

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
        except _StopWaiting:
            self.client.connection.disconnect()  # type: ignore[union-attr]
            with contextlib.suppress(redis.RedisError):
                self._release()  # what Redis delivered meanwhile was never started
            return None
        finally:
            self.waiting = False

    def _delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        rows = self.client.xpending_range(
            self.s.stream,
            self.s.group,
            min=ids[0],
            max=ids[-1],
            count=len(ids) * 2,
            consumername=self.s.consumer,
        )
        return {str(r["message_id"]): int(r["times_delivered"]) for r in rows}

    def _process(self, jobs: list[Job]) -> None:
        ready = self._triage(jobs)
        if self.handle_one is None:
            self._run_batches(ready)
        else:
            self._run_one_by_one(ready)
        self.acks.flush()

    def _triage(self, jobs: list[Job]) -> list[Job]:
        """The jobs a handler can run; entries deleted from the stream while
        pending are acknowledged, those that can never be decoded
        dead-lettered (neither charges another job)."""
        ready: list[Job] = []
        for job in jobs:
            if not job.fields:  # deleted from the stream while pending
                self.acks.ack(job, None)
            elif (problem := _decode(job)) is not None:
                self.acks.dead(job, problem)
            else:
                ready.append(job)
        self.acks.flush()
        return ready

    def _suspect(self, job: Job) -> bool:
        """Delivered before (a retry, or recovered from a dead worker): it
        runs under the in-hand marker, so that the reaper can tell which
        entry a crash was running and charge only that one."""
        return job.attempts > 1 or self.s.max_attempts == 1

    def _run_batches(self, jobs: list[Job]) -> None:
        """A batch handler: the suspects in one call under the in-hand
        marker, then the fresh ones in another."""
        suspects = [j for j in jobs if self._suspect(j)]
        fresh = [j for j in jobs if not self._suspect(j)]
        if suspects:
            self._mark_in_hand(suspects)
            self._run_handler(suspects)
            self.acks.flush(clear_in_hand=True)
            if fresh and (self.stopping or self._deadline_near()):
                self._release()  # the rest goes back uncounted, via the spawner
                return
        if fresh:
            self._run_handler(fresh)

    def _run_one_by_one(self, jobs: list[Job]) -> None:
        """Jobs one at a time, suspects first (each under the in-hand
        marker), the fresh ones on a lean path (the hot path of most
        workers). Each is taken from the read-ahead, which gives back those
        left waiting behind a long job; a stop request or the deadline
        between two jobs leaves the rest pending for the next worker."""
        ahead, handle = self.ahead, self.handle_one
        assert handle is not None
        ahead.hold(sorted(jobs, key=lambda j: not self._suspect(j)))  # stable
        spent_s, done, fresh = 0.0, 0, 0
        try:
            while ahead.holding:
                if not self._may_start(done):
                    ahead.hold([])  # not started: given back uncounted, via the spawner
                    self._release()
                    return
                if (taken := ahead.take()) is None:  # given back meanwhile
                    return
                job, started = taken
                done += 1
                if self._suspect(job):
                    self._mark_in_hand([job])
                    self._run_handler([job], rated=False)
                    ahead.finished()
                    self.acks.flush(clear_in_hand=True)
                    continue
                self._starting((job,))
                fresh += 1
                try:
                    self._run_one(handle, job)
                finally:
                    ahead.finished()
                    spent_s += time.monotonic() - started
        finally:
            if self.heartbeat is not None:
                self.heartbeat.jobs = ()
            self._timed(spent_s, fresh)

    def _run_one(self, handle: Handler, job: Job) -> None:
        try:
            result = handle(job.data)
        except (Unavailable, Interrupted):
            self._release()  # none of the deliveries this worker holds counts
            raise
        except REDIS_DOWN as exc:  # a Redis the handler uses is down
            self._release()
            raise Unavailable(f"Redis: {exc}") from exc
        except Exception as exc:
            self._failed([job], exc)
        else:
            self.acks.ack(job, result, now=self.stopping)

    def _may_start(self, done: int) -> bool:
        """May the next job start? Not when asked to stop or near the
        deadline (after the first); and only with a token, where the queue
        is rate-limited."""
        if done and (self.stopping or self._deadline_near()):
            return False
        return self.rate is None or self.rate.wait(1, self)

    def _mark_in_hand(self, jobs: Sequence[Job]) -> None:
        self.client.set(keys.in_hand(self.s.consumer), " ".join(j.id for j in jobs))

    def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` (a stop signal cuts it short); True if stopping."""
        self.waiting = True
        try:
            if not self.stopping:
                time.sleep(max(0.0, seconds))
        except _StopWaiting:
            pass
        finally:
            self.waiting = False
        return self.stopping

    def _starting(self, jobs: Sequence[Job]) -> None:
        """The handler starts on ``jobs``: the heartbeat says so (the spawner
        reads which jobs a worker holds), and their reaction time is taken."""
        if self.heartbeat is not None:
            self.heartbeat.jobs = jobs
        if self.acks.reaction is not None:
            self.acks.reaction.started(jobs)

    def _timed(self, elapsed_s: float, jobs: int) -> None:
        """Keep the average job time that sets the deadline margin."""
        if jobs:
            per_job = elapsed_s / jobs
            first = self.avg_job_s == 0.0
            self.avg_job_s = per_job if first else 0.8 * self.avg_job_s + 0.2 * per_job

    def _release(self) -> None:
        """Stopping with entries read but not started: none was attempted."""
        self.client.set(keys.in_hand(self.s.consumer), "")

    def _run_handler(self, jobs: list[Job], *, rated: bool = True) -> None:
        """``jobs`` in one call of the batch handler; ``rated``: take their
        tokens first (unless the caller did)."""
        if rated and self.rate is not None and not self.rate.wait(len(jobs), self):
            self._release()  # stopped while waiting for tokens: none started
            raise Interrupted("stopped while waiting for the rate limit")
        started = time.monotonic()
        self._starting(jobs)
        try:
            results = self.handle_batch(jobs)
        except (Unavailable, Interrupted):
            self._release()  # none of the deliveries this worker holds counts
            raise
        except REDIS_DOWN as exc:  # a Redis the handler uses is down
            self._release()
            raise Unavailable(f"Redis: {exc}") from exc
        except Exception as exc:
            self._failed(jobs, exc)
            return
        finally:
            if self.heartbeat is not None:
                self.heartbeat.jobs = ()
        self._timed(time.monotonic() - started, len(jobs))
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, Exception):  # a batch handler failing one item
                self._failed([job], result)
            else:
                self.acks.ack(job, result, now=self.stopping)

    def _failed(self, jobs: list[Job], exc: Exception) -> None:
        """A failed attempt; dead-lettered when it was the last, or permanent.

        An exception with a true ``permanent`` attribute (``PoisonJob``, or
        any error class of a handler's own that says so) can never succeed,
        so its job goes to the dead-letter stream at once.
        """
        error = f"{type(exc).__name__}: {exc}"
        permanent = bool(getattr(exc, "permanent", False))
        self.failed += len(jobs)
        self.check_own = not permanent  # the retry waits in our own pending list
        for job in jobs:
            if permanent or job.attempts >= self.s.max_attempts:
                self.acks.dead(job, error)
            else:
                logger.warning(
                    f"{self.s.worker_id}: job {job.id} failed (attempt {job.attempts}/"
                    f"{self.s.max_attempts}), will retry: {error}"
                )
        if not permanent and any(job.attempts < self.s.max_attempts for job in jobs):
            time.sleep(min(2.0, 0.05 * 2 ** max(j.attempts for j in jobs)))  # retry backoff


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    items = reply.items() if isinstance(reply, dict) else (reply or [])
    for item in items:
        for entry_id, fields in item[1]:
            out.append((entry_id, fields or {}))
    return out


class RateLimiter:
    """The queue's rate limit, as this worker obeys it: a token per job
    started, from the bucket every worker on every host shares
    (``lua/rate_take.lua``). Waiting for a token is a sleep for as long as
    the bucket says the next one takes, cut short by a stop."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.key = keys.rate(settings.queue)
        self.per_s = settings.rate_per_s or 1.0
        self.burst = settings.rate_burst
        self._take = client.register_script(RATE_TAKE)

    def wait(self, tokens: int, runtime: WorkerRuntime) -> bool:
        """Take ``tokens`` (at most the burst at a time); False if the worker
        was asked to stop before it had them."""
        needed = tokens
        while needed > 0:
            want = min(needed, self.burst)
            granted, wait_ms = self._take(keys=[self.key], args=[self.per_s, self.burst, want])
            needed -= int(granted)
            if needed > 0 and runtime.pause(int(wait_ms) / 1000.0):
                return False
        return True


def _fields(flat: Sequence[str]) -> dict[str, str]:
    """An entry's fields as Lua returns them (field, value, ...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _decode(job: Job) -> str | None:
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
