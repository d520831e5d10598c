"""Test worker for how work flows: each job sleeps ``seconds`` (default 0).

Records ``<id> <queue> <consumer> <epoch start>`` on the list ``flow:started``
when a job starts, and its id in the set ``flow:done`` when it ends: one
round trip each, so the timings the tests read are the handler's own. Ids
go back to Redis through ``orchestrator.codec.to_bytes``, so an id that was
not valid UTF-8 keeps its bytes.
"""

import os
import time
from typing import Any

import redis

from orchestrator.codec import to_bytes
from orchestrator.worker import run_worker

r = redis.Redis.from_url(os.environ["ORCH_REDIS_URL"])
queue = os.environ.get("ORCH_QUEUE", "")
consumer = os.environ.get("ORCH_CONSUMER", "")


def handle(job: dict[str, Any]) -> None:
    job_id = to_bytes(str(job.get("id")))  # a field that is not UTF-8 keeps its bytes
    r.rpush(
        "flow:started",
        b"%s %s %s %.6f" % (job_id, to_bytes(queue), to_bytes(consumer), time.time()),
    )
    seconds = float(job.get("seconds", 0))
    if seconds:
        time.sleep(seconds)
    r.sadd("flow:done", job_id)


run_worker(handle)
