"""Test worker that records each finished job in a file, not in Redis.

For tests in which Redis itself fails over: a job ``{"id": ..., "out":
PATH, "seconds": S}`` sleeps S and appends ``<id>`` to PATH when it ends (one write, O_APPEND), so
what was done survives whatever the new master forgot. Its Redis client
is the project's (``orchestrator.connections.connect``), so any URL the
config accepts works here too.
"""

import os
import time
from typing import Any

from orchestrator.worker import run_worker


def handle(job: dict[str, Any]) -> None:
    time.sleep(float(job.get("seconds", 0)))
    fd = os.open(job["out"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{job['id']}\n".encode())
    finally:
        os.close(fd)


run_worker(handle)
