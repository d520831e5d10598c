"""Test worker on the real runtime; each job says what to do.

Job fields: ``id`` and ``action``: ok (default), sleep (``seconds``), raise,
exit (``code``), kill (SIGKILL itself), poison-once (SIGKILL itself the
first time only), sleep-once (``seconds``, the first time only), hang-once
(the first time: ignore SIGTERM, start a grandchild that ignores it too,
write both pids to TEST_OUT/<id>.tree, and never return). Done ids go to
the Redis set ``test:done`` and a list ``test:log`` (``<id> <consumer>``),
so tests see every execution.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from orchestrator.worker import run_worker

r = redis.Redis.from_url(os.environ["ORCH_REDIS_URL"])
consumer = os.environ.get("ORCH_CONSUMER", "")


def handle(job: dict[str, Any]) -> dict[str, Any] | None:
    action = job.get("action", "ok")
    job_id = str(job.get("id"))
    r.rpush("test:started", f"{job_id} {consumer}")
    if action == "sleep":
        time.sleep(float(job.get("seconds", 1)))
    elif action == "raise":
        raise RuntimeError(f"job {job_id} always fails")
    elif action == "exit":
        os._exit(int(job.get("code", 3)))
    elif action == "kill" or (action == "poison-once" and r.incr(f"test:seen:{job_id}") == 1):
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hang-once" and r.incr(f"test:seen:{job_id}") == 1:
        hang(job_id)
    elif action == "sleep-once" and r.incr(f"test:seen:{job_id}") == 1:
        time.sleep(float(job.get("seconds", 1)))
    r.sadd("test:done", job_id)
    r.rpush("test:log", f"{job_id} {consumer}")
    return {"id": job_id, "stage": os.environ.get("ORCH_QUEUE")}


def hang(job_id: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
        ]
    )
    out = Path(os.environ["TEST_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{job_id}.tree").write_text(f"{os.getpid()} {child.pid}")
    while True:
        time.sleep(1)


run_worker(handle)
