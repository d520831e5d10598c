"""Soak bench worker: the tiny job; stage A hands it on to stage B (``then``),
stage B fails one job in 1,000 (``max_attempts: 1``: it is dead-lettered)."""

import os
from typing import Any

from bench.workers.tiny import work
from orchestrator.worker import run_worker

LAST_STAGE = not os.environ.get("ORCH_THEN")


def handle(job: dict[str, Any]) -> dict[str, Any] | None:
    n = int(job["n"])
    work(n)
    if not LAST_STAGE:
        return {"n": n}
    if n % 1000 == 999:
        raise RuntimeError(f"job {n}: one in 1,000 fails")
    return None


run_worker(handle)
