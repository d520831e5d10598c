"""Process trees: finding descendants, killing them all, reading exits."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from orchestrator import procs
from orchestrator.procs import ExitStatus
from tests.helpers import wait_until

TREE = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "code = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'\n"
    "kids = [subprocess.Popen([sys.executable, '-c', code]) for _ in range(2)]\n"
    "print(' '.join(str(k.pid) for k in kids), flush=True)\n"
    "time.sleep(60)\n"
)


def test_snapshot_and_kill_a_tree_that_ignores_sigterm() -> None:
    root = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    assert root.stdout is not None
    kids = [int(p) for p in root.stdout.readline().split()]
    tree = wait_until(lambda: (t := procs.snapshot_tree(root.pid)) and len(t) == 3 and t)
    assert tree[0].pid == root.pid and sorted(p.pid for p in tree[1:]) == sorted(kids)
    assert procs.descendants(root.pid) is not None
    started = time.monotonic()
    procs.kill_tree(root.pid, grace_s=0.3)
    assert time.monotonic() - started < 5
    assert procs.wait_gone([root.pid, *kids], 5) == []
    assert not os.path.exists(f"/proc/{root.pid}")  # reaped by kill_tree: no zombie left


def test_exit_status_descriptions() -> None:
    assert ExitStatus.from_returncode(-9).describe() == "signal 9 (SIGKILL)"
    assert ExitStatus.from_returncode(3).describe() == "code 3"
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    assert ExitStatus.from_wait_status(status) == ExitStatus(code=7, signal=None)
    assert procs.snapshot_tree(pid) == [] and procs.pid_alive(pid) is False
