"""The spawner's record of its workers: who runs, for which queue, until when.

A ``Worker`` is one process the spawner started (or, after a restart,
adopted: a worker of this host still alive from the previous spawner). Its
*lease* (``orch:leases:<host>``) is the same record in Redis, so a restarted
spawner knows which pids were its workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import psutil

from orchestrator import procs
from orchestrator.procs import ExitStatus


class StopReason(StrEnum):
    MAX_RUNTIME = "max_runtime"
    MEMORY = "memory"
    SHUTDOWN = "shutdown"
    OPERATOR = "operator"
    YIELD = "yield"  # its slot goes to a queue that has none: it finishes its job, then exits


@dataclass(frozen=True, slots=True)
class Lease:
    worker_id: str
    queue: str
    consumer: str
    pid: int
    started_at: float  # epoch seconds
    deadline: float  # epoch seconds: started_at + max_runtime
    create_time: float  # psutil's process start time, guards against pid reuse

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Lease:
        return cls(**json.loads(text))

    def process_alive(self) -> bool:
        """True if the leased pid still runs the same process."""
        try:
            proc = psutil.Process(self.pid)
            same = abs(proc.create_time() - self.create_time) < 0.5
            return same and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


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


class Fleet:
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


def stop_text(
    worker: Worker, reason: StopReason, max_runtime_s: float, max_memory_mb: int | None
) -> str:
    """Why the spawner stopped a worker, for log lines and dead letters."""
    if reason is StopReason.MAX_RUNTIME:
        return f"max_runtime {max_runtime_s:g}s exceeded"
    if reason is StopReason.MEMORY:
        rss_mb = procs.tree_rss_bytes(worker.pid) / 2**20
        return f"memory {rss_mb:.0f} MB > max_memory_mb {max_memory_mb}"
    return reason.value


def death_reason(worker: Worker, status: ExitStatus, stopped_because: str) -> str:
    """The ``error`` of entries dead-lettered because this worker died."""
    if worker.stop_reason in (StopReason.MAX_RUNTIME, StopReason.MEMORY):
        return f"worker stopped: {stopped_because}"
    if status.signal is not None:
        return f"worker died: signal {status.signal}"
    if status.code is None:
        return "worker lost"
    return f"worker exited: code {status.code}"


def exit_text(
    worker: Worker, status: ExitStatus, label: str, runtime_s: float, leftovers: int, total: int
) -> tuple[str, str]:
    """The pictograph and line for a worker's exit."""
    if status.signal is not None:
        how = f"killed by {status.describe()}"
    elif status.code is None:
        how = "gone"
    else:
        how = f"exited with {status.describe()}"
    why = f", stopped for {worker.stop_reason.value}" if worker.stop_reason else ""
    extra = f", killed {leftovers} leftover process(es)" if leftovers else ""
    text = f"Worker {worker.worker_id} for {label} {how} after {runtime_s:.1f}s{why}{extra} "
    return exit_icon(status), text + f"(Total: {total})"


def exit_icon(status: ExitStatus) -> str:
    """🏁 exited 0 (or gone, for an adopted worker), ⏳ exited 75 (a dependency
    is down), 💀 any other code or a signal: the README's legend."""
    if status.code == 75:
        return "⏳"
    if status.ok or (status.code is None and status.signal is None):
        return "🏁"
    return "💀"
