"""Bench worker: each job sleeps ``seconds`` (with ``first_only``, on its first
run only); its start time (epoch seconds) goes to the hash ``bench:started``
and its id to the set ``bench:done``."""

import os
import time
from typing import Any

import redis

from orchestrator.worker import run_worker

r = redis.Redis.from_url(os.environ["ORCH_REDIS_URL"])


def handle(job: dict[str, Any]) -> None:
    again = r.hset("bench:started", str(job["id"]), f"{time.time():.6f}") == 0
    if not (again and job.get("first_only")):
        time.sleep(float(job.get("seconds", 0)))
    r.sadd("bench:done", str(job["id"]))


run_worker(handle)
