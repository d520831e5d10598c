"""The WorkerSpawner: keeps the right number of workers alive per queue.

A reconcile loop, as in circus. It sleeps in one ``select`` on the signal
pipe (SIGCHLD, SIGTERM/SIGINT, SIGHUP), an outstanding ``XREAD`` on the
streams that have room for more workers (a job on an idle system starts a
worker within milliseconds) and a timer (``wakeups``). A tick is one Redis
round trip (``TickProbe``; every few seconds it trims the streams too:
``Retention``); then the pure rules of ``scaling`` decide, and the spawner
acts: dead consumers' entries parked and handed on (``Recovery``, the only
way to the reaper), workers started or asked to give their slot up
(``Staffing``, over the ``Workforce`` of processes). An exit is handled the
moment SIGCHLD arrives: reaped, its work given back, its program judged
(the crash-loop rule). The seed's API (``spawn_worker`` and the rest) is
``spawner_api``'s.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import redis

from orchestrator import keys, procs, scaling
from orchestrator.config import Config, ConfigError, QueueConfig, load_config
from orchestrator.connections import REDIS_ERRORS, RedisHealth, connect
from orchestrator.fleet import StopReason
from orchestrator.hostclaim import HostClaim, HostTaken
from orchestrator.logs import Events
from orchestrator.memory import HostMemory, stop_over_cap
from orchestrator.messages import SpawnerLog
from orchestrator.queues import QueueDepth, StreamWatch, TickExtra, TickProbe
from orchestrator.queuestate import QueueState, apply_config, demand
from orchestrator.recovery import Recovery, shares_of_new
from orchestrator.retention import Retention
from orchestrator.spawner_api import SeedAPI
from orchestrator.staffing import Staffing
from orchestrator.status import HostStatus, host_status, status_line
from orchestrator.telemetry import Telemetry
from orchestrator.wakeups import next_deadline, sleep_until
from orchestrator.workforce import Workforce

SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SWEEP_INTERVAL_S = 30.0
# When the host cap binds and more queues want workers than it allows, a
# queue whose worker has held its slot this long gives it up to one waiting.
YIELD_TURN_S = 2.0
EXIT_HOST_TAKEN = 2


class WorkerSpawner(SeedAPI):
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
        self.workforce = Workforce(self.client, self.host, self.log, subreaper)
        self.fleet = self.workforce.fleet
        self.queues: dict[str, QueueState] = {}
        self.watch = StreamWatch(self.client)
        self.health = RedisHealth(self.log.events, config.redis_url)
        self.recovery = Recovery(self.client, self.log.events, self.health, self.telemetry)
        self.claim = HostClaim(self.client, self.host, config.spawner.heartbeat_ttl_s)
        self.memory = HostMemory(self.log)
        self.staffing = Staffing(
            config, self.queues, self.workforce, self.recovery, self.memory, self.log
        )
        self.refused: HostTaken | None = None
        self.started_at = time.time()
        self.stopping = False
        self.next_tick = self.next_status = self.next_sweep = 0.0
        self._apply_config(config)

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
                self._sleep(wakeup)
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
            self.staffing.on_exit(gone, now, self.stopping)
            self.next_tick = min(self.next_tick, now)
        self.workforce.tidy()
        if woken := self._watch_fired():
            if not self.stopping:
                self.staffing.start_on_wake(woken, now)
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

    def _sleep(self, wakeup: procs.SignalWakeup) -> None:
        """Until a signal, a watched stream or the earliest deadline (``wakeups``)."""
        now = time.monotonic()
        due = self.workforce.due(now, self.config.spawner.poll_interval_s)
        due += [t for state in self.queues.values() for t in state.due(now)]
        until = min(next_deadline(now, due), self.next_tick, self.next_status)
        if self.watch.missed:  # a wake collected while re-arming: act on it now
            until = now
        sleep_until(until, [wakeup.fileno(), self.watch.fileno()], self.stopping)

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
        wanted = demand(self.queues, self.fleet, time.monotonic())
        reading = self.probe.read(self.snapshot(), self.config.spawner.heartbeat_ttl_s, wanted)
        self.claim.verify(reading.holder)
        for name, depth in reading.depths.items():
            self.queues[name].depth = depth
        return reading.depths, reading.live_hosts

    def _reconcile(self, depths: dict[str, QueueDepth], live_hosts: set[str], now: float) -> None:
        own_live = self.fleet.consumers()
        for name, depth in depths.items():
            state = self.queues[name]
            pending = depth.pending_by_consumer
            state.parked = self.recovery.recover_dead(
                state.config, pending, self.host, own_live, live_hosts
            )
            state.note_starving(self.fleet.of_queue(name), now)
            self.staffing.follow_control(state)
        self.memory.check(self.config.spawner.max_memory_percent)
        stop_over_cap(self.workforce, self._queue_config)
        if not self.stopping:
            self._spawn_planned(now)
        self.staffing.hand_out_leftovers()
        self._arm_watch(now)

    def _spawn_planned(self, now: float) -> None:
        facts = [self.staffing.facts(n, now) for n, s in self.queues.items() if not s.retired]
        max_total = self.config.spawner.max_total_workers
        plan = scaling.plan_spawns(facts, len(self.fleet), max_total, self.memory.ok)
        if not plan and self.memory.ok:
            yields = scaling.plan_yields(facts, len(self.fleet), max_total, YIELD_TURN_S)
            for name, count in yields.items():
                state, workers = self.queues[name], self.fleet.of_queue(name)
                self.workforce.yield_slots(state.config, workers, state.holds, count, max_total)
        for name, count in plan.items():
            state = self.queues[name]
            # Parked entries are shared between the new workers and the idle
            # live ones (those get theirs in Recovery.hand_out_to_idle).
            idle = state.idle(self.fleet.of_queue(name))
            self.staffing.start(state.config, shares_of_new(state.parked, count, len(idle)))
            state.stranded = False

    def _arm_watch(self, now: float) -> None:
        """Watch the streams with room for a worker, and the host's wake
        stream (a worker gave entries back: they are handed on at once)."""
        if self.stopping:
            self.watch.arm({})
            return
        positions = self.staffing.watched(now)
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
        self.claim.claim_again()
        held = [state.config for state in self.queues.values()]
        self.workforce.adopt_previous(self.config.queues, self.host, self.recovery.recover, held)

    def snapshot(self) -> HostStatus:
        now = time.monotonic()
        queues = [s.status(self.fleet.of_queue(n), now) for n, s in self.queues.items()]
        return host_status(self.host, self.started_at, queues, self.fleet, self.health.up)

    def _finish(self) -> None:
        self.workforce.close()
        if self.telemetry is not None:
            self.telemetry.close()
        self.watch.reset()
        self.claim.leave()
        self.log.stopped(self.host)

    def _apply_config(self, config: Config) -> None:
        self.config = self.staffing.config = config
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
