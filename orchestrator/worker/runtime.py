"""The read-handle-acknowledge loop of one worker process.

Its own pending entries first (work handed to it, or its own failures),
then new ones (``streamreads``): a ``run_worker`` worker reads ahead only
what it expects to start soon and gives back what would wait behind a job
that runs long (``readahead``), so slow jobs spread over the workers; a
batch handler gets up to ``batch_size`` entries at once. An entry is
acknowledged only after its handler succeeded (``acks``). A handler
exception is a failed attempt: the entry stays pending and is retried,
until the delivery count (Redis' own, so crashes count too) reaches
``max_attempts`` and it is dead-lettered. ``Unavailable`` (or a Redis
error out of the handler) gives the jobs back uncounted and exits
``EX_TEMPFAIL``; ``Interrupted`` gives the job back uncounted and exits 0;
a failure of the runtime's own code gives every entry back uncounted and
exits ``EX_SOFTWARE``.

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

import redis
from loguru import logger

from orchestrator.worker.acks import Acks
from orchestrator.worker.client import worker_client
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
from orchestrator.worker.ratelimit import RateLimiter
from orchestrator.worker.readahead import ReadAhead
from orchestrator.worker.streamreads import FIRST_READ, REDIS_DOWN, StopWaiting, StreamReads
from orchestrator.worker.workerenv import Settings

# SIGTERM and SIGINT stop a worker after the job in hand; so does SIGUSR1,
# the spawner's request to give the worker's slot to another queue.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class WorkerRuntime(StreamReads):
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
        self.own_script = self.client.register_script(FIRST_READ)
        self.stopping = False
        self.drained = False  # draining, and nothing of our own is left
        self.failed = 0
        self.rate = RateLimiter(self.client, settings) if settings.rate_per_s else None
        self.started = time.monotonic()
        self.last_work = time.monotonic()
        self.avg_job_s = 0.0
        self.heartbeat: Heartbeat | None = None
        self.ahead = ReadAhead(settings, self.acks)  # read, not started: given back when they wait
        self.waiting = False  # in a blocking read for new entries
        self.check_own = True  # read our own pending entries before new ones
        self.own_checked_at = 0.0

    def request_stop(self, *_: object) -> None:
        """SIGTERM/SIGINT: finish the job in hand; cut a wait for work short."""
        self.stopping = True
        if self.waiting:  # Python would otherwise resume the blocking read
            raise StopWaiting

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
            self._flush_done()
            return EX_OK
        except Unavailable as exc:
            logger.warning(f"{self.s.worker_id}: dependency unavailable: {exc}; exiting")
            self._flush_done()
            return EX_TEMPFAIL
        except REDIS_DOWN as exc:
            logger.error(f"{self.s.worker_id}: Redis unavailable: {exc}; exiting")
            return EX_TEMPFAIL
        except Exception:  # the runtime's own failure, not a handler's: charge no job
            logger.exception(f"{self.s.worker_id}: runtime failure; its entries go back uncounted")
            with contextlib.suppress(redis.RedisError):
                self.acks.release()
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

    def _flush_done(self) -> None:
        """Leaving after a job gave up: the jobs done before it are written
        (else they would run again), if Redis answers."""
        with contextlib.suppress(redis.RedisError):
            self.acks.flush()

    def _deadline_near(self) -> bool:
        return self.work_left_s() <= 0.0

    def _process(self, jobs: list[Job]) -> None:
        ready = self._triage(jobs)
        if self.handle_one is None:
            self._run_batches(ready)
        else:
            self._run_one_by_one(ready)
        self.acks.flush()

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
            self.acks.mark_in_hand(suspects)
            self._run_handler(suspects)
            self.acks.flush(clear_in_hand=True)
            if fresh and (self.stopping or self._deadline_near()):
                self.acks.release()  # the rest goes back uncounted, via the spawner
                return
        if fresh:
            self._run_handler(fresh)

    def _run_one_by_one(self, jobs: list[Job]) -> None:
        """Jobs one at a time, suspects first (each under the in-hand
        marker), the fresh ones on a lean path (the hot path of most
        workers: one clock reading a job). Each is taken from the
        read-ahead, which gives back those left waiting behind a long job;
        a stop request or the deadline between two jobs leaves the rest
        pending for the next worker."""
        ahead, handle = self.ahead, self.handle_one
        assert handle is not None
        suspects = self.s.max_attempts == 1 or any(j.attempts > 1 for j in jobs)
        ahead.hold(sorted(jobs, key=lambda j: not self._suspect(j)) if suspects else jobs)
        stop_at = self._stop_taking_work_at()
        spent_s, done, fresh, now = 0.0, 0, 0, time.monotonic()
        try:
            while ahead.holding:
                if (done and (self.stopping or now >= stop_at)) or not self._token():
                    ahead.hold([])  # not started: given back uncounted, via the spawner
                    self.acks.release()
                    return
                if self.rate is not None:  # the token may have taken a while
                    now = time.monotonic()
                if (job := ahead.take(now)) is None:  # given back meanwhile
                    return
                done += 1
                if suspects and self._suspect(job):
                    self.acks.mark_in_hand([job])
                    self._run_handler([job], rated=False)
                    ahead.finished()
                    self.acks.flush(clear_in_hand=True)
                    now = time.monotonic()
                    continue
                self._starting((job,))
                started, now = now, self._run_one(handle, job)
                ahead.finished()
                spent_s += now - started
                fresh += 1
        finally:
            ahead.finished()
            if self.heartbeat is not None:
                self.heartbeat.jobs = ()
            self._timed(spent_s, fresh)

    def _run_one(self, handle: Handler, job: Job) -> float:
        """Run ``job``; its outcome noted; the monotonic time it ended."""
        try:
            result = handle(job.data)
        except Exception as exc:
            self._handler_raised(exc, [job])
            return time.monotonic()
        ended = time.monotonic()
        if self.acks.ack(job, result, now=self.stopping, at=ended):
            ended = time.monotonic()  # the flush's round trip is not the next job's time
        return ended

    def _handler_raised(self, exc: Exception, jobs: list[Job]) -> None:
        """What a handler's exception means. ``Unavailable`` and
        ``Interrupted`` (and a Redis error: a Redis the handler uses is down)
        end the worker with none of the deliveries it holds counted; any
        other is a failed attempt of ``jobs``."""
        if isinstance(exc, (Unavailable, Interrupted, *REDIS_DOWN)):
            self.acks.release()
            if isinstance(exc, (Unavailable, Interrupted)):
                raise exc
            raise Unavailable(f"Redis: {exc}") from exc
        self._failed(jobs, exc)

    def _stop_taking_work_at(self) -> float:
        """The monotonic time past which no job starts (``work_left_s``)."""
        return time.monotonic() + self.work_left_s()

    def _token(self) -> bool:
        """A token of the queue's rate limit, where it has one (a wait)."""
        return self.rate is None or self.rate.wait(1, self)

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

    def _run_handler(self, jobs: list[Job], *, rated: bool = True) -> None:
        """``jobs`` in one call of the batch handler; ``rated``: take their
        tokens first (unless the caller did)."""
        if rated and self.rate is not None and not self.rate.wait(len(jobs), self):
            self.acks.release()  # stopped while waiting for tokens: none started
            raise Interrupted("stopped while waiting for the rate limit")
        started = time.monotonic()
        self._starting(jobs)
        try:
            results = self.handle_batch(jobs)
        except Exception as exc:
            self._handler_raised(exc, jobs)
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
