"""Test worker that leaves processes behind; each job's ``action`` says how.

- ``hang``: ignore SIGTERM, start a grandchild that ignores it too and a
  daemon (double fork and ``setsid``: re-parented away from the worker's
  tree), write ``<worker> <grandchild> <daemon>`` to TEST_OUT/<id>.tree,
  and never return.
- ``hang_late``: as ``hang``, but write only ``<worker> <grandchild>`` to
  TEST_OUT/<id>.tree, and start the daemon when TEST_OUT/<id>.go appears
  (after the test killed the spawner: no live subreaper catches it), its
  pid then in TEST_OUT/<id>.daemon.
- ``daemon``: start such a daemon, write its pid to TEST_OUT/<id>.daemon,
  and finish the job normally.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.worker import run_worker

IGNORE_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
DAEMON = (
    "import os, sys, time\n"
    "if os.fork(): sys.exit(0)\n"
    "os.setsid()\n"
    "if os.fork(): sys.exit(0)\n"
    "print(os.getpid(), flush=True)\n"
    "os.close(1)\n"
    "time.sleep(600)\n"
)
OUT = Path(os.environ["TEST_OUT"])


def start_daemon() -> int:
    starter = subprocess.run(
        [sys.executable, "-c", DAEMON], stdout=subprocess.PIPE, text=True, check=True
    )
    return int(starter.stdout.split()[0])


def write(name: str, text: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.tmp").write_text(text)
    (OUT / f"{name}.tmp").rename(OUT / name)


def hang_late(job_id: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", IGNORE_TERM])
    write(f"{job_id}.tree", f"{os.getpid()} {child.pid}")
    while not (OUT / f"{job_id}.go").exists():
        time.sleep(0.05)
    write(f"{job_id}.daemon", str(start_daemon()))


def handle(job: dict[str, Any]) -> None:
    job_id = str(job.get("id"))
    action = job.get("action")
    if action in ("hang", "hang_late"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if action == "hang_late":
            hang_late(job_id)
        else:
            child = subprocess.Popen([sys.executable, "-c", IGNORE_TERM])
            write(f"{job_id}.tree", f"{os.getpid()} {child.pid} {start_daemon()}")
        while True:
            time.sleep(1)
    write(f"{job_id}.daemon", str(start_daemon()))


run_worker(handle)
