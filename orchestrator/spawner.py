"""The WorkerSpawner: keeps the right number of workers alive per queue.

A reconcile loop, as in circus: drop dead workers, start up to the target,
stop the overdue. It sleeps in one ``select`` on three things: the signal
pipe (SIGCHLD when a worker exits, SIGTERM/SIGINT to stop, SIGHUP to reload),
an outstanding ``XREAD`` on the streams that have room for more workers (so
a job on an idle system starts a worker within milliseconds), and a timer
(``poll_interval``, or sooner when a deadline is due).

A tick probes every queue in one Redis round trip, which also publishes the
host's heartbeat and status snapshot, then decides with the pure functions
of ``scaling`` and acts: park the entries of dead consumers, start workers,
hand parked entries to them. Worker exits are handled the moment SIGCHLD
arrives: reaped, logged, their pending entries parked for the next worker.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psutil
import redis
from loguru import logger

from orchestrator import keys, procs, scaling
from orchestrator.config import Backend, Config, ConfigError, QueueConfig, load_config
from orchestrator.connections import REDIS_ERRORS, RedisHealth, connect
from orchestrator.fleet import Fleet, Lease, StopReason, Worker
from orchestrator.logs import Events
from orchestrator.procs import ExitStatus
from orchestrator.queues import DepthProbe, QueueDepth, StreamWatch
from orchestrator.reaper import PARKING_CONSUMER, Liveness, Reaper, classify, split_shares
from orchestrator.status import HostStatus, QueueStatus, WorkerStatus, publish, status_line

SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
MIN_TICK_INTERVAL_S = 0.005
SWEEP_INTERVAL_S = 30.0


@dataclass
class QueueState:
    """What the spawner remembers about one queue between ticks."""

    config: QueueConfig
    exits: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    backoff: scaling.Backoff = field(default_factory=scaling.Backoff)
    depth: QueueDepth | None = None
    parked: int = 0
    stranded: bool = False  # a worker died holding work: refill without cooldown
    retired: bool = False  # removed from the config by a reload


class WorkerSpawner:
    """Spawner and reaper of one host. ``run()`` until SIGTERM/SIGINT."""

    def __init__(
        self,
        config: Config,
        client: redis.Redis | None = None,
        *,
        events: Events | None = None,
        subreaper: bool = False,
    ) -> None:
        self.config = config
        self.host = config.spawner.host
        self.client = client or connect(config.redis_url, name=f"orch-spawner:{self.host}")
        self.events = events or Events()
        self.subreaper = subreaper
        self.fleet = Fleet()
        self.queues: dict[str, QueueState] = {}
        self.reaper = Reaper(self.client)
        self.watch = StreamWatch(self.client)
        self.health = RedisHealth(self.events, config.redis_url)
        self.started_at = time.time()
        self.stopping = False
        self.deferred_recoveries: list[tuple[QueueConfig, str, str]] = []
        self.next_tick = 0.0
        self.next_status = 0.0
        self.next_sweep = 0.0
        self.memory_ok = True
        self.strays_due = False
        self._apply_config(config)

    # -- the seed's API ---------------------------------------------------

    def get_active_worker_count(self, queue: str) -> int:
        return self.fleet.count(queue)

    def can_spawn_worker(self, queue: str) -> bool:
        """Could one more worker of ``queue`` start right now?"""
        state = self.queues.get(queue)
        if state is None or state.retired or self.stopping or not self.memory_ok:
            return False
        if len(self.fleet) >= self.config.spawner.max_total_workers:
            return False
        facts = self._facts(state, time.monotonic(), backlog=state.config.max_concurrent)
        return scaling.wanted_new(facts) > 0

    def spawn_worker(self, queue: str, parked_share: int = 0) -> Worker | None:
        """Start one worker of ``queue`` if allowed; its lease is recorded."""
        if not self.can_spawn_worker(queue):
            return None
        return self._start(self.queues[queue].config, parked_share)

    def terminate_worker(
        self, queue: str, worker_id: str | None = None, reason: StopReason = StopReason.OPERATOR
    ) -> int:
        """SIGTERM one worker of ``queue`` (or all); SIGKILL follows after grace."""
        targets = [
            w for w in self.fleet.of_queue(queue) if worker_id is None or w.worker_id == worker_id
        ]
        return sum(1 for w in targets if self._terminate(w, reason))

    # -- lifecycle ----------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the process exit code (0)."""
        if self.subreaper:
            procs.set_subreaper()
        wakeup = procs.SignalWakeup(SIGNALS)
        wakeup.install()
        try:
            self._startup()
            while not (self.stopping and len(self.fleet) == 0):
                self._wait(wakeup)
                self._handle_signals(wakeup.drain())
                self.step()
        finally:
            wakeup.close()
            self._finish()
        return 0

    def step(self) -> None:
        """One pass of the loop: exits, deadlines, then a tick when due."""
        now = time.monotonic()
        self._check_workers(now)
        if self._watch_fired():
            self.next_tick = min(self.next_tick, now)
        if now >= self.next_tick and self.health.available(now):
            self.tick(now)
        if now >= self.next_status:
            self._log_status()
            self.next_status = now + self.config.spawner.status_interval_s

    def request_stop(self) -> None:
        """Graceful stop: no new workers; SIGTERM all; SIGKILL after grace."""
        if self.stopping:
            for w in self.fleet:  # a second request: no more grace
                w.kill_at = time.monotonic()
            return
        self.stopping = True
        self.events.info("stopping", "🛑", f"Stopping: terminating {len(self.fleet)} worker(s)")
        for w in self.fleet:
            self._terminate(w, StopReason.SHUTDOWN)

    def reload(self, path: str | os.PathLike[str] | None = None) -> bool:
        """Re-read the config; an invalid one is refused and the old kept."""
        source = path or self.config.path
        try:
            new = load_config(source)
        except ConfigError as exc:
            self.events.error(
                "reload_refused",
                "❌",
                f"Config reload refused, keeping the old one: {'; '.join(exc.problems)}",
            )
            return False
        if new.redis_url != self.config.redis_url:
            self.events.warning("reload", "⚠️", "redis.url changed: takes effect on restart")
            new = _with_redis_url(new, self.config.redis_url)
        self._apply_config(new)
        self.events.info("reload", "🔄", f"Config reloaded from {source}: {len(new.queues)} queues")
        return True

    # -- the loop's parts ---------------------------------------------------

    def _wait(self, wakeup: procs.SignalWakeup) -> None:
        now = time.monotonic()
        timeout = max(0.0, min(self._next_deadline(), self.next_tick, self.next_status) - now)
        if self.stopping:
            timeout = min(timeout, 0.05)
        fds: list[int] = [wakeup.fileno()]
        watch_fd = self.watch.fileno()
        if watch_fd is not None:
            fds.append(watch_fd)
        with contextlib.suppress(InterruptedError):
            select.select(fds, [], [], timeout)

    def _handle_signals(self, received: list[int]) -> None:
        for signum in received:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.request_stop()
            elif signum == signal.SIGHUP:
                self.reload()
            elif signum == signal.SIGCHLD:
                self.strays_due = True

    def tick(self, now: float) -> None:
        """Probe, decide, act. Redis errors are waited out, never raised."""
        self.next_tick = now + self.config.spawner.poll_interval_s
        try:
            self._retry_deferred_recoveries()
            depths, live_hosts = self._probe()
            self.health.succeeded(time.monotonic())
            self._reconcile(depths, live_hosts, now)
            if now >= self.next_sweep:
                self._sweep(live_hosts)
                self.next_sweep = now + SWEEP_INTERVAL_S
        except REDIS_ERRORS as exc:
            self.watch.reset()
            self.health.failed(time.monotonic(), exc)
            self.next_tick = max(self.next_tick, self.health.retry_at)

    def _probe(self) -> tuple[dict[str, QueueDepth], set[str]]:
        """The tick's one round trip: depths, live hosts, our heartbeat."""
        if self.probe.sha is None:
            self.probe.load(self.client)
        try:
            reply, hosts = self._probe_pipeline()
        except redis.exceptions.NoScriptError:  # Redis restarted: scripts are gone
            self.probe.load(self.client)
            reply, hosts = self._probe_pipeline()
        depths = self.probe.parse(reply) if self.probe.queues else {}
        for name, depth in depths.items():
            self.queues[name].depth = depth
        return depths, {h.decode() if isinstance(h, bytes) else str(h) for h in hosts}

    def _probe_pipeline(self) -> tuple[Any, list[Any]]:
        pipe = self.client.pipeline(transaction=False)
        self.probe.queue_on(pipe)
        pipe.zrangebyscore(keys.HOSTS, time.time(), "+inf")
        publish(pipe, self.snapshot(), self.config.spawner.heartbeat_ttl_s)
        reply, hosts, *_ = pipe.execute()
        return reply, hosts

    def _reconcile(self, depths: dict[str, QueueDepth], live_hosts: set[str], now: float) -> None:
        own_live = self.fleet.consumers()
        for name, depth in depths.items():
            state = self.queues[name]
            state.parked = depth.pending_by_consumer.get(PARKING_CONSUMER, 0)
            for consumer, n in depth.pending_by_consumer.items():
                if n and classify(consumer, self.host, own_live, live_hosts) is Liveness.DEAD:
                    state.parked += self._recover(state.config, consumer, "worker lost")
        self.memory_ok = self._memory_ok()
        self._enforce_worker_memory()
        if not self.stopping:
            self._spawn_planned(now)
        self._hand_out_to_idle()
        self._arm_watch(now)

    def _facts(
        self, state: QueueState, now: float, backlog: int | None = None
    ) -> scaling.QueueFacts:
        q = state.config
        workers = self.fleet.of_queue(q.name)
        depth = state.depth
        held = depth.pending_by_consumer if depth else {}
        if backlog is None:
            backlog = (depth.undelivered if depth else 0) + state.parked
        cooling = 0 if state.stranded else scaling.cooling_slots(state.exits, now, q.cooldown_s)
        return scaling.QueueFacts(
            name=q.name,
            max_concurrent=q.max_concurrent,
            jobs_per_worker=q.jobs_per_worker,
            live=len(workers),
            idle_live=scaling.split_idle(held, [w.lease.consumer for w in workers]),
            backlog=backlog,
            cooling=cooling,
            blocked=state.retired or state.backoff.until > now,
        )

    def _spawn_planned(self, now: float) -> None:
        facts = [self._facts(s, now) for s in self.queues.values() if not s.retired]
        plan = scaling.plan_spawns(
            facts, len(self.fleet), self.config.spawner.max_total_workers, self.memory_ok
        )
        for name, count in plan.items():
            state = self.queues[name]
            # Parked entries are shared between the new workers and the idle
            # live ones (those get theirs in _hand_out_to_idle).
            idle = [w for w in self.fleet.of_queue(name) if self._holds(state, w) == 0]
            slots = [f"new{i}" for i in range(count)] + [w.worker_id for w in idle]
            shares = split_shares(state.parked, slots)
            for i in range(count):
                self._start(state.config, shares.get(f"new{i}", 0))
            state.stranded = False

    def _holds(self, state: QueueState, worker: Worker) -> int:
        depth = state.depth
        return depth.pending_by_consumer.get(worker.lease.consumer, 0) if depth else 0

    def _hand_out_to_idle(self) -> None:
        """Parked entries left over go to live workers that hold nothing."""
        for state in self.queues.values():
            if state.parked <= 0 or state.config.backend is not Backend.STREAM:
                continue
            idle = [w for w in self.fleet.of_queue(state.config.name) if self._holds(state, w) == 0]
            idle = [w for w in idle if w.stop_reason is None]
            if not idle:
                continue
            shares = split_shares(state.parked, [w.lease.consumer for w in idle])
            given = self.reaper.hand_out(state.config, shares)
            state.parked -= sum(given.values())
            self._wake(list(given))

    def _wake(self, consumers: list[str]) -> None:
        """Cut a worker's blocking read short so it sees its new entries."""
        if not consumers:
            return
        beats = self.client.mget([keys.worker_heartbeat(c) for c in consumers])
        for raw in beats:
            client_id = _client_id(raw)
            if client_id is not None:
                self.client.client_unblock(client_id)

    def _arm_watch(self, now: float) -> None:
        positions: dict[str, str] = {}
        for state in self.queues.values():
            q, depth = state.config, state.depth
            if q.backend is not Backend.STREAM or depth is None or self.stopping:
                continue
            if scaling.wanted_new(self._facts(state, now, backlog=q.max_concurrent)) > 0:
                positions[q.stream] = depth.last_id
        self.watch.arm(positions)

    def _watch_fired(self) -> bool:
        """Did a watched stream get an entry? (Redis errors: not now.)"""
        try:
            if not self.watch.ready():
                return False
            self.watch.collect()
            return True
        except REDIS_ERRORS as exc:
            self.watch.reset()
            self.health.failed(time.monotonic(), exc)
            return False

    # -- starting and stopping workers --------------------------------------

    def _start(self, queue: QueueConfig, parked_share: int = 0) -> Worker | None:
        now_wall = time.time()
        worker_id = self.fleet.new_worker_id(queue.label.lower(), now_wall)
        consumer = keys.consumer_name(self.host, worker_id)
        if parked_share and queue.backend is Backend.STREAM:
            given = self.reaper.hand_out(queue, {consumer: parked_share}).get(consumer, 0)
            self.queues[queue.name].parked -= given
        deadline = now_wall + queue.max_runtime_s
        env = self._worker_env(queue, worker_id, consumer, deadline)
        try:
            popen = procs.start_process(queue.argv, env, cwd=str(self.config.root))
        except OSError as exc:
            self.events.error("spawn_failed", "❌", f"Cannot start worker for {queue.label}: {exc}")
            self._record_exit(queue, 0.0, failed=True)
            return None
        lease = Lease(
            worker_id,
            queue.name,
            consumer,
            popen.pid,
            now_wall,
            deadline,
            _create_time(popen.pid, now_wall),
        )
        worker = Worker(lease=lease, popen=popen, started_mono=time.monotonic())
        self.fleet.add(worker)
        self.client.hset(keys.leases(self.host), worker_id, lease.to_json())
        self.events.info(
            "spawn",
            "🚀",
            f"Spawned worker {worker_id} for {queue.label} "
            f"(PID: {popen.pid}, Total: {self.fleet.count(queue.name)})",
            queue=queue.name,
            worker_id=worker_id,
            pid=popen.pid,
            parked=parked_share,
        )
        return worker

    def _worker_env(
        self, queue: QueueConfig, worker_id: str, consumer: str, deadline: float
    ) -> dict[str, str]:
        then = self.config.queues.get(queue.then) if queue.then else None
        env = dict(os.environ)
        env.update(queue.env)
        env.update(
            {
                "ORCH_QUEUE": queue.name,
                "ORCH_WORKER_ID": worker_id,
                "ORCH_REDIS_URL": self.config.redis_url,
                "ORCH_STREAM": queue.stream,
                "ORCH_GROUP": queue.group,
                "ORCH_CONSUMER": consumer,
                "ORCH_DEADLINE": f"{deadline:.3f}",
                "ORCH_IDLE_TIMEOUT": f"{queue.idle_timeout_s:g}",
                "ORCH_MAX_ATTEMPTS": str(queue.max_attempts),
                "ORCH_THEN": then.stream if then else "",
                "ORCH_BATCH_SIZE": str(queue.batch_size),
                "ORCH_HOST": self.host,
                "ORCH_SPAWNER_PID": str(os.getpid()),
                "ORCH_CONFIG": str(self.config.path or ""),
                "ORCH_RQ_SERIALIZER": queue.serializer,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _terminate(self, worker: Worker, reason: StopReason) -> bool:
        if not worker.terminate(reason, self.config.spawner.stop_grace_s):
            return False
        if reason is not StopReason.SHUTDOWN:
            q = self._queue_config(worker.queue)
            why = self._stop_text(worker, reason, q)
            self.events.warning(
                "terminate",
                "⏰" if reason is StopReason.MAX_RUNTIME else "🧠",
                f"Terminating worker {worker.worker_id} for {q.label}: {why} (PID: {worker.pid})",
                queue=worker.queue,
                worker_id=worker.worker_id,
                pid=worker.pid,
                reason=reason.value,
            )
        return True

    def _stop_text(self, worker: Worker, reason: StopReason, q: QueueConfig) -> str:
        if reason is StopReason.MAX_RUNTIME:
            return f"max_runtime {q.max_runtime_s:g}s exceeded"
        if reason is StopReason.MEMORY:
            rss_mb = procs.tree_rss_bytes(worker.pid) / 2**20
            return f"memory {rss_mb:.0f} MB > max_memory_mb {q.max_memory_mb}"
        return reason.value

    def _check_workers(self, now: float) -> None:
        """Reap exits, enforce max_runtime, memory caps and kill deadlines."""
        wall = time.time()
        for w in self.fleet:
            status = w.poll()
            if status is not None:
                self._on_exit(w, status, now)
                continue
            if w.stop_reason is None and wall >= w.lease.deadline:
                self._terminate(w, StopReason.MAX_RUNTIME)
            if w.kill_at is not None:
                w.remember_tree()
                if now >= w.kill_at:
                    w.kill_tree()
        if self.subreaper and self.strays_due:
            self._reap_strays()

    def _enforce_worker_memory(self) -> None:
        for w in self.fleet:
            cap_mb = self._queue_config(w.queue).max_memory_mb
            if cap_mb and w.stop_reason is None and procs.tree_rss_bytes(w.pid) > cap_mb * 2**20:
                self._terminate(w, StopReason.MEMORY)

    def _on_exit(self, worker: Worker, status: ExitStatus, now: float) -> None:
        self.fleet.remove(worker.worker_id)
        q = self._queue_config(worker.queue)
        runtime = worker.runtime_s(now)
        leftovers = worker.kill_leftovers()
        self._log_exit(worker, status, q, runtime, leftovers)
        requested = worker.stop_reason is not None
        self._record_exit(q, runtime, failed=not status.ok and not requested, now=now)
        reason = self._death_reason(worker, status, q)
        stranded = self._recover(q, worker.lease.consumer, reason)
        if stranded and q.name in self.queues:
            self.queues[q.name].stranded = True
        self._drop_lease(worker.worker_id)
        self.next_tick = min(self.next_tick, now)

    def _death_reason(self, worker: Worker, status: ExitStatus, q: QueueConfig) -> str:
        if worker.stop_reason in (StopReason.MAX_RUNTIME, StopReason.MEMORY):
            return f"worker stopped: {self._stop_text(worker, worker.stop_reason, q)}"
        if status.signal is not None:
            return f"worker died: signal {status.signal}"
        if status.code is None:
            return "worker lost"
        return f"worker exited: code {status.code}"

    def _log_exit(
        self, worker: Worker, status: ExitStatus, q: QueueConfig, runtime: float, leftovers: int
    ) -> None:
        total = self.fleet.count(q.name)
        how = (
            f"killed by {status.describe()}"
            if status.signal is not None
            else "gone"
            if status.code is None
            else f"exited with {status.describe()}"
        )
        why = f", stopped for {worker.stop_reason.value}" if worker.stop_reason else ""
        extra = f", killed {leftovers} leftover process(es)" if leftovers else ""
        ok = status.ok or worker.stop_reason is StopReason.SHUTDOWN
        self.events.info(
            "exit",
            "🏁" if ok else "💀",
            f"Worker {worker.worker_id} for {q.label} {how} after {runtime:.1f}s{why}{extra} "
            f"(Total: {total})",
            queue=q.name,
            worker_id=worker.worker_id,
            pid=worker.pid,
            code=status.code,
            signal=status.signal,
            runtime_s=round(runtime, 3),
        )

    def _record_exit(
        self, q: QueueConfig, runtime: float, failed: bool, now: float | None = None
    ) -> None:
        state = self.queues.get(q.name)
        if state is None:
            return
        now = time.monotonic() if now is None else now
        state.exits.append(now)
        before = state.backoff
        state.backoff = before.after_exit(
            now,
            runtime,
            failed,
            self.config.spawner.crash_window_s,
            max_s=self.config.spawner.crash_backoff_max_s,
        )
        if state.backoff.streak >= 2:
            self.events.warning(
                "crash_loop",
                "🔁",
                f"{q.label} workers keep failing within {self.config.spawner.crash_window_s:g}s "
                f"of start ({state.backoff.streak} in a row): next spawn in "
                f"{state.backoff.delay_s(now):.0f}s",
                queue=q.name,
                streak=state.backoff.streak,
            )

    def _recover(self, q: QueueConfig, consumer: str, reason: str) -> int:
        """Give a gone worker's work back; deferred while Redis is down.

        Returns how many entries (jobs) it held that will run again.
        """
        try:
            if q.backend is Backend.RQ:
                return self._recover_rq(q, consumer, reason)
            return self._park(q, consumer, reason)
        except REDIS_ERRORS as exc:
            self.deferred_recoveries.append((q, consumer, reason))
            self.health.failed(time.monotonic(), exc)
            return 0

    def _park(self, q: QueueConfig, consumer: str, reason: str) -> int:
        result = self.reaper.park(q, consumer, reason)
        worker_id = keys.consumer_worker_id(consumer)
        if result.parked:
            self.events.info(
                "parked",
                "♻️",
                f"Recovered {_entries(result.parked)} of {worker_id} for {q.label}: "
                "they go to the next worker",
                queue=q.name,
                consumer=consumer,
                count=result.parked,
            )
        if result.dead_lettered:
            self.events.warning(
                "dead_letter",
                "☠️",
                f"Dead-lettered {_entries(result.dead_lettered)} of {q.label} to "
                f"{q.dead_stream} after {q.max_attempts} attempts: {reason}",
                queue=q.name,
                consumer=consumer,
                count=result.dead_lettered,
            )
        return result.parked

    def _recover_rq(self, q: QueueConfig, consumer: str, reason: str) -> int:
        from orchestrator.rq_backend import recover_worker

        result = recover_worker(self.client, q.name, consumer, reason, q.serializer)
        if result.requeued:
            self.events.info(
                "requeued",
                "♻️",
                f"Requeued {result.requeued} RQ job(s) of "
                f"{keys.consumer_worker_id(consumer)} for {q.label} ({reason})",
                queue=q.name,
                consumer=consumer,
                count=result.requeued,
            )
        if result.failed:
            self.events.warning(
                "dead_letter",
                "☠️",
                f"{result.failed} RQ job(s) of {q.label} failed after "
                f"{q.max_attempts} attempts: {reason}",
                queue=q.name,
                count=result.failed,
            )
        return result.requeued

    def _retry_deferred_recoveries(self) -> None:
        todo, self.deferred_recoveries = self.deferred_recoveries, []
        for i, (q, consumer, reason) in enumerate(todo):
            self._recover(q, consumer, reason)  # re-defers itself while Redis is down
            if self.deferred_recoveries:
                self.deferred_recoveries.extend(todo[i + 1 :])
                return

    def _drop_lease(self, worker_id: str) -> None:
        # A stale lease is harmless: the next start sees its pid gone.
        with contextlib.suppress(*REDIS_ERRORS):
            self.client.hdel(keys.leases(self.host), worker_id)

    def _reap_strays(self) -> None:
        """As subreaper we inherit workers' orphans: kill them, then reap them.

        Runs after SIGCHLD only (an orphan is re-parented to us when its
        worker exits, which is also when we get SIGCHLD for the worker).
        """
        self.strays_due = False
        known = {w.pid for w in self.fleet}
        try:
            children = [c for c in psutil.Process().children() if c.pid not in known]
        except psutil.Error:
            return
        for child in children:
            try:
                zombie = child.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                continue
            if zombie:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child.pid, os.WNOHANG)
                continue
            procs.signal_tree([child], signal.SIGKILL)  # its SIGCHLD brings us back
            self.events.warning(
                "stray",
                "🧹",
                f"Killed stray process {child.pid} (left behind by a worker)",
                pid=child.pid,
            )

    # -- start-up, sweep, status, shutdown ----------------------------------

    def _startup(self) -> None:
        self.events.info(
            "start",
            "🟢",
            f"Spawner on {self.host} (PID: {os.getpid()}) watching "
            + ", ".join(
                f"{q.name} ({q.label}, max {q.max_concurrent})" for q in self.config.queues.values()
            ),
        )
        try:
            self._adopt_leases()
        except REDIS_ERRORS as exc:
            self.health.failed(time.monotonic(), exc)

    def _adopt_leases(self) -> None:
        """Workers of this host left by a previous spawner: adopt or recover."""
        raw = self.client.hgetall(keys.leases(self.host))
        for worker_id, text in raw.items():
            lease = Lease.from_json(text)
            q = self.config.queues.get(lease.queue)
            if q is not None and lease.process_alive():
                self.fleet.add(
                    Worker(
                        lease=lease,
                        popen=None,
                        started_mono=time.monotonic() - (time.time() - lease.started_at),
                    )
                )
                self.events.info(
                    "adopt",
                    "🤝",
                    f"Adopted running worker {lease.worker_id} for {q.label} (PID: {lease.pid})",
                    queue=q.name,
                )
                continue
            if q is not None:
                self._recover(q, lease.consumer, "worker lost: spawner restarted")
            self.client.hdel(keys.leases(self.host), worker_id)

    def _sweep(self, live_hosts: set[str]) -> None:
        own_live = self.fleet.consumers()
        grace = self.config.spawner.stop_grace_s

        def is_dead(q: QueueConfig, consumer: str, idle_s: float) -> str | None:
            stale_after = q.max_runtime_s + grace
            verdict = classify(consumer, self.host, own_live, live_hosts, idle_s, stale_after)
            if verdict is Liveness.DEAD:
                host = keys.consumer_host(consumer)
                return (
                    "worker lost: host heartbeat expired" if host != self.host else ("worker lost")
                )
            return None

        for result in self.reaper.sweep(self.config, is_dead):
            if result.parked or result.dead_lettered:
                logger.bind(event="sweep").info(
                    f"Swept consumer {result.consumer} of {result.queue}: "
                    f"{result.parked} parked, {result.dead_lettered} dead-lettered"
                )

    def snapshot(self) -> HostStatus:
        now = time.monotonic()
        queues = []
        for state in self.queues.values():
            q, d = state.config, state.depth
            facts = self._facts(state, now)
            queues.append(
                QueueStatus(
                    name=q.name,
                    label=q.label,
                    live=facts.live,
                    max_concurrent=q.max_concurrent,
                    backlog=facts.backlog,
                    pending=d.pending - state.parked if d else 0,
                    oldest_age_s=d.oldest_age_s if d else None,
                    dead_letters=d.dead_letters if d else 0,
                    backlog_exact=d.exact if d else True,
                )
            )
        workers = [
            WorkerStatus(
                w.worker_id, w.queue, w.pid, w.lease.consumer, w.lease.started_at, w.lease.deadline
            )
            for w in self.fleet
        ]
        return HostStatus(
            self.host, os.getpid(), self.started_at, time.time(), queues, workers, self.health.up
        )

    def _log_status(self) -> None:
        queues = [q for q in self.snapshot().queues if q.name in self.config.queues]
        self.events.info("status", "📊", status_line(queues))

    def _finish(self) -> None:
        for w in self.fleet:  # only if run() is left by an exception
            w.terminate(StopReason.SHUTDOWN, 0.0)
            w.kill_tree()
        self.watch.reset()
        try:
            from orchestrator.status import withdraw

            withdraw(self.client, self.host)
        except REDIS_ERRORS:
            pass
        self.events.info("stopped", "👋", f"Spawner on {self.host} stopped")

    # -- config --------------------------------------------------------------

    def _apply_config(self, config: Config) -> None:
        self.config = config
        for name, state in self.queues.items():
            state.retired = name not in config.queues
            if not state.retired:
                state.config = config.queues[name]
        for name, q in config.queues.items():
            self.queues.setdefault(name, QueueState(config=q))
        self.probe = DepthProbe(s.config for s in self.queues.values())
        self.next_tick = 0.0

    def _queue_config(self, name: str) -> QueueConfig:
        return self.queues[name].config

    def _next_deadline(self) -> float:
        """The earliest monotonic time something is due without a signal."""
        now_mono, now_wall = time.monotonic(), time.time()
        due = [now_mono + 3600.0]
        for w in self.fleet:
            due.append(
                w.kill_at if w.kill_at is not None else now_mono + (w.lease.deadline - now_wall)
            )
            if w.popen is None:  # adopted: no SIGCHLD for it, so poll
                due.append(now_mono + self.config.spawner.poll_interval_s)
        for state in self.queues.values():
            if state.backoff.until > now_mono:
                due.append(state.backoff.until)
            cooldown = state.config.cooldown_s
            due.extend(t + cooldown for t in state.exits if t + cooldown > now_mono)
        return max(min(due), now_mono + MIN_TICK_INTERVAL_S)

    def _memory_ok(self) -> bool:
        percent = psutil.virtual_memory().percent
        ok = percent <= self.config.spawner.max_memory_percent
        if ok != self.memory_ok:
            if ok:
                self.events.info(
                    "memory_ok", "✅", f"Host memory at {percent:.0f}%: spawning again"
                )
            else:
                self.events.warning(
                    "memory_high",
                    "🧠",
                    f"Host memory at {percent:.0f}% > max_memory_percent "
                    f"{self.config.spawner.max_memory_percent:g}: not spawning",
                )
        return ok


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _client_id(raw: Any) -> int | None:
    if not raw:
        return None
    import json

    try:
        value = json.loads(raw).get("client_id")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) else None


def _create_time(pid: int, default: float) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return default


def _with_redis_url(config: Config, url: str) -> Config:
    from dataclasses import replace

    return replace(config, redis_url=url)


def main_loop(config: Config, *, subreaper: bool = True) -> int:
    """``orchestrator run``: a spawner in the foreground until stopped."""
    spawner = WorkerSpawner(config, events=Events(config.log.emoji), subreaper=subreaper)
    try:
        return spawner.run()
    except KeyboardInterrupt:  # pragma: no cover - signals are handled in run()
        return 0
    finally:
        sys.stdout.flush()
