"""The worker runtime: what a worker program needs besides its handler.

A worker in three lines::

    from orchestrator.worker import run_worker
    def handle(job: dict) -> dict | None: ...
    run_worker(handle)

The runtime reads the spawner's environment (``ORCH_*``), then loops:
its own pending entries first (work handed to it, or its own failures),
then new ones, in batches. An entry is acknowledged only after its handler
succeeded; with ``then``, the result is added to the next queue and the
entry acknowledged in one MULTI/EXEC, so a crash can neither lose nor
duplicate the hand-off. A handler exception is a failed attempt: the entry
stays pending and is retried, until the delivery count (Redis' own, so
crashes count too) reaches ``max_attempts`` and it goes to
``<stream>:dead`` with the error. A payload that is not JSON goes there at
once. Raising ``Unavailable`` (a database or API is down) means "not this
job's fault": the deliveries are not counted, and the worker exits with
``EX_TEMPFAIL`` so the spawner backs off. Raising ``Interrupted`` (a long
job cut short because the worker is stopping) gives the job back
uncounted too, and the worker exits 0.

Crashes are charged to the job that caused them: entries delivered before
(suspects) run under an in-hand marker (``orch:inhand:<consumer>``) that
the reaper reads when the worker dies; see ``lua/park.lua``.

The worker exits 0 after ``idle_timeout`` without work, stops taking work
before its ``ORCH_DEADLINE``, and on SIGTERM/SIGINT finishes the job in
hand, acknowledges, and exits 0. It dies with its spawner (SIGTERM, then
the same graceful path) and keeps a heartbeat (``orch:worker:<consumer>``)
holding its pid and Redis client id, so the spawner can wake it when it
hands it work.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import redis
from loguru import logger

from orchestrator import codec, keys, procs

EX_OK = 0
EX_FAILURE = 1
EX_SOFTWARE = 70  # sysexits.h: the runtime itself failed (no job is charged)
EX_TEMPFAIL = 75  # sysexits.h: try again later

Handler = Callable[[dict[str, Any]], "dict[str, Any] | None"]
# A batch handler returns one item per job, in order: a result to forward
# (with ``then``), None, or an Exception that fails that job alone.
BatchHandler = Callable[[Sequence["Job"]], "Sequence[dict[str, Any] | Exception | None]"]


def _quick_connect() -> dict[str, Any]:
    """Client options that skip CLIENT SETINFO: redis-py sends it on every
    connect, reading its own version from package metadata each time, which
    costs a worker that must start fast a few milliseconds."""
    try:
        from redis.driver_info import DriverInfo  # redis-py >= 7
    except ImportError:
        return {"lib_name": None, "lib_version": None}
    return {"driver_info": DriverInfo(name=None, lib_version=None)}


QUICK_CONNECT = _quick_connect()
LOG_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}"

FLUSH_AFTER_S = 0.2  # results wait at most this long for their batch's ack
# A ``run_worker`` worker reads ahead only the entries it expects to start
# within this window, judging by its recent time per job (at first: one
# entry). Slow jobs are therefore never read ahead, and N jobs on M idle
# workers start min(N, M) at once; tiny jobs are still read up to
# ``batch_size`` at a time. (A batch handler starts all it reads at once.)
PREFETCH_WINDOW_S = 0.02
OWN_CHECK_INTERVAL_S = 1.0  # re-read our own pending entries at least this often
# SIGTERM and SIGINT stop a worker after the job in hand; so does SIGUSR1,
# the spawner's request to give the worker's slot to another queue.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TTL_S = 10.0
DONE_MARK_SLACK_S = 600.0  # orch:done:<consumer> outlives the deadline by this


REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


class Unavailable(Exception):
    """A dependency is down; the job is fine. Not counted as an attempt."""


class Interrupted(Exception):
    """The handler gave up its job because the worker was asked to stop
    (SIGTERM, or its deadline): the job goes back uncounted, and the worker
    exits 0. For long jobs that cannot wait for ``stop_grace``."""


class _StopWaiting(Exception):
    """Raised by the stop signal handler out of a blocking read."""


class PoisonJob(Exception):
    """The job can never succeed: dead-letter it now, whatever its attempts.

    Any exception with a true ``permanent`` attribute is treated the same.
    """

    permanent = True


@dataclass(frozen=True, slots=True)
class Settings:
    """The worker's environment, as set by the spawner (see SPEC.md)."""

    redis_url: str
    queue: str
    worker_id: str
    stream: str
    group: str
    consumer: str
    deadline: float  # epoch seconds
    idle_timeout_s: float
    max_attempts: int
    then: str | None
    batch_size: int = 100
    host: str = ""
    spawner_pid: int | None = None
    config_path: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        missing = [k for k in ("ORCH_QUEUE", "ORCH_REDIS_URL", "ORCH_STREAM") if not e.get(k)]
        if missing:
            raise SystemExit(
                f"not started by the orchestrator: {', '.join(missing)} missing; "
                "run it through 'orchestrator run' (or set the ORCH_* variables)"
            )
        worker_id = e.get("ORCH_WORKER_ID") or f"{e['ORCH_QUEUE']}_{os.getpid()}"
        return cls(
            redis_url=e["ORCH_REDIS_URL"],
            queue=e["ORCH_QUEUE"],
            worker_id=worker_id,
            stream=e["ORCH_STREAM"],
            group=e.get("ORCH_GROUP") or "workers",
            consumer=e.get("ORCH_CONSUMER") or worker_id,
            deadline=float(e.get("ORCH_DEADLINE") or time.time() + 300),
            idle_timeout_s=float(e.get("ORCH_IDLE_TIMEOUT") or 5),
            max_attempts=int(e.get("ORCH_MAX_ATTEMPTS") or 3),
            then=e.get("ORCH_THEN") or None,
            batch_size=int(e.get("ORCH_BATCH_SIZE") or 100),
            host=e.get("ORCH_HOST", ""),
            spawner_pid=int(e["ORCH_SPAWNER_PID"]) if e.get("ORCH_SPAWNER_PID") else None,
            config_path=e.get("ORCH_CONFIG") or None,
        )


