"""Starting worker processes, and the process-tree hygiene around them.

``WorkerLauncher.launch`` forks a ``script`` worker warm from the fork server
(``zygote``) when there is one, else execs the program. As child subreaper
(``orchestrator run``), the spawner inherits what its workers leave behind;
``reap_strays`` kills and reaps those orphans so no process outlives its
worker. The environment each worker starts with is ``orchestrator.worker.workerenv``'s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Collection, Sequence

import psutil

from orchestrator import procs, zygote
from orchestrator.config import QueueConfig
from orchestrator.logs import Events, LogConfig, LogFormat


class WorkerLauncher:
    def __init__(self, events: Events, subreaper: bool) -> None:
        self.events = events
        self.subreaper = subreaper
        self.zygote: zygote.Zygote | None = None
        self.preload: Sequence[str] = ()
        self.redis_url = ""
        self.log = LogConfig()
        self.not_ours: set[int] = set()  # children from before us (an embedded Redis)

    def open(
        self, fork_server: bool, preload: Sequence[str], redis_url: str, log: LogConfig
    ) -> None:
        """Become the subreaper of our workers' trees and start the fork server
        (logging as ``log`` says, as its workers will).

        The fork server needs the subreaper: where it cannot fork our
        children directly, its workers are re-parented to us.
        """
        self.preload, self.redis_url, self.log = preload, redis_url, log
        with contextlib.suppress(psutil.Error):
            self.not_ours = {c.pid for c in psutil.Process().children()}
        if self.subreaper and procs.set_subreaper() and fork_server:
            self.restart_zygote()

    def launch(
        self, queue: QueueConfig, envs: Sequence[dict[str, str]], cwd: str
    ) -> list[tuple[int, subprocess.Popen[bytes] | None] | OSError]:
        """Start a worker of ``queue`` per environment, all at once when the
        fork server can: for each, its pid and its Popen when it was exec'd
        by us, or why it could not start."""
        argv, label = queue.argv, queue.label
        if self.zygote is not None and zygote.eligible(argv, queue.env):
            try:
                pids = self.zygote.spawn_many([(argv, env) for env in envs], cwd)
                failed = OSError("fork failed in the fork server")
                return [(pids[i], None) if i < len(pids) else failed for i in range(len(envs))]
            except zygote.ZygoteError as exc:
                self.events.warning("zygote", "⚠️", f"Fork server failed for {label} ({exc})")
                self.restart_zygote()
        if self.log.format is LogFormat.JSON and zygote.is_script(argv):
            argv = tuple(zygote.exec_argv(argv))  # its tracebacks at import are JSON too
        started: list[tuple[int, subprocess.Popen[bytes] | None] | OSError] = []
        for env in envs:
            try:
                popen = procs.start_process(argv, env, cwd=cwd)
            except OSError as exc:
                started.append(exc)
            else:
                started.append((popen.pid, popen))
        return started

    def restart_zygote(self) -> None:
        if self.zygote is not None:
            self.zygote.close()
        self.zygote = zygote.Zygote(self.preload, self.redis_url, self.log)
        try:
            self.zygote.start()
        except (zygote.ZygoteError, OSError) as exc:
            self.events.warning(
                "zygote", "⚠️", f"No fork server ({exc}): workers start with exec (slower)"
            )
            self.zygote.close()
            self.zygote = None

    def check_zygote(self) -> None:
        if self.zygote is not None and not self.zygote.alive():
            self.events.warning("zygote", "⚠️", "Fork server died; restarting it")
            self.restart_zygote()

    def reap_strays(self, workers: Collection[int]) -> None:
        """Reap children that have exited, and kill those that are neither
        workers, nor the fork server, nor its standby.

        Run after SIGCHLD: an orphan is re-parented to us when its worker
        exits, which is also when we get SIGCHLD for the worker.
        """
        if not self.subreaper:
            return
        known = set(workers) | self.not_ours | {self.zygote.pid if self.zygote else None}
        children = procs.existing([p for p in procs.children(os.getpid()) if p not in workers])
        strays = []
        for child in children:
            try:
                zombie = child.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                continue
            if zombie:  # a standby that died, an orphan that exited
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child.pid, os.WNOHANG)
            elif child.pid not in known:
                strays.append(child)
        if strays and self.zygote is not None:  # asked only now: rarely needed
            standbys = self.zygote.standbys()
            strays = [c for c in strays if c.pid not in standbys]
        for child in strays:
            procs.signal_tree([child], signal.SIGKILL)  # its SIGCHLD brings us back
            self.events.warning(
                "stray",
                "🧹",
                f"Killed stray process {child.pid} (left behind by a worker)",
                pid=child.pid,
            )

    def close(self) -> None:
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None
