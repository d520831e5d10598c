"""The pool's processes as the parent sees them; knows nothing of tasks.

``Fleet`` holds the launcher and the workers, registers their sockets in
the pool's selector, spawns, retires and SIGKILLs workers (their whole
tree, and whatever carries its tag), collects their exit statuses,
restarts a launcher that died, and on close ends everything: workers,
their children, the launcher, and any process still tagged with the pool.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import signal
import time

import psutil

from orchestrator.pools.forker import Launcher, LauncherLost
from orchestrator.pools.pooltypes import POOL_TAG_VARIABLE, PoolError, PoolSettings
from orchestrator.pools.records import PoolWorker, WorkerState
from orchestrator.pools.wire import Channel
from orchestrator.procs import ExitStatus, kill_tagged, signal_tree, snapshot_tree

__all__ = ["MAX_LAUNCHER_RESTARTS", "Fleet"]

MAX_LAUNCHER_RESTARTS = 3
_FLEETS = itertools.count()


class Fleet:
    """The pool's processes as the parent sees them: the launcher, the
    workers, their sockets in the pool's selector. Knows nothing of tasks."""

    def __init__(self, settings: PoolSettings, selector: selectors.BaseSelector) -> None:
        self.settings = settings
        self.selector = selector
        self.launcher: Launcher | None = None
        self.workers: dict[int, PoolWorker] = {}
        self.restarts = 0
        self.tag = f"pool-{os.getpid()}-{next(_FLEETS)}/"  # see POOL_TAG_VARIABLE
        self.swept = True  # nothing tagged can be running: never started, or swept

    def live(self) -> list[PoolWorker]:
        return [w for w in self.workers.values() if w.live]

    def pids(self) -> list[int]:
        if self.launcher is None:
            return []
        return [self.launcher.pid, *(w.pid for w in self.live())]

    def start(self, wake_fd: int) -> None:
        self.swept = False
        self.launcher = Launcher.start(self.settings, wake_fd, self.tag)
        self.selector.register(self.launcher.fileno(), selectors.EVENT_READ, None)

    def spawn(self) -> bool:
        """One more worker; False when the launcher is gone."""
        assert self.launcher is not None
        try:
            pid, sock = self.launcher.spawn()
        except LauncherLost:
            return False
        worker = PoolWorker(pid, Channel(sock), psutil.Process(pid), time.monotonic())
        self.workers[pid] = worker
        self.selector.register(sock.fileno(), selectors.EVENT_READ, worker)
        return True

    def exits(self) -> list[tuple[PoolWorker, ExitStatus]] | None:
        """Workers reaped since the last call (None: the launcher is gone),
        once what their tasks left running is killed. Workers we killed or
        retired are dropped silently."""
        assert self.launcher is not None
        try:
            reaped = self.launcher.exits()
        except LauncherLost:
            return None
        exits = []
        for pid, status in reaped:
            worker = self.workers.pop(pid, None)
            if worker is not None and worker.state is not WorkerState.DYING:
                kill_tagged(self.worker_tag(worker), POOL_TAG_VARIABLE)  # its orphans went to init
                exits.append((worker, ExitStatus.from_wait_status(status)))
        return exits

    def worker_tag(self, worker: PoolWorker) -> str:
        """What the worker's processes carry in ``POOL_TAG_VARIABLE``."""
        return f"{self.tag}w{worker.pid}"

    def retire(self, worker: PoolWorker) -> None:
        with contextlib.suppress(OSError):
            worker.channel.send(("stop",))
        self.forget(worker)
        worker.state = WorkerState.DYING

    def terminate(self, worker: PoolWorker) -> None:
        """SIGKILL the worker's tree (snapshotted first, so children
        re-parented at its death are still found) and whatever carries its
        tag (a daemon of its task that left the tree); expect nothing more."""
        signal_tree(snapshot_tree(worker.pid), signal.SIGKILL)
        kill_tagged(self.worker_tag(worker), POOL_TAG_VARIABLE)
        self.forget(worker)
        worker.state = WorkerState.DYING

    def forget(self, worker: PoolWorker) -> None:
        if worker.channel.sock.fileno() >= 0:
            self.selector.unregister(worker.channel.fileno())
            worker.channel.close()
        if worker.rss is not None:
            worker.rss.close()
            worker.rss = None

    def relaunch(self, wake_fd: int) -> list[PoolWorker]:
        """The launcher died: its workers cannot be reaped any more. Kill
        them, start a new launcher; return them (their tasks go back)."""
        self.restarts += 1
        lost = list(self.workers.values())
        for worker in lost:
            self.terminate(worker)
        self.workers.clear()
        self._drop_launcher(0.0)
        if self.restarts > MAX_LAUNCHER_RESTARTS:
            raise PoolError("the pool's launcher keeps dying")
        self.start(wake_fd)
        return lost

    def close(self) -> None:
        """Everything ends: workers, their children, the launcher, the tagged."""
        tree = snapshot_tree(self.launcher.pid) if self.launcher is not None else []
        for worker in self.workers.values():
            self.forget(worker)
        self.workers.clear()
        self._drop_launcher(self.settings.close_grace_s)
        alive = [p for p in tree if p.is_running()]
        signal_tree(alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=self.settings.close_grace_s)
        if not self.swept:  # a scan of every process: once
            kill_tagged(self.tag, POOL_TAG_VARIABLE, prefix=True)  # escaped every tree
            self.swept = True

    def _drop_launcher(self, grace_s: float) -> None:
        launcher, self.launcher = self.launcher, None
        if launcher is not None:
            self.selector.unregister(launcher.fileno())
            launcher.close(grace_s)
