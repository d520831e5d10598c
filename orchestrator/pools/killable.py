"""``KillablePool``: runs a batch of tasks on the fleet, policing each one.

The parent's loop: reconcile the fleet with the plan (``decisions``), give
tasks out, wait on the workers' sockets, the launcher's and a wake-up pipe
(``abort``), and police the running tasks: deadlines, memory caps, stalls.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import selectors
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable
from itertools import count
from typing import Any

from orchestrator.pools.decisions import dispatch_depth, linger_time, plan_workers
from orchestrator.pools.dispatch import dispatch, requeue, revoke_queued
from orchestrator.pools.poolfleet import Fleet
from orchestrator.pools.pooltypes import (
    Outcome,
    OutcomeKind,
    PoolAborted,
    PoolError,
    PoolSettings,
    Task,
)
from orchestrator.pools.probes import probe_stall, rss_over
from orchestrator.pools.records import Assigned, PoolRun, PoolWorker, WorkerState
from orchestrator.procs import ExitStatus

__all__ = ["MAX_START_FAILURES", "KillablePool"]

MAX_START_FAILURES = 3
"""Workers dying before they are ready this many times in a row is fatal."""


class KillablePool:
    """N long-lived workers; per-task timeouts, memory caps, crash isolation.

    ``run(tasks, context)`` yields one ``Outcome`` per task, in completion
    order; ``context`` (pickled once, sent once to each worker) and each
    task's payload are passed to ``target(context, payload)``. Processes
    start at the first ``start()`` or ``run()``; ``close()`` (or leaving the
    ``with`` block) ends them all. A closed pool cannot be restarted.
    """

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self._selector = selectors.DefaultSelector()
        self._fleet = Fleet(settings, self._selector)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_lock = threading.Lock()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._aborted = False
        self._closed = False
        self._batch: PoolRun | None = None
        self._seqs = count()
        self._batch_ids = count()
        self._start_failures = 0
        self._task_s: float | None = None  # moving average of task durations

    def __enter__(self) -> KillablePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- public

    @property
    def started(self) -> bool:
        return self._fleet.launcher is not None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def aborted(self) -> bool:
        return self._aborted

    def pids(self) -> list[int]:
        """The launcher's pid and those of the live workers (for tests and logs)."""
        return self._fleet.pids()

    def start(self) -> None:
        """Start the launcher and ``size`` workers (no-op when running)."""
        if self._closed:
            raise PoolError("the pool is closed")
        if self.started:
            return
        try:
            self._fleet.start(self._wake_r)
        except PoolAborted:
            self.close()
            raise
        self._reconcile()

    def abort(self) -> None:
        """From any thread: stop the running batch, kill every process."""
        self._aborted = True
        with self._wake_lock:
            if self._wake_w >= 0:
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"!")

    def run(self, tasks: Iterable[Task], context: object = None) -> Generator[Outcome]:
        """Run ``tasks``; yield each outcome as it is known (closing the
        generator, as a ``break`` out of a loop over it does, stops the run)."""
        self._check_abort()
        self.start()
        items = deque(Assigned(next(self._seqs), task) for task in tasks)
        blob = pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL)
        batch = PoolRun(next(self._batch_ids), blob, items, len(items))
        self._batch = batch
        try:
            while batch.unfinished:
                self._check_abort()
                self._reconcile()
                self._wait(self._police(time.monotonic()))
                while batch.outcomes:
                    yield batch.outcomes.popleft()
        finally:
            self._batch = None
            if not self._closed:
                self._end_batch()

    def close(self) -> None:
        """Kill and reap every process of the pool; idempotent."""
        self._closed = True
        self._fleet.close()
        with self._wake_lock:
            if self._wake_w >= 0:
                self._selector.close()
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1

    # ---- waiting and events

    def _check_abort(self) -> None:
        if self._aborted:
            self.close()
            raise PoolAborted("the pool was aborted")

    def _wait(self, wake_at: float | None) -> None:
        launcher = self._fleet.launcher
        timeout = None if wake_at is None else max(0.0, wake_at - time.monotonic())
        if launcher is not None and launcher.has_exits:
            timeout = 0.0
        linger = self._linger_s()
        if linger and timeout != 0.0 and launcher is not None:
            # Results may wait a moment (up to the next deadline: lingering
            # less would only mean waking at once for results already in);
            # an abort or a death may not.
            pause = linger if timeout is None else min(linger, timeout)
            select.select([self._wake_r, launcher.fileno()], [], [], pause)
            timeout = None if timeout is None else timeout - pause
        for key, _ in self._selector.select(timeout):
            if isinstance(key.data, PoolWorker):
                self._on_readable(key.data)
            elif key.fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
            else:
                self._on_launcher()
        if self._fleet.launcher is not None and self._fleet.launcher.has_exits:
            self._on_launcher()

    def _linger_s(self) -> float:
        if self._batch is None or not self._batch.pending:
            return 0.0
        busy = [w for w in self._fleet.live() if w.inflight and not w.stalled]
        return linger_time(self._task_s, [len(w.inflight) - 1 for w in busy])

    def _on_launcher(self) -> None:
        exits = self._fleet.exits()
        if exits is None:
            for worker in self._fleet.relaunch(self._wake_r):
                requeue(worker, self._batch)
            return
        for worker, status in exits:
            self._on_death(worker, status)

    def _on_readable(self, worker: PoolWorker, *, drain: bool = False) -> None:
        for message in worker.channel.receive_ready(drain=drain):
            self._on_message(worker, message)
        if worker.channel.eof and worker.state is not WorkerState.DYING:
            self._fleet.forget(worker)
            worker.state = WorkerState.EXITED

    def _on_message(self, worker: PoolWorker, message: tuple[Any, ...]) -> None:
        if message[0] == "ready":
            worker.state, worker.ready = WorkerState.READY, True
            self._start_failures = 0
            return
        if message[0] == "garbled":
            if worker.inflight:
                head = worker.inflight.popleft()
                self._finish(head, OutcomeKind.ERROR, error=f"result unreadable: {message[1]}")
                worker.new_head()
            return
        _, seq, ok, value, finished_s, elapsed_s = message
        item = self._answered(worker, seq, finished_s)
        if item is not None:
            kind = OutcomeKind.OK if ok else OutcomeKind.ERROR
            self._finish(item, kind, value if ok else None, None if ok else value, elapsed_s)
        self._task_s = elapsed_s if self._task_s is None else 0.8 * self._task_s + 0.2 * elapsed_s

    def _answered(self, worker: PoolWorker, seq: int, finished_s: float) -> Assigned | None:
        """The task a result is for: the one the worker was running, or one
        taken back from it that it ran anyway (see ``revoke_queued``); None for a
        second run of a task whose outcome is already out."""
        if worker.inflight and worker.inflight[0].seq == seq:
            item = worker.inflight.popleft()
            worker.new_head()
            if worker.inflight:
                nxt = worker.inflight[0]
                nxt.started_s = max(finished_s, nxt.sent_s)
            return item
        taken_back = worker.stolen.pop(seq, None)
        if taken_back is not None:
            return taken_back
        if self._batch is not None and seq in self._batch.done_seqs:
            return None
        raise PoolError(f"worker {worker.pid} answered task {seq}, which it does not hold")

    def _on_death(self, worker: PoolWorker, status: ExitStatus) -> None:
        if worker.state is not WorkerState.EXITED:
            self._on_readable(worker, drain=True)  # results it sent before dying come first
            self._fleet.forget(worker)
        if not worker.ready:
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                raise PoolError(f"workers die while starting ({status.describe()}); see stderr")
        if worker.inflight:
            culprit = worker.inflight.popleft()
            error = f"worker died: {status.describe()}"
            self._finish(culprit, OutcomeKind.DIED, error=error, elapsed_s=self._age(culprit))
        requeue(worker, self._batch)

    # ---- policing running tasks

    def _police(self, now: float) -> float | None:
        """Enforce deadlines and caps; return when to look again."""
        wake: list[float] = []
        for worker in list(self._fleet.workers.values()):
            if worker.state is WorkerState.STARTING:
                limit = worker.spawned_s + self.settings.start_timeout_s
                if now >= limit:
                    self._kill(worker, OutcomeKind.DIED, "worker did not start in time")
                else:
                    wake.append(limit)
            elif worker.state is WorkerState.READY and worker.inflight:
                wake.extend(self._police_task(worker, now))
        return min(wake, default=None)

    def _police_task(self, worker: PoolWorker, now: float) -> list[float]:
        head = worker.inflight[0]
        timeout_s, limit_mb = head.task.timeout_s, head.task.memory_limit_mb
        wake = []
        if timeout_s is not None:
            if now >= head.started_s + timeout_s:
                self._kill(worker, OutcomeKind.TIMEOUT, f"timed out after {timeout_s:g}s")
                return []
            wake.append(head.started_s + timeout_s)
        if limit_mb is not None:
            if not self._police_memory(worker, limit_mb, now):
                return []
            wake.append(worker.next_sample_s)
        if self.settings.stall_after_s is not None:
            wake.append(probe_stall(worker, head.started_s, now, self.settings.stall_after_s / 2))
            if worker.stalled and len(worker.inflight) > 1:
                revoke_queued(worker, self._batch)
        return wake

    def _police_memory(self, worker: PoolWorker, limit_mb: float, now: float) -> bool:
        """Sample the worker tree's RSS when due, or nearly (within a quarter
        period: samples then fall on the wake-ups results cause, rather than
        causing their own); kill it if over ``limit_mb``. False if killed."""
        interval_s = self.settings.sample_interval_s
        if now < worker.next_sample_s - interval_s / 4:
            return True
        error = rss_over(worker, limit_mb)
        if error is not None:
            self._kill(worker, OutcomeKind.MEMORY, error)
            return False
        worker.next_sample_s = now + interval_s
        return True

    # ---- acting on workers

    def _reconcile(self) -> None:
        batch = self._batch
        live = self._fleet.live()
        idle = [w for w in live if not w.inflight]  # starting ones too: they are the newest
        plan = plan_workers(
            size=self.settings.size,
            max_spare=self.settings.spare,
            standby=self.settings.standby,
            live=len(live),
            stalled=sum(w.stalled for w in live),
            idle=len(idle),
            has_pending=batch is not None and bool(batch.pending),
        )
        for worker in sorted(idle, key=lambda w: -w.spawned_s)[: plan.retire]:
            self._fleet.retire(worker)  # the newest go first: the others are warm
        for _ in range(plan.start):
            if not self._fleet.spawn():
                self._on_launcher()  # lost: relaunch (raises if it keeps dying)...
                self._reconcile()  # ...and start over with the new one
                return
        if batch is not None and batch.pending:
            depth = dispatch_depth(self._task_s, self.settings.prefetch)
            dispatch(batch, live, plan.slots, depth, time.monotonic(), self._fleet.forget)

    def _kill(self, worker: PoolWorker, kind: OutcomeKind, error: str) -> None:
        """Fail the task it runs, requeue the rest, SIGKILL its tree."""
        if worker.inflight and worker.state is WorkerState.READY:
            culprit = worker.inflight.popleft()
            self._finish(culprit, kind, error=error, elapsed_s=self._age(culprit))
        requeue(worker, self._batch)
        self._fleet.terminate(worker)

    def _end_batch(self) -> None:
        """After a batch ends early: kill workers still busy with it."""
        for worker in list(self._fleet.workers.values()):
            worker.stolen.clear()
            if worker.inflight:
                worker.inflight.clear()
                self._fleet.terminate(worker)
        with contextlib.suppress(PoolError):
            self._reconcile()

    def _finish(
        self,
        item: Assigned,
        kind: OutcomeKind,
        value: object = None,
        error: str | None = None,
        elapsed_s: float = 0.0,
    ) -> None:
        if self._batch is not None:
            self._batch.finish(item, kind, value, error, elapsed_s)

    @staticmethod
    def _age(item: Assigned) -> float:
        return max(0.0, time.monotonic() - item.started_s) if item.started_s else 0.0
