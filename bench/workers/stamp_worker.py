"""Bench worker: records when each job's handler starts (epoch seconds)."""

import os
import time
from typing import Any

import redis

from orchestrator.worker import run_worker

r = redis.Redis.from_url(os.environ["ORCH_REDIS_URL"])


def handle(job: dict[str, Any]) -> None:
    r.hset("bench:handled", str(job["id"]), f"{time.time():.6f}")


run_worker(handle)
