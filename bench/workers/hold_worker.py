"""Bench worker: the first job of a trial blocks (so its worker holds the
whole batch); every other run records when it was handled."""

import os
import time
from typing import Any

import redis

from orchestrator.worker import run_worker

r = redis.Redis.from_url(os.environ["ORCH_REDIS_URL"])


def handle(job: dict[str, Any]) -> None:
    trial = job["trial"]
    if job.get("block") and r.incr(f"bench:blocked:{trial}") == 1:
        time.sleep(600)
    r.hset(f"bench:handled:{trial}", str(job["n"]), f"{time.time():.6f}")


run_worker(handle)
