"""Chaos test, stage 1: passes each job on; poison jobs raise or kill."""

import os
import signal
import time
from typing import Any

from orchestrator.worker import run_worker


def handle(job: dict[str, Any]) -> dict[str, Any]:
    if job.get("poison") == "raise":
        raise RuntimeError("poison: raises every time")
    if job.get("poison") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(float(os.environ.get("CHAOS_JOB_S", "0")))  # keep the chaos busy
    return {"id": job["id"]}


run_worker(handle)
