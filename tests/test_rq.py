"""RQ queues: RQ's own workers under the spawner; dead workers' jobs requeued."""

from __future__ import annotations

from typing import Any

import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT


def rq_queue(**kw: Any) -> dict[str, Any]:
    return {
        "backend": "rq",
        "label": "RQ",
        "cooldown": 0,
        "max_runtime": 60,
        "idle_timeout": 1,
        **kw,
    }


def start_rq(
    redis_url: str, spawner_factory: Any, spawner: dict[str, Any] | None = None, **queue_kw: Any
) -> tuple[Any, Queue]:
    """A spawner running RQ workers for the queue ``reports``, and that queue."""
    sp = spawner_factory(
        redis_url,
        {"reports": rq_queue(**queue_kw)},
        env={"PYTHONPATH": str(ROOT)},
        spawner=spawner,
    )
    sp.start()
    client = redis.Redis.from_url(redis_url)
    return sp, Queue("reports", connection=client, serializer=JSONSerializer)


def test_rq_jobs_all_finish(redis_url: str, r: TextRedis, spawner_factory: Any) -> None:
    sp, q = start_rq(redis_url, spawner_factory, max_concurrent=2)
    jobs = [q.enqueue("tests.rqjobs.tasks.record", f"job{i}") for i in range(12)]
    wait_until(lambda: r.scard("test:done") == 12, 60, message=lambda: sp.text()[-3000:])
    assert sp.spawned() and all(total <= 2 for *_, total in sp.spawned())
    wait_until(lambda: all(j.get_status(refresh=True) == "finished" for j in jobs))


def test_killed_rq_worker_job_is_requeued_promptly(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp, q = start_rq(redis_url, spawner_factory, max_concurrent=1)
    job = q.enqueue("tests.rqjobs.tasks.kill_worker_once", "victim")
    sp.wait_log("Requeued 1 RQ job(s)", timeout_s=30)
    wait_until(lambda: r.sismember("test:done", "victim"), 30, message=lambda: sp.text()[-3000:])
    # The function records itself before RQ marks the job finished.
    wait_until(lambda: job.get_status(refresh=True) == "finished", 10)
    assert int(r.get("test:seen:victim") or 0) == 2


def test_overdue_rq_worker_is_killed_and_its_job_requeued(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp, q = start_rq(
        redis_url, spawner_factory, spawner={"stop_grace": 0.5}, max_concurrent=1, max_runtime=2
    )
    job = q.enqueue("tests.rqjobs.tasks.hang_once", "slow", job_timeout=3600)
    sp.wait_log("max_runtime 2s exceeded", timeout_s=30)
    sp.wait_log("Requeued 1 RQ job(s)", timeout_s=30)
    wait_until(lambda: job.get_status(refresh=True) == "finished", 30, message=sp.text)
    assert int(r.get("test:seen:slow") or 0) == 2 and r.sismember("test:done", "slow")


def test_rq_job_that_always_kills_fails_after_max_attempts(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    sp, q = start_rq(
        redis_url, spawner_factory, spawner={"crash_window": 0}, max_concurrent=1, max_attempts=3
    )
    client = q.connection
    job = q.enqueue("tests.rqjobs.tasks.always_kill", "poison")
    failed = FailedJobRegistry("reports", connection=client, serializer=JSONSerializer)
    wait_until(lambda: job.id in failed.get_job_ids(), 60, message=lambda: sp.text()[-3000:])
    assert int(r.get("test:seen:poison") or 0) == 3
    fetched = Job.fetch(job.id, connection=client, serializer=JSONSerializer)
    assert fetched.meta["orch_error"] == "worker died: signal 9"
