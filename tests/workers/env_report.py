"""Test worker: reports how it was started, then exits with EXIT_CODE."""

import json
import os
import sys
from pathlib import Path

import pathmod  # type: ignore[import-not-found]  # only on PYTHONPATH, set by the queue's env

out = Path(os.environ["TEST_OUT"])
out.mkdir(parents=True, exist_ok=True)
report = {
    "pid": os.getpid(),
    "ppid": os.getppid(),
    "argv": sys.argv,
    "value": pathmod.VALUE,
    "hashseed": os.environ.get("PYTHONHASHSEED"),
    "main": __name__,
    "cwd": os.getcwd(),
    "warm": "orchestrator.worker" in sys.modules,
    "worker_id": os.environ.get("ORCH_WORKER_ID"),
}
(out / f"{os.getpid()}.report").write_text(json.dumps(report))
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
