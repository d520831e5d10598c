"""The WorkerSpawner: keeps the right number of workers alive per queue.

A reconcile loop, as in circus. It sleeps in one ``select`` on the signal
pipe (SIGCHLD, SIGTERM/SIGINT, SIGHUP), an outstanding ``XREAD`` on the
streams that have room for more workers (a job on an idle system starts a
worker within milliseconds) and a timer. A tick is one Redis round trip
(``TickProbe``; every few seconds it trims the streams too: ``Retention``);
then the pure rules of ``scaling`` decide, and the spawner acts: dead
consumers' entries parked and handed on (``Recovery``, the only way to the
reaper), workers started or asked to give their slot up
(``Workforce``). An exit is handled the moment SIGCHLD arrives: reaped, its
work given back, its program judged (the crash-loop rule).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from dataclasses import replace

import redis

from orchestrator import keys, procs, scaling
from orchestrator.config import (
    Backend,
    Config,
    ConfigError,
    QueueConfig,
    load_config,
)
from orchestrator.connections import REDIS_ERRORS, RedisHealth, connect
from orchestrator.fleet import StopReason, Worker
from orchestrator.hostclaim import HostClaim, HostTaken
from orchestrator.leases import LeaseBook
from orchestrator.logs import Events
from orchestrator.memory import HostMemory, over_cap
from orchestrator.messages import SpawnerLog, death_reason
from orchestrator.queues import QueueDepth, StreamWatch, TickExtra, TickProbe
from orchestrator.queuestate import QueueState, apply_config
from orchestrator.reaper import PARKING_CONSUMER, Liveness, classify, split_shares
from orchestrator.recovery import Recovery
from orchestrator.retention import Retention
from orchestrator.slots import GlobalSlots
from orchestrator.status import HostStatus, WorkerStatus, status_line, withdraw
from orchestrator.telemetry import Telemetry
from orchestrator.workforce import START_FAILED, Exit, Planned, Workforce, exit_facts

SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
MIN_TICK_INTERVAL_S = 0.005
SWEEP_INTERVAL_S = 30.0
# When the host cap binds and more queues want workers than it allows, a
# queue whose worker has held its slot this long gives it up to one waiting.
YIELD_TURN_S = 2.0
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
        self.telemetry = Telemetry.configured(config.spawner)  # None: metrics and history off
        self.log = SpawnerLog(events or Events(), self.telemetry)
        self.workforce = Workforce(LeaseBook(self.client, self.host), self.log, subreaper)
        self.fleet = self.workforce.fleet
        self.queues: dict[str, QueueState] = {}
        self.watch = StreamWatch(self.client)
        self.health = RedisHealth(self.log.events, config.redis_url)
        self.recovery = Recovery(self.client, self.log.events, self.health, self.telemetry)
        self.claim = HostClaim(self.client, self.host, config.spawner.heartbeat_ttl_s)
        self.slots = GlobalSlots(self.client, self.host)
        self.memory = HostMemory(self.log)
        self.refused: HostTaken | None = None
        self.started_at = time.time()
        self.stopping = False
        self.next_tick = self.next_status = self.next_sweep = 0.0
        self.adopted = False  # the previous spawner's leases are read (retried until Redis answers)
        self._apply_config(config)

    # -- the seed's API ---------------------------------------------------

    def get_active_worker_count(self, queue: str) -> int:
        return self.fleet.count(queue)

    def can_spawn_worker(self, queue: str) -> bool:
        """Could one more worker of ``queue`` start right now?"""
        state = self.queues.get(queue)
        if state is None or state.retired or self.stopping or not self.memory.ok:
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
        q = self.queues[queue].config
        chosen = [w for w in self.fleet.of_queue(queue) if worker_id in (None, w.worker_id)]
        return sum(1 for w in chosen if self.workforce.terminate(w, reason, q))

    # -- lifecycle ----------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the process exit code (0, or
        2 when another live spawner holds this host name)."""
        self.workforce.open(self.config)
        if self.telemetry is not None:
            self.telemetry.open(self.config, self.health, self.log.events)
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
        for gone in self.workforce.check(now, self._queue_config):
            self._on_exit(gone, now)
        self.workforce.tidy()
        if woken := self._watch_fired():
            self._spawn_on_wake(woken, now)
            self.next_tick = min(self.next_tick, now)
        if now >= self.next_tick and self.health.available(now):
            self.tick(now)
        if now >= self.next_status:
            queues = [q for q in self.snapshot().queues if q.name in self.config.queues]
            self.log.status(status_line(queues))
            self.next_status = now + self.config.spawner.status_interval_s

    def request_stop(self) -> None:
        """Graceful stop: no new workers; SIGTERM all; SIGKILL after grace."""
        if self.stopping:
            self.workforce.hurry()  # a second request: no more grace
            return
        self.stopping = True
        self.log.stopping(len(self.fleet))
        for w in self.fleet:
            self.workforce.terminate(w, StopReason.SHUTDOWN, self._queue_config(w.queue))

    def reload(self, path: str | os.PathLike[str] | None = None) -> bool:
        """Re-read the config; an invalid one is refused and the old kept."""
        source = path or self.config.path
        try:
            new = load_config(source)
        except ConfigError as exc:
            self.log.reload_refused(exc.problems)
            return False
        url_changed = new.redis_url != self.config.redis_url
        self._apply_config(replace(new, redis_url=self.config.redis_url))
        self.log.reloaded(source, len(new.queues), url_changed)
        return True

    def _wait(self, wakeup: procs.SignalWakeup) -> None:
        now = time.monotonic()
        timeout = max(0.0, min(self._next_deadline(), self.next_tick, self.next_status) - now)
        if self.stopping:
            timeout = min(timeout, 0.05)
        fds = [wakeup.fileno()]
        if (watch_fd := self.watch.fileno()) is not None:
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
                self.workforce.strays_due = True

    # -- the tick -------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Probe, decide, act. Redis errors are waited out, never raised."""
        self.next_tick = now + self.config.spawner.poll_interval_s
        try:
            self._claim_and_adopt()
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
            self.log.command_refused(exc)

    def _refuse(self, exc: HostTaken) -> None:
        """Another live spawner has our host name: stop, touching nothing of its."""
        self.log.host_taken(self.host, exc)
        self.refused = exc
        self.request_stop()

    def _probe(self) -> tuple[dict[str, QueueDepth], set[str]]:
        """The tick's one round trip (``TickProbe``); our name must still be ours."""
        reading = self.probe.read(
            self.snapshot(), self.config.spawner.heartbeat_ttl_s, self._demand(time.monotonic())
        )
        if (taken_by := self.claim.check(reading.holder)) is not None:
            self.claim.claimed = False  # not ours any more: never release it
            raise HostTaken(self.host, taken_by)
        for name, depth in reading.depths.items():
            self.queues[name].depth = depth
        return reading.depths, reading.live_hosts

    def _demand(self, now: float) -> dict[str, int]:
        """Workers this host wants of each globally capped queue, whatever the
        other hosts hold: what it claims a fair share of (``slots``)."""
        demand = {}
        for name, state in self.queues.items():
            if state.config.global_max_concurrent is not None and not state.retired:
                facts = self._facts(name, now)
                alone = replace(facts, max_concurrent=state.max_concurrent)
                demand[name] = facts.live + scaling.wanted_new(alone)
        return demand

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
            self._follow_control(state)
        self.memory.check(self.config.spawner.max_memory_percent)
        for w in over_cap(self.fleet, lambda w: self._queue_config(w.queue).max_memory_mb):
            self.workforce.terminate(w, StopReason.MEMORY, self._queue_config(w.queue))
        if not self.stopping:
            self._spawn_planned(now)
        self._hand_out_to_idle()
        self._arm_watch(now)

    def _facts(self, name: str, now: float, backlog: int | None = None) -> scaling.QueueFacts:
        return self.queues[name].facts(self.fleet.of_queue(name), now, backlog)

    def _room(self, name: str, now: float) -> int:
        """Workers this queue could start now if it had the work for them."""
        return scaling.wanted_new(self._facts(name, now, self.queues[name].config.max_concurrent))

    def _follow_control(self, state: QueueState) -> None:
        """The operator's word on the queue (read with the tick): said in the
        log; a pause or a drain asks the live workers to stop after their job."""
        workers = self.fleet.of_queue(state.config.name)
        change = state.follow_control(workers)
        if change is None:
            return
        was, drained = change
        self.log.control(state.config, was, state.control, drained)
        if state.control.holds_back and not was.holds_back:
            why = f"{state.config.label} is {'paused' if state.control.paused else 'draining'}"
            self.workforce.ask_all_to_yield(workers, state.config, why, self.client)

    def _spawn_planned(self, now: float) -> None:
        facts = [self._facts(n, now) for n, s in self.queues.items() if not s.retired]
        max_total = self.config.spawner.max_total_workers
        plan = scaling.plan_spawns(facts, len(self.fleet), max_total, self.memory.ok)
        if not plan and self.memory.ok:
            yields = scaling.plan_yields(facts, len(self.fleet), max_total, YIELD_TURN_S)
            for name, count in yields.items():
                self._yield_slots(self.queues[name], count)
        for name, count in plan.items():
            state = self.queues[name]
            # Parked entries are shared between the new workers and the idle
            # live ones (those get theirs in _hand_out_to_idle).
            idle = [w for w in self.fleet.of_queue(name) if state.holds(w) == 0]
            slots = [f"new{i}" for i in range(count)] + [w.worker_id for w in idle]
            shares = split_shares(state.parked, slots)
            self._start(state.config, [shares.get(f"new{i}", 0) for i in range(count)])
            state.stranded = False

    def _yield_slots(self, state: QueueState, count: int) -> None:
        """Ask ``count`` workers to give their slots up after the job in hand,
        idle ones first, then the longest running."""
        q = state.config
        candidates = [w for w in self.fleet.of_queue(q.name) if w.stop_reason is None]
        candidates.sort(key=lambda w: (state.holds(w) > 0, w.started_mono))
        for worker in self.workforce.yieldable(q, candidates, self.client)[:count]:
            why = (
                f"max_total_workers {self.config.spawner.max_total_workers} is reached "
                "and another queue has work and no worker"
            )
            self.workforce.ask_to_yield(worker, q, why)

    def _hand_out_to_idle(self) -> None:
        """Parked entries left over go to live workers that hold nothing."""
        for state in self.queues.values():
            idle = [w for w in self.fleet.of_queue(state.config.name) if state.holds(w) == 0]
            idle = [w for w in idle if w.stop_reason is None]
            if state.parked <= 0 or not idle:
                continue
            shares = split_shares(state.parked, [w.lease.consumer for w in idle])
            given = self.recovery.hand_out(state.config, shares, wake=True)
            state.parked -= sum(given.values())
            for w in idle:
                w.handed += given.get(w.lease.consumer, 0)

    def _arm_watch(self, now: float) -> None:
        """Watch the streams with room for a worker, and the host's wake
        stream (a worker gave entries back: they are handed on at once)."""
        if self.stopping:
            self.watch.arm({})
            return
        positions = {
            s.config.stream: s.depth.last_id
            for s in self.queues.values()
            if s.config.backend is Backend.STREAM and s.depth is not None
            if self._room(s.config.name, now) > 0
        }
        wake = keys.wake(self.host)
        positions[wake] = self.watch.seen.get(wake, "0-0")
        self.watch.arm(positions)

    def _watch_fired(self) -> list[str]:
        """The watched streams that got an entry (Redis errors: none now)."""
        try:
            return self.watch.fired()
        except REDIS_ERRORS as exc:
            self.health.failed(time.monotonic(), exc)
            return []

    def _spawn_on_wake(self, streams: list[str], now: float) -> None:
        """A job arrived on a queue with room: start its worker now, straight
        from the watch's reply; the tick that follows corrects the rest."""
        if self.stopping or not self.memory.ok:
            return
        for state in self.queues.values():
            room = len(self.fleet) < self.config.spawner.max_total_workers
            if room and state.config.stream in streams and not state.retired:
                backlog = max(1, self._facts(state.config.name, now).backlog)
                if scaling.wanted_new(self._facts(state.config.name, now, backlog)) > 0:
                    self._start(state.config, [0])

    def _successor(self, q: QueueConfig, now: float) -> tuple[str, Worker | None] | None:
        """Who takes a gone worker's entries at once (in the same call that
        takes them from it): an idle live worker of the queue, else a worker
        about to start, if the queue has room; None: they are parked."""
        state = self.queues.get(q.name)
        if state is None or state.retired or q.backend is not Backend.STREAM or self.stopping:
            return None
        idle = [w for w in self.fleet.of_queue(q.name) if w.stop_reason is None]
        idle = [w for w in idle if state.holds(w) == 0]
        if idle:
            return idle[0].lease.consumer, idle[0]
        facts = replace(self._facts(q.name, now, 1), cooling=0)
        room = len(self.fleet) < self.config.spawner.max_total_workers and self.memory.ok
        if not room or scaling.wanted_new(facts) <= 0:
            return None
        worker_id = self.fleet.new_worker_id(q.label.lower(), time.time())
        return keys.consumer_name(self.host, worker_id), None

    # -- workers in and out ---------------------------------------------------

    def _start(self, q: QueueConfig, parked_shares: list[int]) -> list[Worker]:
        """Start a worker per share, at once (as many as the queue's global
        slots allow); each is handed its share of the parked entries before
        it runs."""
        state = self.queues[q.name]
        ids = [self.fleet.new_worker_id(q.label.lower(), time.time()) for _ in parked_shares]
        consumers = [keys.consumer_name(self.host, w) for w in ids]
        granted = self.slots.take(q, consumers)
        planned = []
        for worker_id, consumer, share in zip(
            ids[:granted], consumers, parked_shares, strict=False
        ):
            handed = self.recovery.hand_out(q, {consumer: share}).get(consumer, 0) if share else 0
            state.parked -= handed
            planned.append(Planned(worker_id, consumer, handed))
        workers, failed = self.workforce.start(self.config, q, planned, state.control.draining)
        self._failed_starts(q, planned, workers, failed)
        return workers

    def _failed_starts(
        self, q: QueueConfig, planned: list[Planned], started: list[Worker], failed: int
    ) -> None:
        """Starts that failed free their slots and count for the crash loop."""
        if failed:
            up = {w.lease.consumer for w in started}
            self.slots.release(q, [p.consumer for p in planned if p.consumer not in up])
        for _ in range(failed):
            self._judge(q, START_FAILED, time.monotonic())

    def _on_exit(self, gone: Exit, now: float) -> None:
        """A worker is gone: give its work back, judge its program."""
        worker, status, q = gone.worker, gone.status, self._queue_config(gone.worker.queue)
        state = self.queues.get(q.name)
        window_s = self.config.spawner.crash_window_s
        workers = self.fleet.of_queue(q.name)
        early = bool(
            state and status.ok and state.gave_up_early(workers, gone.runtime_s, now, window_s)
        )
        tempfail = status.code == scaling.EX_TEMPFAIL  # Redis or a dependency was down
        successor = self._successor(q, now)
        recovered = self.recovery.recover(
            q,
            worker.lease.consumer,
            death_reason(worker, status, q),
            uncharged=tempfail,
            successor=successor[0] if successor else None,
        )
        handed = recovered.handed_back if recovered else 0
        if state is not None and handed:
            state.stranded = True
        self._judge(q, exit_facts(worker, status, gone.runtime_s, early, recovered), now)
        if successor and handed:
            self._take_over(q, *successor, handed, now)
        self.workforce.leases.drop(worker.worker_id)
        self.slots.release(q, [worker.lease.consumer])
        self.next_tick = min(self.next_tick, now)

    def _take_over(
        self, q: QueueConfig, consumer: str, live: Worker | None, handed: int, now: float
    ) -> None:
        """The successor got the gone worker's entries: wake it, or start it
        (unless a crash-loop backoff now holds the queue: then the entries
        wait on its name until the next tick parks them)."""
        if live is not None:
            live.handed += handed
            self.recovery.wake([consumer])
        elif not self.queues[q.name].backoff.in_force(now) and self.slots.take(q, [consumer]):
            planned = [Planned(keys.consumer_worker_id(consumer), consumer, handed)]
            draining = self.queues[q.name].control.draining
            started, failed = self.workforce.start(self.config, q, planned, draining)
            self._failed_starts(q, planned, started, failed)

    def _judge(self, q: QueueConfig, facts: scaling.ExitFacts, now: float) -> None:
        """The crash-loop rule on one exit; a backoff logged when it starts."""
        if (state := self.queues.get(q.name)) is None:
            return
        spawner = self.config.spawner
        verdict, was = state.judge(facts, now, spawner.crash_window_s, spawner.crash_backoff_max_s)
        if verdict is scaling.ExitVerdict.CRASH and state.backoff.streak >= 2:
            delay_s = state.backoff.delay_s(now)
            self.log.crash_loop(q, spawner.crash_window_s, state.backoff.streak, delay_s)
        elif verdict is scaling.ExitVerdict.TEMPFAIL and was.reason != scaling.TEMPFAIL_REASON:
            self.log.tempfail(q, scaling.EX_TEMPFAIL, scaling.TEMPFAIL_RETRY_S)

    # -- start-up, status, shutdown -------------------------------------------

    def _startup(self) -> None:
        """Claim the host name, say so, adopt the previous spawner's workers
        (before anything else: a worker still finishing its job would look
        dead). With Redis down, both wait for the first tick that reaches it."""
        try:
            self.claim.claim()
        except HostTaken as exc:
            self._refuse(exc)
            return
        except REDIS_ERRORS as exc:
            self.health.failed(time.monotonic(), exc)
        self.log.start(self.host, os.getpid(), self.config.queues.values())
        if self.claim.claimed:
            try:
                self._claim_and_adopt()
            except REDIS_ERRORS as exc:
                self.health.failed(time.monotonic(), exc)

    def _claim_and_adopt(self) -> None:
        if not self.claim.claimed:
            self.claim.claim()
        if not self.adopted:
            self.workforce.adopt_previous(self.config.queues, self.host, self.recovery.recover)
            for state in self.queues.values():  # they run: they hold their slots
                adopted = [w.lease.consumer for w in self.fleet.of_queue(state.config.name)]
                self.slots.adopt(state.config, adopted)
            self.adopted = True

    def snapshot(self) -> HostStatus:
        now = time.monotonic()
        queues = [s.status(self.fleet.of_queue(n), now) for n, s in self.queues.items()]
        workers = [
            WorkerStatus(w.worker_id, w.queue, w.pid, w.lease.consumer, w.lease.started_at,
                         w.lease.deadline)
            for w in self.fleet
        ]  # fmt: skip
        return HostStatus(
            self.host, os.getpid(), self.started_at, time.time(), queues, workers, self.health.up
        )

    def _finish(self) -> None:
        self.workforce.close()
        if self.telemetry is not None:
            self.telemetry.close()
        self.watch.reset()
        if self.claim.claimed:
            with contextlib.suppress(*REDIS_ERRORS):
                withdraw(self.client, self.host)
                self.claim.release()
        self.log.stopped(self.host)

    def _apply_config(self, config: Config) -> None:
        self.config = config
        self.workforce.stop_grace_s = config.spawner.stop_grace_s
        self.workforce.redis_url = config.redis_url
        apply_config(self.queues, config.queues)
        queues = [s.config for s in self.queues.values()]
        self.retention = Retention(queues, self.log)
        extras: list[TickExtra] = [e for e in (self.retention, self.telemetry) if e is not None]
        self.probe = TickProbe(self.client, self.host, queues, extras)
        self.next_tick = 0.0

    def _queue_config(self, name: str) -> QueueConfig:
        return self.queues[name].config

    def _next_deadline(self) -> float:
        """The earliest monotonic time something is due without a signal."""
        now = time.monotonic()
        due = [now + 3600.0, *self.workforce.due(now, self.config.spawner.poll_interval_s)]
        for state in self.queues.values():
            due.extend(state.due(now))
        return max(min(due), now + MIN_TICK_INTERVAL_S)


def main_loop(config: Config, *, subreaper: bool = True) -> int:
    """``orchestrator run``: a spawner in the foreground until stopped."""
    procs.set_title(f"orch-spawner {config.spawner.host}")
    spawner = WorkerSpawner(config, events=Events(config.log.emoji), subreaper=subreaper)
    try:
        return spawner.run()
    except KeyboardInterrupt:  # pragma: no cover - signals are handled in run()
        return 0
    finally:
        sys.stdout.flush()
