"""The spawner's record of its workers: who runs, for which queue, until when.

A ``Worker`` is one process the spawner started (or, after a restart,
adopted: a worker of this host still alive from the previous spawner). Its
*lease* (``leases``) is the same record in Redis, so a restarted spawner
knows which pids were its workers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

import psutil

from orchestrator import procs
from orchestrator.leases import Lease
from orchestrator.procs import ExitStatus


class StopReason(StrEnum):
    MAX_RUNTIME = "max_runtime"
    MEMORY = "memory"
    SHUTDOWN = "shutdown"
    OPERATOR = "operator"
    YIELD = "yield"  # its slot goes to a queue that has none: it finishes its job, then exits


@dataclass
class Worker:
    lease: Lease
    popen: subprocess.Popen[bytes] | None  # None when forked by the zygote, or adopted
    started_mono: float
    child: bool = True  # ours to reap (started by us, or re-parented to us)
    stop_reason: StopReason | None = None
    kill_at: float | None = None  # monotonic: SIGKILL the tree after this
    tree: dict[int, psutil.Process] = field(default_factory=dict)
    handed: int = 0  # recovered entries given to it (not read by it)

    @property
    def pid(self) -> int:
        return self.lease.pid

    @property
    def worker_id(self) -> str:
        return self.lease.worker_id

    @property
    def queue(self) -> str:
        return self.lease.queue

    def runtime_s(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.started_mono

    def remember_tree(self) -> None:
        """Snapshot descendants now: once the worker dies they are orphans."""
        for proc in procs.snapshot_tree(self.pid):
            self.tree.setdefault(proc.pid, proc)

    def terminate(self, reason: StopReason, grace_s: float, signum: int = signal.SIGTERM) -> bool:
        """Ask the worker to stop with ``signum``; SIGKILL of its tree follows
        after ``grace_s``. A yield is only asked: the worker finishes the job
        in hand however long it takes (``max_runtime`` still holds, and any
        other reason to stop it later takes over)."""
        if self.stop_reason is not None and not (
            self.stop_reason is StopReason.YIELD and reason is not StopReason.YIELD
        ):
            return False
        self.stop_reason = reason
        if reason is not StopReason.YIELD:
            self.kill_at = time.monotonic() + grace_s
        self.remember_tree()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)
        return True

    def kill_tree(self) -> None:
        """SIGKILL the worker and every descendant ever seen."""
        self.remember_tree()
        procs.signal_tree(list(self.tree.values()), signal.SIGKILL)
        self.kill_at = None

    def poll(self) -> ExitStatus | None:
        """Reap the worker if it has exited (never blocks)."""
        if not self.child:  # adopted: not ours to wait for
            return None if self.lease.process_alive() else ExitStatus(code=None, signal=None)
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return ExitStatus(code=None, signal=None)
        if pid == 0:
            return None
        exit_status = ExitStatus.from_wait_status(status)
        if self.popen is not None:  # so subprocess never reaps (or warns) later
            self.popen.returncode = (
                exit_status.code if exit_status.code is not None else -(exit_status.signal or 0)
            )
        return exit_status

    def kill_leftovers(self) -> int:
        """After the worker exited: SIGKILL descendants it left behind."""
        left = [p for p in self.tree.values() if p.pid != self.pid and _running(p)]
        procs.signal_tree(left, signal.SIGKILL)
        return len(left)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class WorkerFleet:
    """Live workers by id, with the counts the spawner asks for."""

    def __init__(self) -> None:
        self.workers: dict[str, Worker] = {}
        self._issued: dict[str, float] = {}  # recent ids, so none is reused

    def __iter__(self) -> Iterator[Worker]:
        return iter(list(self.workers.values()))

    def __len__(self) -> int:
        return len(self.workers)

    def add(self, worker: Worker) -> None:
        self.workers[worker.worker_id] = worker

    def remove(self, worker_id: str) -> Worker | None:
        return self.workers.pop(worker_id, None)

    def of_queue(self, queue: str) -> list[Worker]:
        return [w for w in self.workers.values() if w.queue == queue]

    def count(self, queue: str) -> int:
        return sum(1 for w in self.workers.values() if w.queue == queue)

    def consumers(self) -> set[str]:
        return {w.lease.consumer for w in self.workers.values()}

    def new_worker_id(self, prefix: str, now: float) -> str:
        """``ai_1643234567`` as in seed 004; suffixed if taken this second."""
        self._issued = {k: t for k, t in self._issued.items() if now - t < 5.0}
        base = f"{prefix}_{int(now)}"
        worker_id, n = base, 1
        while worker_id in self.workers or worker_id in self._issued:
            n += 1
            worker_id = f"{base}_{n}"
        self._issued[worker_id] = now
        return worker_id
