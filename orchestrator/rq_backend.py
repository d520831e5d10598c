"""RQ queues: RQ's own worker under the spawner, and prompt recovery.

Producers enqueue with RQ's API (``rq.Queue(name, serializer=...)``); for a
queue with ``backend: rq`` the spawner starts ``python -m
orchestrator.rq_backend``, which runs RQ's ``Worker`` (fork per job, RQ's
own job timeouts) until the queue has been idle for ``idle_timeout``.

Attempts: a job enqueued without ``Retry`` gets ``max_attempts - 1``
retries when it first starts, so RQ's own retry logic applies our limit to
exceptions. When a spawned RQ worker dies (crash, SIGKILL, ``max_runtime``),
RQ would find its job only when the job's heartbeat expires (its
abandoned-job maintenance: minutes). The spawner knows at once, so
``recover_worker`` marks that worker's executions expired and runs RQ's own
``StartedJobRegistry.cleanup`` for exactly them: the job is retried if it
has retries left, else moved to the ``FailedJobRegistry`` (our dead
letters for RQ queues), with the reason kept in ``job.meta``.

Serialisation is JSON by default. ``serializer: pickle`` lets jobs carry
any Python object, and also lets anyone who can write to Redis run code in
your workers: use it only on a Redis you trust completely.
"""

from __future__ import annotations

import math
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import DefaultSerializer, JSONSerializer

from orchestrator import codec, procs
from orchestrator.connections import connect
from orchestrator.deadletters import DeadLetter, dead_letter_record

if TYPE_CHECKING:
    from orchestrator.config import QueueConfig

REASON_META = "orch_error"


def serializer_for(name: str) -> Any:
    return DefaultSerializer if name == "pickle" else JSONSerializer


class OrchestratedWorker(Worker):
    """RQ's worker, with our ``max_attempts`` as the default retry count,
    and our process title before RQ's own (``orch-worker <label> <id>: ...``)."""

    max_attempts = 3
    title = "orch-worker"

    def procline(self, message: str) -> None:
        procs.set_title(f"{self.title}: {message}")

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        if job.retries_left is None and self.max_attempts > 1:
            job.retries_left = self.max_attempts - 1
            job.retry_intervals = [0]
            job.save()
        super().prepare_job_execution(job, remove_from_intermediate_queue)


@dataclass(frozen=True, slots=True)
class RecoverResult:
    requeued: int
    failed: int
    done: bool = False  # the worker had finished jobs (RQ's own counts)


def recover_worker(
    client: redis.Redis, queue_name: str, worker_name: str, reason: str, serializer: str
) -> RecoverResult:
    """Hand a dead RQ worker's started jobs to RQ's abandoned-job logic now."""
    ser = serializer_for(serializer)
    registry = StartedJobRegistry(queue_name, connection=client, serializer=ser)
    executions_key = f"rq:worker:{worker_name}:executions"
    composites = [codec.text(c) for c in client.smembers(executions_key)]
    mine = [c for c in composites if client.zscore(registry.key, c) is not None]
    for composite in mine:
        job_id = composite.rsplit(":", 1)[0]
        try:
            job = Job.fetch(job_id, connection=client, serializer=ser)
        except Exception:
            continue
        job.meta[REASON_META] = reason
        job.save_meta()  # type: ignore[no-untyped-call]
        client.zadd(registry.key, {composite: 0}, xx=True)
    failed = FailedJobRegistry(queue_name, connection=client, serializer=ser)
    failed_before = failed.count
    if mine:
        registry.cleanup(timestamp=1)  # only the entries just marked expire so early
    counts = client.hmget(f"rq:worker:{worker_name}", "successful_job_count", "failed_job_count")
    _forget_worker(client, worker_name, queue_name)
    gone_to_failed = failed.count - failed_before
    return RecoverResult(
        requeued=len(mine) - gone_to_failed,
        failed=gone_to_failed,
        done=any(int(c or 0) > 0 for c in counts),
    )


def _forget_worker(client: redis.Redis, worker_name: str, queue_name: str) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.delete(f"rq:worker:{worker_name}", f"rq:worker:{worker_name}:executions")
    pipe.srem("rq:workers", f"rq:worker:{worker_name}")
    pipe.srem(f"rq:workers:{queue_name}", f"rq:worker:{worker_name}")
    pipe.execute()


