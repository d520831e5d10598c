"""Bench worker: the first job of a trial blocks (so its worker holds the
whole batch); every other run records when its handler started.

A batch handler: it reads ``batch_size`` entries at once (a ``run_worker``
worker would read only what it starts within its prefetch window).
"""

import os
import time
from collections.abc import Sequence
from typing import Any

import redis

from orchestrator.worker import Job, run_batch_worker

r = redis.Redis.from_url(os.environ["ORCH_REDIS_URL"])


def handle_batch(jobs: Sequence[Job]) -> list[Any]:
    started = f"{time.time():.6f}"  # the handler starts on the batch
    for job in jobs:
        trial = job.data["trial"]
        if job.data.get("block") and r.incr(f"bench:blocked:{trial}") == 1:
            time.sleep(600)
    pipe = r.pipeline(transaction=False)
    for job in jobs:
        pipe.hset(f"bench:handled:{job.data['trial']}", str(job.data["n"]), started)
    pipe.execute()
    return [None] * len(jobs)


run_batch_worker(handle_batch)
