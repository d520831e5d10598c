"""The guard: nothing a spawner started outlives it by more than a deadline.

A worker dies with its spawner only in part: the kernel sends it SIGTERM
(``PR_SET_PDEATHSIG``), and the protocol says it then finishes the job in
hand and exits. A hung job, a grandchild that ignores SIGTERM or a daemon
that called ``setsid`` (re-parented to init once the spawner, its
subreaper, is gone) would live on. So ``orchestrator run`` keeps a guard: a
small process, started at once and not tied to the spawner's life, that
the spawner tells about every worker (pid, deadline, consumer) over a pipe.
While the spawner lives the guard only listens. When the pipe closes with
workers still registered (the spawner was killed), the guard enforces what
the spawner would have: a worker still running at its deadline gets
SIGTERM, and ``stop_grace`` later every process of its tree is SIGKILLed;
when a worker exits, whatever it left behind is killed at once. "Its tree"
is every process whose environment carries the worker's ``ORCH_CONSUMER``:
descendants inherit it, so daemons that left the process tree are found
too (a program that scrubs its environment is out of reach). The guard
exits when no worker is left, and at once after a clean stop.

Its command line names the two variables that tag a worker's processes
(``python -m orchestrator.guard ORCH_CONSUMER ORCH_REDIS_URL``, from
``workerenv``). Protocol, one line per message from the spawner::

    + <pid> <deadline epoch s> <stop_grace s> <Redis URL> <consumer>
    - <pid>

The guard imports nothing of the orchestrator but ``procs``' scan of
``/proc``, so it costs a bare interpreter's memory.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from orchestrator import procs

POLL_S = 0.2  # how often an orphaned guard looks at its workers


@dataclass
class Guarded:
    pid: int
    started: int  # /proc start time, so a reused pid is not mistaken for the worker
    deadline: float  # epoch seconds
    grace_s: float
    redis_url: str
    consumer: str
    terminated: bool = False


class Guard:
    """The spawner's side: start the guard, tell it about workers.
    ``tag``: the environment variables that name a worker's consumer and
    its Redis URL (``workerenv``'s), given to the guard on its command line."""

    def __init__(self, tag: tuple[str, str]) -> None:
        self.tag = tag
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.guard", *self.tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            close_fds=True,
        )

    def watch(
        self, pid: int, deadline: float, grace_s: float, redis_url: str, consumer: str
    ) -> None:
        self._send(f"+ {pid} {deadline:.3f} {grace_s:g} {redis_url} {consumer}\n")

    def forget(self, pid: int) -> None:
        self._send(f"- {pid}\n")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _send(self, line: str) -> None:
        if self.proc is None or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            self.proc = None  # it died: the spawner restarts it (see restart_if_dead)

    def close(self) -> None:
        """A clean stop (no worker left): the guard exits on EOF."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# -- the guard process --------------------------------------------------------


def _read_messages(buffer: bytes, guarded: dict[int, Guarded]) -> bytes:
    *lines, rest = buffer.split(b"\n")
    for line in lines:
        parts = line.decode(errors="replace").split(" ", 5)
        if parts[0] == "+" and len(parts) == 6:
            pid = int(parts[1])
            started = procs.start_ticks(pid)
            if started is not None:
                deadline, grace_s, url, consumer = float(parts[2]), float(parts[3]), *parts[4:]
                guarded[pid] = Guarded(pid, started, deadline, grace_s, url, consumer)
        elif parts[0] == "-" and len(parts) >= 2:
            guarded.pop(int(parts[1]), None)
    return rest


def _listen(fd: int, guarded: dict[int, Guarded]) -> None:
    """Follow the spawner's messages until it closes the pipe (or dies)."""
    buffer = b""
    while True:
        select.select([fd], [], [])
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        buffer = _read_messages(buffer + chunk, guarded)


def _enforce(guarded: dict[int, Guarded], tag: tuple[str, str]) -> None:
    """The spawner is gone: hold each worker to its deadline, then exit."""
    consumer_variable, url_variable = tag
    while guarded:
        now = time.time()
        for g in list(guarded.values()):
            also = (url_variable, g.redis_url)
            if procs.start_ticks(g.pid) != g.started:  # exited (or pid reused)
                procs.kill_tagged(g.consumer, consumer_variable, also=also)
                del guarded[g.pid]
            elif now >= g.deadline + g.grace_s:
                procs.kill_tagged(g.consumer, consumer_variable, also=also)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(g.pid, signal.SIGKILL)
                del guarded[g.pid]
            elif now >= g.deadline and not g.terminated:
                g.terminated = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(g.pid, signal.SIGTERM)
        time.sleep(POLL_S)


def serve(fd: int, tag: tuple[str, str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the spawner's to handle
    guarded: dict[int, Guarded] = {}
    _listen(fd, guarded)
    _enforce(guarded, tag)
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.stdin.fileno(), (sys.argv[1], sys.argv[2])))