def main() -> int:
    """``python -m orchestrator.rq_backend``: one RQ worker, as the spawner set it up."""
    from orchestrator.worker import configure_logging, identify
    from orchestrator.worker.workerenv import Settings

    procs.die_with_parent()
    settings = Settings.from_env()
    configure_logging(settings.log)  # RQ's log lines too (the standard library's)
    identify(settings.queue, settings.label, settings.worker_id)
    OrchestratedWorker.title = procs.worker_title(settings.label, settings.worker_id)
    client = connect(settings.redis_url, timeout_s=None, fail_fast=False)
    serializer = serializer_for(settings.rq_serializer)
    queue = Queue(settings.queue, connection=client, serializer=serializer)
    OrchestratedWorker.max_attempts = settings.max_attempts
    worker = OrchestratedWorker(
        [queue], name=settings.consumer, connection=client, serializer=serializer
    )
    idle_s = settings.idle_timeout_s

    # SIGUSR1: the spawner gives this worker's slot to another queue: RQ's
    # warm shutdown (the job in hand finishes), as on a first SIGTERM.
    def give_slot_up(_signum: int, frame: Any) -> None:
        worker.request_stop(signal.SIGTERM, frame)  # type: ignore[no-untyped-call]

    signal.signal(signal.SIGUSR1, give_slot_up)
    worker.work(
        burst=idle_s <= 0,
        max_idle_time=max(1, math.ceil(idle_s)),
        logging_level=settings.log.level,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())


def failed_jobs(
    client: redis.Redis, queue: QueueConfig, limit: int, *, newest: bool = False
) -> tuple[int, list[DeadLetter]]:
    """The dead letters of an RQ queue: its ``FailedJobRegistry``, oldest
    first (``newest``: newest first), as ``DeadLetter``s whose
    ``original_fields`` are the call; and how many there are."""
    registry = _failed_registry(client, queue)
    ids = registry.get_job_ids(0, limit - 1, desc=newest)
    jobs = Job.fetch_many(ids, connection=client, serializer=registry.serializer)
    letters = [_as_dead_letter(i, job, queue) for i, job in zip(ids, jobs, strict=True)]
    return registry.count, letters


def retry_failed(client: redis.Redis, queue: QueueConfig, ids: Sequence[str]) -> list[str]:
    """Put failed jobs back on their queue with fresh attempts (RQ's own
    ``requeue``); their ids."""
    registry = _failed_registry(client, queue)
    for job_id in ids:
        job = Job.fetch(job_id, connection=client, serializer=registry.serializer)
        job.retries_left = None  # OrchestratedWorker gives it max_attempts again
        job.save()
        registry.requeue(job)
    return list(ids)


def purge_failed(client: redis.Redis, queue: QueueConfig, ids: Sequence[str]) -> int:
    """Delete failed jobs (registry entry and job hash); how many."""
    registry = _failed_registry(client, queue)
    for job_id in ids:
        registry.remove(job_id, delete_job=True)
    return len(ids)


def failed_ids(client: redis.Redis, queue: QueueConfig) -> set[str]:
    return set(_failed_registry(client, queue).get_job_ids())


def _failed_registry(client: redis.Redis, queue: QueueConfig) -> FailedJobRegistry:
    ser = serializer_for(queue.serializer)
    return FailedJobRegistry(queue.name, connection=client, serializer=ser)


def _as_dead_letter(job_id: str, job: Job | None, queue: QueueConfig) -> DeadLetter:
    if job is None:  # its hash expired: only the registry entry is left
        return DeadLetter(job_id, {"error": "job data expired", "original_id": job_id})
    error = job.meta.get(REASON_META) or _last_line(job.exc_info or "")
    ended = job.ended_at.timestamp() if job.ended_at else 0.0
    call = {"func": job.func_name or "", "args": codec.printable(repr(job.args))}
    if job.kwargs:
        call["kwargs"] = codec.printable(repr(job.kwargs))
    # OrchestratedWorker gave it max_attempts - 1 retries when it first started
    left = job.retries_left
    attempts = 1 if left is None else max(1, queue.max_attempts - left)
    return DeadLetter(job_id, dead_letter_record(call, error, attempts, job_id, failed_at=ended))


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
