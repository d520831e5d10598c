"""The spawner's workers as processes: started, stopped, noticed when gone.

``Workforce`` owns what a worker is on this host: its process (forked warm
by the fork server or exec'd, see ``launcher``), its record (``fleet``),
its lease in Redis (``leases``), its global slot (``slots``) and its place
in the guard's list (``guard``). It adopts the previous spawner's workers,
starts the workers the spawner planned, stops them (SIGTERM, then SIGKILL
of the whole tree after ``stop_grace``; a yield only asks), enforces
``max_runtime``, and reports each exit once, after reaping it and killing
what it left behind. What an exit means for the queue (recovery, the
crash-loop rule) is the spawner's to decide (``staffing``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import redis

from orchestrator import keys, procs
from orchestrator.config import RQ_WORKER_ARGV, Backend, Config, QueueConfig
from orchestrator.fleet import StopReason, Worker, WorkerFleet
from orchestrator.guard import Guard
from orchestrator.launcher import WorkerLauncher
from orchestrator.leases import Lease, LeaseBook, left_behind, process_create_time
from orchestrator.messages import SpawnerLog, yield_for_cap
from orchestrator.procs import ExitStatus
from orchestrator.slots import GlobalSlots
from orchestrator.worker.workerenv import CONSUMER, REDIS_URL, worker_env

YIELD_SIGNAL = signal.SIGUSR1  # the runtime's "finish the job in hand, then exit"


@dataclass(frozen=True, slots=True)
class Planned:
    """A worker to start: its id, consumer name and the parked entries handed to it."""

    worker_id: str
    consumer: str
    handed: int = 0


@dataclass(frozen=True, slots=True)
class Exit:
    worker: Worker
    status: ExitStatus
    runtime_s: float


class Workforce:
    def __init__(self, client: redis.Redis, host: str, log: SpawnerLog, subreaper: bool) -> None:
        self.client = client  # the spawner's: workers' heartbeats are read with it
        self.fleet = WorkerFleet()
        self.leases = LeaseBook(client, host)
        self.slots = GlobalSlots(client, host)
        self.log = log
        self.launcher = WorkerLauncher(log.events, subreaper)
        self.guard = Guard((CONSUMER, REDIS_URL)) if subreaper else None  # ``orchestrator run``'s
        self.stop_grace_s = 10.0
        self.redis_url = ""  # the workers' ORCH_REDIS_URL, part of their tag
        self.strays_due = False  # a SIGCHLD came: orphans may have been re-parented to us
        self.adopted = False  # the previous spawner's leases are read (retried until Redis answers)

    def open(self, config: Config) -> None:
        spawner = config.spawner
        self.launcher.open(spawner.fork_server, spawner.preload, config.redis_url, config.log)
        if self.guard is not None:
            self.guard.start()

    def close(self) -> None:
        for w in self.fleet:  # only if the spawner is left by an exception
            w.terminate(StopReason.SHUTDOWN, 0.0)
            w.kill_tree()
        self.launcher.close()
        if self.guard is not None:
            self.guard.close()

    # -- starting -------------------------------------------------------------

    def start(
        self, config: Config, q: QueueConfig, planned: Sequence[Planned], drain: bool = False
    ) -> tuple[list[Worker], int]:
        """Start the planned workers of ``q`` at once (their global slots
        taken); they, and how many failed (their slots freed). ``drain``: they
        work off what they are handed, nothing new."""
        now_wall = time.time()
        deadline = now_wall + q.max_runtime_s
        envs = [worker_env(config, q, p.worker_id, p.consumer, deadline, drain) for p in planned]
        launched = self.launcher.launch(q, envs, str(config.root))
        workers, failed = [], 0
        for plan, outcome in zip(planned, launched, strict=True):
            if isinstance(outcome, OSError):
                self.log.spawn_failed(q, outcome)
                failed += 1
                continue
            pid, popen = outcome
            create_time = process_create_time(pid, now_wall)
            lease = Lease(
                plan.worker_id, q.name, plan.consumer, pid, now_wall, deadline, create_time
            )
            workers.append(self._register(q, lease, popen, plan.handed))
        if failed:
            up = {w.lease.consumer for w in workers}
            self.slots.release(q, [p.consumer for p in planned if p.consumer not in up])
        return workers, failed

    def _register(
        self, q: QueueConfig, lease: Lease, popen: subprocess.Popen[bytes] | None, handed: int
    ) -> Worker:
        worker = Worker(lease=lease, popen=popen, started_mono=time.monotonic(), handed=handed)
        self.fleet.add(worker)
        self._guard(worker)
        self.leases.record(lease)
        self.log.spawned(worker, q, self.fleet.count(q.name))
        return worker

    def adopt(self, lease: Lease, q: QueueConfig) -> Worker:
        """A worker of the previous spawner, still running: ours now (not our child)."""
        started = time.monotonic() - (time.time() - lease.started_at)
        worker = Worker(lease=lease, popen=None, started_mono=started, child=False)
        self.fleet.add(worker)
        self._guard(worker)
        self.log.adopted(worker, q)
        return worker

    def adopt_previous(
        self,
        queues: Mapping[str, QueueConfig],
        host: str,
        recover: Callable[[QueueConfig, str, str], object],
        held: Iterable[QueueConfig],
    ) -> None:
        """Once (until it got through): the previous spawner's workers still
        running are adopted, the work of the others goes to ``recover``, and
        what previous workers left behind is killed. The global slots of the
        ``held`` queues are then those of the adopted workers (the others'
        are freed)."""
        if self.adopted:
            return
        self._adopt_leases(queues, recover)
        self.kill_left_behind(host)
        for q in held:  # they run: they hold their slots
            self.slots.adopt(q, [w.lease.consumer for w in self.fleet.of_queue(q.name)])
        self.adopted = True

    def _adopt_leases(
        self, queues: Mapping[str, QueueConfig], recover: Callable[[QueueConfig, str, str], object]
    ) -> None:
        for lease in self.leases.read():
            if lease.worker_id in self.fleet.workers:  # adopted by an attempt cut short
                continue
            q = queues.get(lease.queue)
            if q is not None and lease.process_alive():
                self.adopt(lease, q)
                continue
            if q is not None:
                recover(q, lease.consumer, "worker lost: spawner restarted")
            self.leases.drop(lease.worker_id)

    def kill_left_behind(self, host: str) -> None:
        """Kill what previous workers of ``host`` left (see ``leases.left_behind``)."""
        left = left_behind(host, self.redis_url, self.fleet.consumers())
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            self.log.left_behind(host, left)

    def _guard(self, worker: Worker) -> None:
        if self.guard is not None:
            lease = worker.lease
            grace_s = self.stop_grace_s
            self.guard.watch(lease.pid, lease.deadline, grace_s, self.redis_url, lease.consumer)

    # -- stopping -------------------------------------------------------------

    def terminate(self, worker: Worker, reason: StopReason, q: QueueConfig) -> bool:
        """SIGTERM, and SIGKILL of the tree after ``stop_grace``; logged unless shutting down."""
        if not worker.terminate(reason, self.stop_grace_s):
            return False
        if reason is not StopReason.SHUTDOWN:
            self.log.terminating(worker, q, reason)
        return True

    def ask_to_yield(
        self, worker: Worker, q: QueueConfig, why: str, signum: int = YIELD_SIGNAL
    ) -> bool:
        """Ask the worker to give its slot up after its job (SIGUSR1, or the
        protocol's SIGTERM for a worker that does not say it yields; no kill
        follows, ``max_runtime`` still holds)."""
        if not worker.terminate(StopReason.YIELD, 0.0, signum):
            return False
        self.log.yielding(worker, q, why)
        return True

    def yield_slots(
        self,
        q: QueueConfig,
        workers: list[Worker],
        holds: Callable[[Worker], int],
        count: int,
        max_total: int,
    ) -> None:
        """The host cap binds and another queue waits: ask ``count`` of
        ``workers`` to give their slots up after the job in hand, idle ones
        (``holds`` nothing) first, then the longest running."""
        candidates = [w for w in workers if w.stop_reason is None]
        candidates.sort(key=lambda w: (holds(w) > 0, w.started_mono))
        for worker in self.yieldable(q, candidates)[:count]:
            self.ask_to_yield(worker, q, yield_for_cap(max_total))

    def ask_all_to_yield(self, workers: list[Worker], q: QueueConfig, why: str) -> None:
        """Every one of ``workers``, each with the signal it understands."""
        staying = [w for w in workers if w.stop_reason is None]
        able = {w.pid for w in self.yieldable(q, staying)}
        for w in staying:
            self.ask_to_yield(w, q, why, YIELD_SIGNAL if w.pid in able else signal.SIGTERM)

    def yieldable(self, q: QueueConfig, workers: list[Worker]) -> list[Worker]:
        """Those of ``workers`` that say they give their slot up on SIGUSR1:
        the runtime's (in their heartbeat), and RQ's default worker."""
        if q.backend is Backend.RQ:
            return workers if q.argv == RQ_WORKER_ARGV else []
        beats = self.client.mget([keys.worker_heartbeat(w.lease.consumer) for w in workers])
        return [w for w, b in zip(workers, beats, strict=True) if b and json.loads(b).get("yields")]

    def hurry(self) -> None:
        """A second stop request: no more grace for anyone."""
        for w in self.fleet:
            w.kill_at = time.monotonic()

    # -- noticing -------------------------------------------------------------

    def check(self, now: float, queue_of: Callable[[str], QueueConfig]) -> list[Exit]:
        """Reap exits (each reported once) and enforce ``max_runtime`` and
        kill deadlines; the rest of the housekeeping waits for ``tidy``,
        after the exits are handled (their work goes on first)."""
        wall = time.time()
        exits = []
        for w in self.fleet:
            status = w.poll()
            if status is not None:
                exits.append(self._gone(w, status, now, queue_of(w.queue)))
                continue
            if w.stop_reason in (None, StopReason.YIELD) and wall >= w.lease.deadline:
                self.terminate(w, StopReason.MAX_RUNTIME, queue_of(w.queue))
            if w.kill_at is not None:
                w.remember_tree()
                if now >= w.kill_at:
                    w.kill_tree()
        return exits

    def tidy(self) -> None:
        """Kill strays (after a SIGCHLD); keep the fork server and the guard alive."""
        if self.strays_due:
            self.strays_due = False
            keep = [w.pid for w in self.fleet]
            if self.guard is not None and self.guard.pid is not None:
                keep.append(self.guard.pid)
            self.launcher.reap_strays(keep)
        self.launcher.check_zygote()
        self._check_guard()

    def forget(self, worker: Worker, q: QueueConfig) -> None:
        """A gone worker's exit is handled: its lease and its slot go."""
        self.leases.drop(worker.worker_id)
        self.slots.release(q, [worker.lease.consumer])

    def _gone(self, worker: Worker, status: ExitStatus, now: float, q: QueueConfig) -> Exit:
        self.fleet.remove(worker.worker_id)
        if self.guard is not None:
            self.guard.forget(worker.pid)
        leftovers = worker.kill_leftovers()
        if not worker.child:  # adopted: its orphans went to init, not to us
            tag = worker.lease.consumer
            leftovers += len(procs.kill_tagged(tag, CONSUMER, also=(REDIS_URL, self.redis_url)))
        runtime = worker.runtime_s(now)
        self.log.exited(worker, status, q, runtime, leftovers, self.fleet.count(q.name))
        return Exit(worker, status, runtime)

    def _check_guard(self) -> None:
        """A guard that died is started again and told of every worker."""
        if self.guard is None or self.guard.alive():
            return
        self.log.guard_restarted()
        self.guard.close()
        self.guard.start()
        for w in self.fleet:
            self._guard(w)

    def due(self, now: float, poll_interval_s: float) -> list[float]:
        """When (monotonic) a worker needs a look without a signal."""
        wall = time.time()
        due = []
        for w in self.fleet:
            due.append(w.kill_at if w.kill_at is not None else now + (w.lease.deadline - wall))
            if not w.child:  # adopted: no SIGCHLD for it, so poll
                due.append(now + poll_interval_s)
        return due
