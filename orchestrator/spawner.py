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
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

import psutil
import redis

from orchestrator import keys, procs, scaling
from orchestrator.config import Backend, Config, ConfigError, QueueConfig, load_config
from orchestrator.connections import REDIS_ERRORS, RedisHealth, connect
from orchestrator.fleet import Fleet, Lease, StopReason, Worker, death_reason, exit_text, stop_text
from orchestrator.launcher import Launcher, worker_env
from orchestrator.logs import Events
from orchestrator.procs import ExitStatus
from orchestrator.queues import DepthProbe, QueueDepth, StreamWatch
from orchestrator.queuestate import QueueState, apply_config
from orchestrator.reaper import PARKING_CONSUMER, Liveness, classify, split_shares
from orchestrator.recovery import Recovery
from orchestrator.status import (
    HostStatus,
    WorkerStatus,
    publish,
    status_line,
    withdraw,
)

SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
MIN_TICK_INTERVAL_S = 0.005
SWEEP_INTERVAL_S = 30.0


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
        self.fleet = Fleet()
        self.queues: dict[str, QueueState] = {}
        self.watch = StreamWatch(self.client)
        self.health = RedisHealth(self.events, config.redis_url)
        self.recovery = Recovery(self.client, self.events, self.health)
        self.launcher = Launcher(self.events, subreaper)
        self.started_at = time.time()
        self.stopping = False
        self.next_tick = 0.0
        self.next_status = 0.0
        self.next_sweep = 0.0
        self.memory_ok = True
        self.strays_due = False
        self.adopted = False  # the previous spawner's leases are read (retried until Redis answers)
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
        return self._room(queue, time.monotonic()) > 0

    def spawn_worker(self, queue: str, parked_share: int = 0) -> Worker | None:
        """Start one worker of ``queue`` if allowed; its lease is recorded."""
        if not self.can_spawn_worker(queue):
            return None
        started = self._start(self.queues[queue].config, [parked_share])
        return started[0] if started else None

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
        self.launcher.open(self.config.spawner.fork_server, self.config.spawner.preload)
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
            if not self.adopted:
                self._adopt_leases()
            self.recovery.retry_deferred()
            depths, live_hosts = self._probe()
            self.health.succeeded(time.monotonic())
            self._reconcile(depths, live_hosts, now)
            if now >= self.next_sweep:
                self.recovery.sweep(self.config, self.host, self.fleet.consumers(), live_hosts)
                self.next_sweep = now + SWEEP_INTERVAL_S
        except REDIS_ERRORS as exc:
            self.watch.reset()
            self.health.failed(time.monotonic(), exc)
            self.next_tick = max(self.next_tick, self.health.retry_at)
        except redis.RedisError as exc:  # a refused command: log it, never die of it
            self.watch.reset()
            self.events.error("tick_failed", "❌", f"Redis refused a command: {exc}")

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
                    state.parked += self.recovery.recover(state.config, consumer, "worker lost")
        self.memory_ok = self._memory_ok()
        self._enforce_worker_memory()
        if not self.stopping:
            self._spawn_planned(now)
        self._hand_out_to_idle()
        self._arm_watch(now)

    def _facts(self, name: str, now: float, backlog: int | None = None) -> scaling.QueueFacts:
        return self.queues[name].facts(self.fleet.of_queue(name), now, backlog)

    def _room(self, name: str, now: float) -> int:
        """Workers this queue could start now if it had the work for them."""
        return scaling.wanted_new(self._facts(name, now, self.queues[name].config.max_concurrent))

    def _spawn_planned(self, now: float) -> None:
        facts = [self._facts(n, now) for n, s in self.queues.items() if not s.retired]
        plan = scaling.plan_spawns(
            facts, len(self.fleet), self.config.spawner.max_total_workers, self.memory_ok
        )
        for name, count in plan.items():
            state = self.queues[name]
            # Parked entries are shared between the new workers and the idle
            # live ones (those get theirs in _hand_out_to_idle).
            idle = [w for w in self.fleet.of_queue(name) if state.holds(w) == 0]
            slots = [f"new{i}" for i in range(count)] + [w.worker_id for w in idle]
            shares = split_shares(state.parked, slots)
            self._start(state.config, [shares.get(f"new{i}", 0) for i in range(count)])
            state.stranded = False

    def _hand_out_to_idle(self) -> None:
        """Parked entries left over go to live workers that hold nothing."""
        for state in self.queues.values():
            if state.parked <= 0 or state.config.backend is not Backend.STREAM:
                continue
            idle = [w for w in self.fleet.of_queue(state.config.name) if state.holds(w) == 0]
            idle = [w for w in idle if w.stop_reason is None]
            if not idle:
                continue
            shares = split_shares(state.parked, [w.lease.consumer for w in idle])
            given = self.recovery.reaper.hand_out(state.config, shares)
            state.parked -= sum(given.values())
            self._wake(list(given))

    def _wake(self, consumers: list[str]) -> None:
        """Cut a worker's blocking read short so it sees its new entries."""
        if not consumers:
            return
        beats = self.client.mget([keys.worker_heartbeat(c) for c in consumers])
        for raw in beats:
            client_id = json.loads(raw).get("client_id") if raw else None
            if isinstance(client_id, int):
                self.client.client_unblock(client_id)

    def _arm_watch(self, now: float) -> None:
        positions: dict[str, str] = {}
        for state in self.queues.values():
            q, depth = state.config, state.depth
            if q.backend is not Backend.STREAM or depth is None or self.stopping:
                continue
            if self._room(q.name, now) > 0:
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

    def _start(self, queue: QueueConfig, parked_shares: list[int]) -> list[Worker]:
        """Start a worker per share, at once; each is handed its share of the
        parked entries before it runs."""
        now_wall = time.time()
        deadline = now_wall + queue.max_runtime_s
        planned = []
        for share in parked_shares:
            worker_id = self.fleet.new_worker_id(queue.label.lower(), now_wall)
            consumer = keys.consumer_name(self.host, worker_id)
            if share and queue.backend is Backend.STREAM:
                given = self.recovery.reaper.hand_out(queue, {consumer: share})
                self.queues[queue.name].parked -= given.get(consumer, 0)
            planned.append((worker_id, consumer, share))
        envs = [worker_env(self.config, queue, w, c, deadline) for w, c, _ in planned]
        launched = self.launcher.launch(queue, envs, str(self.config.root))
        workers = []
        for (worker_id, consumer, share), outcome in zip(planned, launched, strict=True):
            if isinstance(outcome, OSError):
                self.events.error(
                    "spawn_failed", "❌", f"Cannot start worker for {queue.label}: {outcome}"
                )
                self._record_exit(queue, 0.0, failed=True)
                continue
            pid, popen = outcome
            lease = Lease(
                worker_id,
                queue.name,
                consumer,
                pid,
                now_wall,
                deadline,
                _create_time(pid, now_wall),
            )
            workers.append(self._register(queue, lease, popen, share))
        return workers

    def _register(
        self, queue: QueueConfig, lease: Lease, popen: subprocess.Popen[bytes] | None, share: int
    ) -> Worker:
        worker = Worker(lease=lease, popen=popen, started_mono=time.monotonic())
        self.fleet.add(worker)
        self.client.hset(keys.leases(self.host), lease.worker_id, lease.to_json())
        self.events.info(
            "spawn",
            "🚀",
            f"Spawned worker {lease.worker_id} for {queue.label} "
            f"(PID: {lease.pid}, Total: {self.fleet.count(queue.name)})",
            queue=queue.name,
            worker_id=lease.worker_id,
            pid=lease.pid,
            parked=share,
        )
        return worker

    def _terminate(self, worker: Worker, reason: StopReason) -> bool:
        if not worker.terminate(reason, self.config.spawner.stop_grace_s):
            return False
        if reason is not StopReason.SHUTDOWN:
            q = self._queue_config(worker.queue)
            self.events.warning(
                "terminate",
                "⏰" if reason is StopReason.MAX_RUNTIME else "🧠",
                f"Terminating worker {worker.worker_id} for {q.label}: "
                f"{self._stop_text(worker, reason)} (PID: {worker.pid})",
                queue=worker.queue,
                worker_id=worker.worker_id,
                pid=worker.pid,
                reason=reason.value,
            )
        return True

    def _stop_text(self, worker: Worker, reason: StopReason) -> str:
        q = self._queue_config(worker.queue)
        return stop_text(worker, reason, q.max_runtime_s, q.max_memory_mb)

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
        if self.strays_due:
            self.strays_due = False
            self.launcher.reap_strays([w.pid for w in self.fleet])
        self.launcher.check_zygote()

    def _enforce_worker_memory(self) -> None:
        for w in self.fleet:
            cap_mb = self._queue_config(w.queue).max_memory_mb
            if cap_mb and w.stop_reason is None and procs.tree_rss_bytes(w.pid) > cap_mb * 2**20:
                self._terminate(w, StopReason.MEMORY)

    def _on_exit(self, worker: Worker, status: ExitStatus, now: float) -> None:
        """A worker is gone: log it, count it, give its work back."""
        self.fleet.remove(worker.worker_id)
        q = self._queue_config(worker.queue)
        runtime = worker.runtime_s(now)
        leftovers = worker.kill_leftovers()
        icon, text = exit_text(
            worker, status, q.label, runtime, leftovers, self.fleet.count(q.name)
        )
        self.events.info(
            "exit",
            icon,
            text,
            queue=q.name,
            worker_id=worker.worker_id,
            pid=worker.pid,
            code=status.code,
            signal=status.signal,
            runtime_s=round(runtime, 3),
        )
        requested = worker.stop_reason is not None
        failed = not requested and (not status.ok or self._gave_up_early(q, runtime, now))
        self._record_exit(q, runtime, failed=failed, now=now)
        stopped = self._stop_text(worker, worker.stop_reason) if worker.stop_reason else ""
        reason = death_reason(worker, status, stopped)
        if self.recovery.recover(q, worker.lease.consumer, reason) and q.name in self.queues:
            self.queues[q.name].stranded = True
        with contextlib.suppress(*REDIS_ERRORS):  # a stale lease is harmless at restart
            self.client.hdel(keys.leases(self.host), worker.worker_id)
        self.next_tick = min(self.next_tick, now)

    def _gave_up_early(self, q: QueueConfig, runtime_s: float, now: float) -> bool:
        """A clean exit that counts towards a crash loop: sooner than the
        worker could have been idle for ``idle_timeout``, while work waits
        (a script that exits 0 at once must not be respawned in a tight loop)."""
        state = self.queues.get(q.name)
        if state is None or runtime_s >= min(q.idle_timeout_s, self.config.spawner.crash_window_s):
            return False
        return state.facts(self.fleet.of_queue(q.name), now).backlog > 0

    def _record_exit(
        self, q: QueueConfig, runtime: float, failed: bool, now: float | None = None
    ) -> None:
        state = self.queues.get(q.name)
        if state is None:
            return
        now = time.monotonic() if now is None else now
        spawner = self.config.spawner
        state.record_exit(now, runtime, failed, spawner.crash_window_s, spawner.crash_backoff_max_s)
        if state.backoff.streak >= 2:
            self.events.warning(
                "crash_loop",
                "🔁",
                f"{q.label} workers keep failing within {spawner.crash_window_s:g}s of start "
                f"({state.backoff.streak} in a row): next spawn in "
                f"{state.backoff.delay_s(now):.0f}s",
                queue=q.name,
                streak=state.backoff.streak,
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
        """Workers of this host left by a previous spawner: adopt or recover.

        Done before anything else touches Redis: until it is, a previous
        worker still finishing its job would look dead, and its entries
        would be handed to another worker. A Redis outage at start-up only
        defers it to the first tick that reaches Redis."""
        raw = self.client.hgetall(keys.leases(self.host))
        for worker_id, text in raw.items():
            lease = Lease.from_json(text)
            if lease.worker_id in self.fleet.workers:  # adopted by an attempt cut short
                continue
            q = self.config.queues.get(lease.queue)
            if q is not None and lease.process_alive():
                started = time.monotonic() - (time.time() - lease.started_at)
                self.fleet.add(Worker(lease=lease, popen=None, started_mono=started, child=False))
                self.events.info(
                    "adopt",
                    "🤝",
                    f"Adopted running worker {lease.worker_id} for {q.label} (PID: {lease.pid})",
                    queue=q.name,
                )
                continue
            if q is not None:
                self.recovery.recover(q, lease.consumer, "worker lost: spawner restarted")
            self.client.hdel(keys.leases(self.host), worker_id)
        self.adopted = True

    def snapshot(self) -> HostStatus:
        now = time.monotonic()
        queues = [s.status(self.fleet.of_queue(n), now) for n, s in self.queues.items()]
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
        self.launcher.close()
        self.watch.reset()
        with contextlib.suppress(*REDIS_ERRORS):
            withdraw(self.client, self.host)
        self.events.info("stopped", "👋", f"Spawner on {self.host} stopped")

    # -- config --------------------------------------------------------------

    def _apply_config(self, config: Config) -> None:
        self.config = config
        apply_config(self.queues, config.queues)
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
            if not w.child:  # adopted: no SIGCHLD for it, so poll
                due.append(now_mono + self.config.spawner.poll_interval_s)
        for state in self.queues.values():
            due.extend(state.due(now_mono))
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


def _create_time(pid: int, default: float) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return default


def _with_redis_url(config: Config, url: str) -> Config:
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
