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
from orchestrator.config import (
    RQ_WORKER_ARGV,
    Backend,
    Config,
    ConfigError,
    QueueConfig,
    load_config,
)
from orchestrator.connections import REDIS_ERRORS, RedisHealth, connect
from orchestrator.fleet import Fleet, Lease, StopReason, Worker, death_reason, exit_text, stop_text
from orchestrator.guard import Guard
from orchestrator.hostclaim import HostClaim, HostTaken
from orchestrator.launcher import Launcher, worker_env
from orchestrator.logs import Events
from orchestrator.procs import ExitStatus
from orchestrator.queues import DepthProbe, QueueDepth, StreamWatch
from orchestrator.queuestate import QueueState, apply_config
from orchestrator.reaper import PARKING_CONSUMER, Liveness, classify, split_shares
from orchestrator.recovery import Recovered, Recovery
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
# When the host cap binds and more queues want workers than it allows, a
# queue whose worker has held its slot this long gives it up to one waiting.
YIELD_TURN_S = 2.0
YIELD_SIGNAL = signal.SIGUSR1  # "finish the job in hand, then exit" (the runtime's)
EXIT_HOST_TAKEN = 2


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
        self.guard = Guard() if subreaper else None
        self.claim = HostClaim(self.client, self.host, config.spawner.heartbeat_ttl_s)
        self.refused: HostTaken | None = None
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
        """Serve until SIGTERM/SIGINT; returns the process exit code (0, or
        2 when another live spawner holds this host name)."""
        self.launcher.open(self.config.spawner.fork_server, self.config.spawner.preload)
        if self.guard is not None:
            self.guard.start()
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
        return EXIT_HOST_TAKEN if self.refused else 0

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
            if not self.claim.claimed:
                self.claim.claim()
            if not self.adopted:
                self._adopt_leases()
            self.recovery.retry_deferred()
            depths, live_hosts = self._probe()
            if self.health.succeeded(time.monotonic()):
                for state in self.queues.values():  # what waited for Redis goes at once
                    state.backoff = state.backoff.lifted_for_redis()
            self._reconcile(depths, live_hosts, now)
            if now >= self.next_sweep:
                self.recovery.sweep(self.config, self.host, self.fleet.consumers(), live_hosts)
                self.next_sweep = now + SWEEP_INTERVAL_S
        except HostTaken as exc:
            self._refuse(exc)
        except REDIS_ERRORS as exc:
            self.watch.reset()
            self.health.failed(time.monotonic(), exc)
            self.next_tick = max(self.next_tick, self.health.retry_at)
        except redis.RedisError as exc:  # a refused command: log it, never die of it
            self.watch.reset()
            self.events.error("tick_failed", "❌", f"Redis refused a command: {exc}")

    def _refuse(self, exc: HostTaken) -> None:
        """Another live spawner has our host name: stop, touching nothing of its."""
        self.events.error("host_taken", "⛔", f"Refusing to run: {exc}", host=self.host)
        self.refused = exc
        self.request_stop()

    def _probe(self) -> tuple[dict[str, QueueDepth], set[str]]:
        """The tick's one round trip: depths, live hosts, our heartbeat."""
        if self.probe.sha is None:
            self.probe.load(self.client)
        try:
            reply, hosts, holder = self._probe_pipeline()
        except redis.exceptions.NoScriptError:  # Redis restarted: scripts are gone
            self.probe.load(self.client)
            reply, hosts, holder = self._probe_pipeline()
        taken_by = self.claim.check(holder)
        if taken_by is not None:
            self.claim.claimed = False  # not ours any more: never release it
            raise HostTaken(self.host, taken_by)
        depths = self.probe.parse(reply) if self.probe.queues else {}
        for name, depth in depths.items():
            self.queues[name].depth = depth
        return depths, {h.decode() if isinstance(h, bytes) else str(h) for h in hosts}

    def _probe_pipeline(self) -> tuple[Any, list[Any], Any]:
        pipe = self.client.pipeline(transaction=False)
        self.probe.queue_on(pipe)
        pipe.zrangebyscore(keys.HOSTS, time.time(), "+inf")
        pipe.get(keys.host(self.host))
        publish(pipe, self.snapshot(), self.config.spawner.heartbeat_ttl_s)
        reply, hosts, holder, *_ = pipe.execute()
        return reply, hosts, holder

    def _reconcile(self, depths: dict[str, QueueDepth], live_hosts: set[str], now: float) -> None:
        own_live = self.fleet.consumers()
        for name, depth in depths.items():
            state = self.queues[name]
            state.parked = depth.pending_by_consumer.get(PARKING_CONSUMER, 0)
            for consumer, n in depth.pending_by_consumer.items():
                if n and classify(consumer, self.host, own_live, live_hosts) is Liveness.DEAD:
                    recovered = self.recovery.recover(state.config, consumer, "worker lost")
                    state.parked += recovered.handed_back if recovered else 0
            state.note_starving(self.fleet.of_queue(name), now)
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
        max_total = self.config.spawner.max_total_workers
        plan = scaling.plan_spawns(facts, len(self.fleet), max_total, self.memory_ok)
        if not plan and self.memory_ok:
            for name, count in scaling.plan_yields(
                facts, len(self.fleet), max_total, YIELD_TURN_S
            ).items():
                self._yield_slots(name, count)
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
            for w in idle:
                w.handed += given.get(w.lease.consumer, 0)
            self._wake(list(given))

    def _yield_slots(self, name: str, count: int) -> None:
        """Ask ``count`` workers of ``name`` to give their slots up: each
        finishes the job in hand and exits (nothing is killed mid-job).
        Only workers that say they can (the runtime's, RQ's) are asked;
        idle ones first, then the longest running."""
        state = self.queues[name]
        candidates = [w for w in self.fleet.of_queue(name) if w.stop_reason is None]
        candidates.sort(key=lambda w: (state.holds(w) > 0, w.started_mono))
        for worker in self._can_yield(state.config, candidates)[:count]:
            if worker.terminate(StopReason.YIELD, 0.0, YIELD_SIGNAL):
                self.events.info(
                    "yield",
                    "↪️",
                    f"Worker {worker.worker_id} for {state.config.label} gives its slot up "
                    f"after its job: max_total_workers {self.config.spawner.max_total_workers} "
                    "is reached and another queue has work and no worker",
                    queue=name,
                    worker_id=worker.worker_id,
                    pid=worker.pid,
                )

    def _can_yield(self, q: QueueConfig, workers: list[Worker]) -> list[Worker]:
        if q.backend is Backend.RQ:
            return workers if q.argv == RQ_WORKER_ARGV else []
        beats = self.client.mget([keys.worker_heartbeat(w.lease.consumer) for w in workers])
        return [
            w
            for w, raw in zip(workers, beats, strict=True)
            if raw and json.loads(raw).get("yields")
        ]

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
                share = self.recovery.reaper.hand_out(queue, {consumer: share}).get(consumer, 0)
                self.queues[queue.name].parked -= share
            planned.append((worker_id, consumer, share))
        envs = [worker_env(self.config, queue, w, c, deadline) for w, c, _ in planned]
        launched = self.launcher.launch(queue, envs, str(self.config.root))
        workers = []
        for (worker_id, consumer, share), outcome in zip(planned, launched, strict=True):
            if isinstance(outcome, OSError):
                self.events.error(
                    "spawn_failed", "❌", f"Cannot start worker for {queue.label}: {outcome}"
                )
                self._record_exit(queue, START_FAILED, time.monotonic())
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
        worker = Worker(lease=lease, popen=popen, started_mono=time.monotonic(), handed=share)
        self.fleet.add(worker)
        if self.guard is not None:
            self.guard.watch(
                lease.pid, lease.deadline, self.config.spawner.stop_grace_s, lease.consumer
            )
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
            if w.stop_reason in (None, StopReason.YIELD) and wall >= w.lease.deadline:
                self._terminate(w, StopReason.MAX_RUNTIME)
            if w.kill_at is not None:
                w.remember_tree()
                if now >= w.kill_at:
                    w.kill_tree()
        if self.strays_due:
            self.strays_due = False
            keep = [w.pid for w in self.fleet]
            if self.guard is not None and self.guard.pid is not None:
                keep.append(self.guard.pid)
            self.launcher.reap_strays(keep)
        self.launcher.check_zygote()
        self._check_guard()

    def _check_guard(self) -> None:
        """A guard that died is started again and told of every worker."""
        if self.guard is None or self.guard.alive():
            return
        self.events.warning("guard", "⚠️", "Guard process gone; restarting it")
        self.guard.close()
        self.guard.start()
        for w in self.fleet:
            self.guard.watch(
                w.pid, w.lease.deadline, self.config.spawner.stop_grace_s, w.lease.consumer
            )

    def _enforce_worker_memory(self) -> None:
        for w in self.fleet:
            cap_mb = self._queue_config(w.queue).max_memory_mb
            if (
                cap_mb
                and w.stop_reason in (None, StopReason.YIELD)
                and procs.tree_rss_bytes(w.pid) > cap_mb * 2**20
            ):
                self._terminate(w, StopReason.MEMORY)

    def _on_exit(self, worker: Worker, status: ExitStatus, now: float) -> None:
        """A worker is gone: log it, give its work back, judge its program."""
        self.fleet.remove(worker.worker_id)
        if self.guard is not None:
            self.guard.forget(worker.pid)
        q = self._queue_config(worker.queue)
        runtime = worker.runtime_s(now)
        leftovers = worker.kill_leftovers()
        if not worker.child:  # adopted: its orphans went to init, not to us
            leftovers += len(procs.kill_tagged(worker.lease.consumer))
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
        early = status.ok and self._gave_up_early(q, runtime, now)
        stopped = self._stop_text(worker, worker.stop_reason) if worker.stop_reason else ""
        tempfail = status.code == scaling.EX_TEMPFAIL  # Redis or a dependency was down
        recovered = self.recovery.recover(
            q, worker.lease.consumer, death_reason(worker, status, stopped), uncharged=tempfail
        )
        if recovered is not None and recovered.handed_back and q.name in self.queues:
            self.queues[q.name].stranded = True
        self._record_exit(q, _verdict_facts(worker, status, runtime, early, recovered), now)
        with contextlib.suppress(*REDIS_ERRORS):  # a stale lease is harmless at restart
            self.client.hdel(keys.leases(self.host), worker.worker_id)
        self.next_tick = min(self.next_tick, now)

    def _gave_up_early(self, q: QueueConfig, runtime_s: float, now: float) -> bool:
        """A clean exit sooner than the worker could have been idle for
        ``idle_timeout``, while work waits (a script that exits 0 at once
        must not be respawned in a tight loop)."""
        state = self.queues.get(q.name)
        if state is None or runtime_s >= min(q.idle_timeout_s, self.config.spawner.crash_window_s):
            return False
        return state.facts(self.fleet.of_queue(q.name), now).backlog > 0

    def _record_exit(self, q: QueueConfig, facts: scaling.ExitFacts, now: float) -> None:
        state = self.queues.get(q.name)
        if state is None:
            return
        spawner = self.config.spawner
        verdict = scaling.exit_verdict(facts, spawner.crash_window_s)
        was = state.backoff
        state.record_exit(now, verdict, spawner.crash_backoff_max_s)
        if verdict is scaling.ExitVerdict.CRASH and state.backoff.streak >= 2:
            self.events.warning(
                "crash_loop",
                "🔁",
                f"{q.label} workers keep failing within {spawner.crash_window_s:g}s of start "
                f"without completing a job ({state.backoff.streak} in a row): next spawn in "
                f"{state.backoff.delay_s(now):.0f}s",
                queue=q.name,
                streak=state.backoff.streak,
            )
        elif verdict is scaling.ExitVerdict.TEMPFAIL and was.reason != scaling.TEMPFAIL_REASON:
            self.events.warning(
                "tempfail",
                "⏳",
                f"{q.label} workers wait for a dependency (exit {scaling.EX_TEMPFAIL}): "
                f"retrying every {scaling.TEMPFAIL_RETRY_S:g}s, at once when Redis returns",
                queue=q.name,
            )

    # -- start-up, sweep, status, shutdown ----------------------------------

    def _startup(self) -> None:
        """Claim the host name, say so, adopt the previous spawner's workers.
        With Redis down, the claim and adoption wait for the first tick
        that reaches it."""
        try:
            self.claim.claim()
        except HostTaken as exc:
            self._refuse(exc)
            return
        except REDIS_ERRORS as exc:
            self.health.failed(time.monotonic(), exc)
        self.events.info(
            "start",
            "🟢",
            f"Spawner on {self.host} (PID: {os.getpid()}) watching "
            + ", ".join(
                f"{q.name} ({q.label}, max {q.max_concurrent})" for q in self.config.queues.values()
            ),
        )
        if self.claim.claimed:
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
                if self.guard is not None:
                    grace_s = self.config.spawner.stop_grace_s
                    self.guard.watch(lease.pid, lease.deadline, grace_s, lease.consumer)
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
        self._kill_left_behind()

    def _kill_left_behind(self) -> None:
        """Processes of this host's previous workers that are not adopted
        (a daemon a worker started, a worker's orphan): killed, and said."""
        adopted = self.fleet.consumers()
        prefix = keys.consumer_name(self.host, "")
        left = {pid: c for pid, c in procs.tagged_processes(prefix).items() if c not in adopted}
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            self.events.warning(
                "left_behind",
                "🧹",
                f"Killed {len(left)} process(es) left behind by previous workers of {self.host} "
                f"(PIDs: {', '.join(map(str, sorted(left)))})",
                pids=",".join(map(str, sorted(left))),
            )

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
        if self.guard is not None:
            self.guard.close()
        self.watch.reset()
        if self.claim.claimed:
            with contextlib.suppress(*REDIS_ERRORS):
                withdraw(self.client, self.host)
                self.claim.release()
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


START_FAILED = scaling.ExitFacts(
    requested=False, code=None, completed=False, working=False, runtime_s=0.0, early_with_work=False
)


def _verdict_facts(
    worker: Worker, status: ExitStatus, runtime_s: float, early: bool, recovered: Recovered | None
) -> scaling.ExitFacts:
    """What the crash-loop rule needs to know of an exit. When Redis could
    not say what the worker did (an outage), it is taken to have worked."""
    return scaling.ExitFacts(
        requested=worker.stop_reason is not None,
        code=status.code,
        completed=recovered is None or recovered.done,
        working=recovered is not None and (recovered.in_hand or recovered.held > worker.handed),
        runtime_s=runtime_s,
        early_with_work=early,
    )


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