@dataclass(slots=True)
class Job:
    """One stream entry as a handler sees it."""

    id: str
    fields: dict[str, str]
    attempts: int
    data: dict[str, Any] = field(default_factory=dict)


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
        self.client = client or redis.Redis.from_url(
            settings.redis_url,
            single_connection_client=True,  # CLIENT UNBLOCK must reach *this* connection
            decode_responses=True,  # decoded by hiredis, in C
            encoding_errors="surrogateescape",  # binary fields survive the round trip
            socket_timeout=max(settings.idle_timeout_s, 5.0) + 10.0,
            socket_connect_timeout=5.0,
            **QUICK_CONNECT,
        )
        self.stopping = False
        self.processed = 0
        self.failed = 0
        self.started = time.monotonic()
        self.last_work = time.monotonic()
        self.avg_job_s = 0.0
        self.heartbeat: Heartbeat | None = None
        self.waiting = False  # in a blocking read for new entries
        self.check_own = True  # read our own pending entries before new ones
        self.own_checked_at = 0.0
        self.reported_done = False  # orch:done:<consumer> is set once, with the first ack

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
            client_id = int(self.client.client_id())
            self.heartbeat = Heartbeat(self.s, client_id, yields=True)
            self.heartbeat.start()
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
        while not self.stopping:
            if self._deadline_near():
                logger.info(f"{self.s.worker_id}: max_runtime near, taking no more work")
                break
            jobs = self._read()
            if jobs:
                self.last_work = time.monotonic()
                self._process(jobs)
            elif time.monotonic() - self.last_work >= self.s.idle_timeout_s:
                break
        logger.info(
            f"{self.s.worker_id}: exiting after {time.monotonic() - self.started:.1f}s, "
            f"{self.processed} done, {self.failed} failed"
        )
        return EX_OK

    def _deadline_near(self) -> bool:
        margin = max(0.5, 1.5 * self.avg_job_s)
        return time.time() + margin >= self.s.deadline

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
        block_s = min(
            s.idle_timeout_s - (time.monotonic() - self.last_work),
            s.deadline - time.time() - max(0.5, 1.5 * self.avg_job_s),
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
        will start within the prefetch window, at first one."""
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
        batch = Batch(self)
        ready: list[Job] = []
        for job in jobs:
            if not job.fields:  # deleted from the stream while pending
                batch.ack(job, None)
            elif (problem := _decode(job)) is not None:
                batch.dead(job, problem)
            else:
                ready.append(job)
        batch.flush()
        units = self._units(ready)
        for i, (unit, suspect) in enumerate(units):
            if i and (self.stopping or self._deadline_near()):
                self._release()  # the rest goes back uncounted, via the spawner
                break
            if suspect:
                self.client.set(keys.in_hand(self.s.consumer), " ".join(j.id for j in unit))
                self._run_handler(unit, batch)
                batch.flush(clear_in_hand=True)
            elif not self._run_fresh(unit, batch):
                self._release()
                break
        batch.flush()

    def _units(self, jobs: list[Job]) -> list[tuple[list[Job], bool]]:
        """Suspects first, each marked in hand; then the fresh entries.

        A suspect was delivered before (a retry, or recovered from a dead
        worker). Running suspects under an in-hand marker lets the reaper
        tell which entry a crash was running, so only that one is charged.
        """
        always = self.s.max_attempts == 1
        suspects = [j for j in jobs if always or j.attempts > 1]
        fresh = [j for j in jobs if not (always or j.attempts > 1)]
        units = [([j], True) for j in suspects] if self.handle_one else [(suspects, True)]
        return [(u, flag) for u, flag in (*units, (fresh, False)) if u]

    def _run_fresh(self, jobs: list[Job], batch: Batch) -> bool:
        """Fresh jobs: in one batch call, or one by one through ``handle_one``
        (the hot path of most workers, kept lean), stopping between two jobs
        when asked to; False if some were left unstarted."""
        handle = self.handle_one
        if handle is None:
            self._run_handler(jobs, batch)
            return True
        heartbeat, started, done = self.heartbeat, time.monotonic(), 0
        try:
            for job in jobs:
                if done and (self.stopping or self._deadline_near()):
                    return False
                if heartbeat is not None:
                    heartbeat.jobs = (job,)
                done += 1
                try:
                    result = handle(job.data)
                except (Unavailable, Interrupted):
                    self._release()  # none of the deliveries this worker holds counts
                    raise
                except REDIS_DOWN as exc:  # a Redis the handler uses is down
                    self._release()
                    raise Unavailable(f"Redis: {exc}") from exc
                except Exception as exc:
                    self._failed([job], exc, batch)
                else:
                    batch.ack(job, result)
        finally:
            if heartbeat is not None:
                heartbeat.jobs = ()
            self._timed(time.monotonic() - started, done)
        return True

    def _timed(self, elapsed_s: float, jobs: int) -> None:
        """Keep the average job time that sets the deadline margin."""
        if jobs:
            per_job = elapsed_s / jobs
            first = self.avg_job_s == 0.0
            self.avg_job_s = per_job if first else 0.8 * self.avg_job_s + 0.2 * per_job

    def _release(self) -> None:
        """Stopping with entries read but not started: none was attempted."""
        self.client.set(keys.in_hand(self.s.consumer), "")

    def _run_handler(self, jobs: list[Job], batch: Batch) -> None:
        started = time.monotonic()
        if self.heartbeat is not None:
            self.heartbeat.jobs = jobs
        try:
            results = self.handle_batch(jobs)
        except (Unavailable, Interrupted):
            self._release()  # none of the deliveries this worker holds counts
            raise
        except REDIS_DOWN as exc:  # a Redis the handler uses is down
            self._release()
            raise Unavailable(f"Redis: {exc}") from exc
        except Exception as exc:
            self._failed(jobs, exc, batch)
            return
        finally:
            if self.heartbeat is not None:
                self.heartbeat.jobs = ()
        self._timed(time.monotonic() - started, len(jobs))
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, Exception):  # a batch handler failing one item
                self._failed([job], result, batch)
            else:
                batch.ack(job, result)

    def _failed(self, jobs: list[Job], exc: Exception, batch: Batch) -> None:
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
                batch.dead(job, error)
            else:
                logger.warning(
                    f"{self.s.worker_id}: job {job.id} failed (attempt {job.attempts}/"
                    f"{self.s.max_attempts}), will retry: {error}"
                )
        if not permanent and any(job.attempts < self.s.max_attempts for job in jobs):
            time.sleep(min(2.0, 0.05 * 2 ** max(j.attempts for j in jobs)))  # retry backoff


class Batch:
    """Acknowledgements, hand-offs and dead letters, flushed in one MULTI."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.rt = runtime
        self.s = runtime.s
        self.acks: list[str] = []
        self.forwards: list[dict[str, Any]] = []
        self.dead_letters: list[dict[bytes, bytes]] = []
        self.first_at = 0.0

    def ack(self, job: Job, result: dict[str, Any] | None) -> None:
        self._note()
        self.acks.append(job.id)
        if result is not None and self.s.then:
            self.forwards.append(result)
        self.rt.processed += 1
        if time.monotonic() - self.first_at >= FLUSH_AFTER_S or self.rt.stopping:
            self.flush()

    def dead(self, job: Job, error: str) -> None:
        self._note()
        self.acks.append(job.id)
        self.dead_letters.append(dead_letter_fields(job.fields, error, job.attempts, job.id))
        logger.warning(f"{self.s.worker_id}: job {job.id} dead-lettered: {error}")

    def _note(self) -> None:
        if not self.acks:
            self.first_at = time.monotonic()

    def flush(self, clear_in_hand: bool = False) -> None:
        if not self.acks and not clear_in_hand:
            return
        pipe = self.rt.client.pipeline(transaction=True)
        if clear_in_hand:
            pipe.delete(keys.in_hand(self.s.consumer))
        for result in self.forwards:
            pipe.xadd(self.s.then or "", {"payload": json.dumps(result, separators=(",", ":"))})
        for fields in self.dead_letters:
            pipe.xadd(keys.dead_stream(self.s.stream), fields)  # type: ignore[arg-type]
        if self.acks:
            pipe.xack(self.s.stream, self.s.group, *self.acks)
            if not self.rt.reported_done:
                mark_done(pipe, self.s)
        pipe.execute()
        if self.acks:
            self.rt.reported_done = True
        self.acks, self.forwards, self.dead_letters = [], [], []


class Heartbeat:
    """``orch:worker:<consumer>``: pid, client id, current jobs; TTL'd."""

    def __init__(self, settings: Settings, client_id: int, *, yields: bool = False) -> None:
        """``yields``: the process stops after its job in hand on SIGUSR1, so
        the spawner may ask it to give its slot to another queue."""
        self.s = settings
        self.client: redis.Redis | None = None  # made by the thread: not on the start-up path
        self.key = keys.worker_heartbeat(settings.consumer)
        self.info: dict[str, Any] = {
            "pid": os.getpid(),
            "client_id": client_id,
            "queue": settings.queue,
            "worker_id": settings.worker_id,
            "host": settings.host,
            "started_at": time.time(),
            "yields": yields,
        }
        self.jobs: Sequence[Job] = ()  # in hand; read by the heartbeat thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orch-heartbeat", daemon=True)

    def start(self) -> None:
        """Beat now and every ``HEARTBEAT_INTERVAL_S``, from a thread."""
        self._thread.start()

    def _connection(self) -> redis.Redis:
        if self.client is None:
            self.client = redis.Redis.from_url(
                self.s.redis_url, socket_timeout=5.0, **QUICK_CONNECT
            )
        return self.client

    def beat(self) -> None:
        self.info["at"] = time.time()
        self.info["jobs"] = [job.id for job in self.jobs]
        payload = json.dumps(self.info)
        self._connection().set(self.key, payload, px=int(HEARTBEAT_TTL_S * 1000))

    def _run(self) -> None:
        while True:
            with contextlib.suppress(redis.RedisError):  # the main loop notices outages
                self.beat()
            if self._stop.wait(HEARTBEAT_INTERVAL_S):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        with contextlib.suppress(redis.RedisError):
            self._connection().delete(self.key)
        self._connection().close()


def mark_done(pipe: redis.client.Pipeline, settings: Settings) -> None:
    """Queue ``orch:done:<consumer>`` on ``pipe``: this worker has completed
    work, so its exit (or death) is no sign of a crash loop. Set once, with
    the first acknowledgement; the spawner reads and deletes it when the
    worker is gone."""
    ttl_s = max(0.0, settings.deadline - time.time()) + DONE_MARK_SLACK_S
    pipe.set(keys.worker_done(settings.consumer), 1, px=int(ttl_s * 1000))


def dead_letter_fields(
    fields: Mapping[str, str | bytes], error: str, attempts: int, entry_id: str
) -> dict[bytes, bytes]:
    """A dead letter: the original fields byte for byte, plus why (SPEC.md)."""
    return codec.fields_to_bytes(
        {
            **fields,
            "error": error,
            "attempts": str(attempts),
            "failed_at": f"{time.time():.3f}",
            "original_id": entry_id,
        }
    )


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    items = reply.items() if isinstance(reply, dict) else (reply or [])
    for item in items:
        for entry_id, fields in item[1]:
            out.append((entry_id, fields or {}))
    return out


def _decode(job: Job) -> str | None:
    """Fill ``job.data``; the reason it can never be handled, if any."""
    raw = job.fields.get("payload")
    if raw is None:
        job.data = dict(job.fields)
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return f"invalid JSON payload: {exc}"
    if not isinstance(data, dict):
        return f"payload must be a JSON object, got {type(data).__name__}"
    job.data = data
    return None


def prepare_process(settings: Settings) -> None:
    """What every worker process does first: die with its spawner (and
    refuse to start if it is gone already), and log in the spawner's format."""
    procs.die_with_parent(signal.SIGTERM)
    if settings.spawner_pid is not None and os.getppid() != settings.spawner_pid:
        raise SystemExit(f"{settings.worker_id}: spawner {settings.spawner_pid} is gone")
    configure_logging()


_logging_configured = False


def configure_logging() -> None:
    """Plain lines to stderr, once per process (the fork server does it for
    the workers it forks: loguru takes milliseconds to add a handler)."""
    global _logging_configured
    if not _logging_configured:
        logger.remove()
        logger.add(sys.stderr, format=LOG_FORMAT)
        _logging_configured = True


def run_batch_worker(handle_batch: BatchHandler, settings: Settings | None = None) -> NoReturn:
    """Serve ``handle_batch(jobs) -> results`` (same order); exit when done.

    The batch is one attempt for each of its jobs: acknowledged together
    after the handler returns, retried together if it raises.
    """
    s = settings or Settings.from_env()
    prepare_process(s)
    _exit(WorkerRuntime(s, handle_batch).run())


def run_worker(handle: Handler, settings: Settings | None = None) -> NoReturn:
    """Serve ``handle(job) -> result | None`` one job at a time; exit when done.

    A failure fails only its own job; on SIGTERM the job in hand finishes
    and the rest of the batch stays pending for the next worker.
    """
    s = settings or Settings.from_env()
    prepare_process(s)
    _exit(WorkerRuntime(s, per_job(handle), handle_one=handle).run())


def _exit(code: int) -> NoReturn:
    """Exit with ``code``; a stop signal arriving now must not replace it."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)


def per_job(handle: Handler) -> BatchHandler:
    """A batch handler for units of one job."""

    def handle_one(jobs: Sequence[Job]) -> list[dict[str, Any] | None]:
        return [handle(job.data) for job in jobs]

    return handle_one
