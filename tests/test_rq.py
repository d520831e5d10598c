"""RQ queues: RQ's own workers under the spawner; dead workers' jobs requeued."""

from __future__ import annotations

import json
from typing import Any

import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT
from tests.test_cli_ops import run


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
    listed = run(sp.config_path, "dlq", "list", "reports")
    assert (
        f"{job.id}  attempts=3" in listed.stdout and "error=worker died: signal 9" in listed.stdout
    )


def test_dlq_works_on_an_rq_queues_failed_jobs(
    redis_url: str, r: TextRedis, spawner_factory: Any
) -> None:
    """``dlq list|retry|purge`` on an RQ queue: RQ's FailedJobRegistry,
    counted as ``status`` counts it; unknown ids fail and change nothing."""
    sp, q = start_rq(redis_url, spawner_factory, max_concurrent=1, max_attempts=1)
    failed = FailedJobRegistry("reports", connection=q.connection, serializer=JSONSerializer)
    jobs = [q.enqueue("tests.rqjobs.tasks.fail_until_allowed", f"late{i}") for i in range(2)]
    wait_until(lambda: failed.count == 2, 60, message=lambda: sp.text()[-3000:])
    listed = run(sp.config_path, "dlq", "list", "reports")
    assert listed.returncode == 0, listed.stderr
    assert f"{jobs[0].id}  attempts=1" in listed.stdout
    assert "error=ValueError: late0 not allowed yet" in listed.stdout
    assert "func: tests.rqjobs.tasks.fail_until_allowed" in listed.stdout
    assert "2 dead letter(s) in rq:failed:reports on redis://" in listed.stdout
    wait_until(lambda: _status_dead(sp.config_path) == 2, 15)  # status counts the same
    unknown = run(sp.config_path, "dlq", "retry", "reports", jobs[0].id, "no-such-job")
    assert unknown.returncode == 1 and "no dead letter no-such-job" in unknown.stderr
    assert failed.count == 2  # nothing changed
    r.set("test:allow:late0", 1)
    retried = run(sp.config_path, "dlq", "retry", "reports", jobs[0].id)
    assert retried.returncode == 0 and "re-queued 1 job(s)" in retried.stdout, retried.stderr
    wait_until(lambda: jobs[0].get_status(refresh=True) == "finished", 30, message=sp.text)
    purged = run(sp.config_path, "dlq", "purge", "reports", jobs[1].id, "--yes")
    assert purged.returncode == 0 and "deleted 1 dead letter(s)" in purged.stdout
    assert failed.count == 0 and not r.exists(f"rq:job:{jobs[1].id}")


def _status_dead(config: Any) -> int:
    shown = run(config, "status", "--json")
    hosts = json.loads(shown.stdout)["hosts"] if shown.returncode == 0 else []
    return sum(q["dead_letters"] for h in hosts for q in h["queues"] if q["name"] == "reports")
