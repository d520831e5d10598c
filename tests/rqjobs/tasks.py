"""RQ job functions for the tests (importable by RQ's work-horses)."""

from __future__ import annotations

import os
import signal
import time

import redis


def _r() -> redis.Redis:
    return redis.Redis.from_url(os.environ["ORCH_REDIS_URL"])


def record(job_id: str, seconds: float = 0.0) -> str:
    _r().rpush("test:started", job_id)
    if seconds:
        time.sleep(seconds)
    _r().sadd("test:done", job_id)
    return job_id


def kill_worker_once(job_id: str) -> str:
    """Kills the RQ worker (not just the work-horse) the first time."""
    if _r().incr(f"test:seen:{job_id}") == 1:
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    return record(job_id)


def always_kill(job_id: str) -> str:
    _r().incr(f"test:seen:{job_id}")
    os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
    return job_id


def hang_once(job_id: str) -> str:
    """Outlives its worker's max_runtime the first time."""
    if _r().incr(f"test:seen:{job_id}") == 1:
        time.sleep(600)
    return record(job_id)


def fail_until_allowed(job_id: str) -> str:
    """Raises until ``test:allow:<job_id>`` is set (a dead letter to retry)."""
    if not _r().exists(f"test:allow:{job_id}"):
        raise ValueError(f"{job_id} not allowed yet")
    return record(job_id)
