"""Workers in and out, as the spawner decides them.

A worker starts with its share of the queue's parked entries handed to it
and its global slot taken (a start that fails counts for the crash loop).
When one is gone, its work goes on at once: straight to a successor in the
same call that takes it from the gone worker (``Recovery.recover``), an
idle live worker of the queue or a worker started for it, else parked for
the next tick; then its program is judged (the crash-loop rule,
``queuestate``). A job arriving on a watched stream starts its worker
straight from the watch's reply. Parked entries left over go to idle
workers; a pause or a drain asks the live workers to give their slots up.
"""

from __future__ import annotations

import time
from dataclasses import replace

from orchestrator import keys, scaling
from orchestrator.config import Backend, Config, QueueConfig
from orchestrator.fleet import Worker
from orchestrator.memory import HostMemory
from orchestrator.messages import SpawnerLog, death_reason, held_back
from orchestrator.queuestate import START_FAILED, QueueState, exit_facts
from orchestrator.recovery import Recovery
from orchestrator.workforce import Exit, Planned, Workforce


class Staffing:
    """The spawner's starts and exits; ``queues`` is the spawner's own (a
    reload changes it in place), ``config`` is set again on a reload."""

    def __init__(
        self,
        config: Config,
        queues: dict[str, QueueState],
        workforce: Workforce,
        recovery: Recovery,
        memory: HostMemory,
        log: SpawnerLog,
    ) -> None:
        self.config = config
        self.host = config.spawner.host
        self.queues = queues
        self.workforce = workforce
        self.fleet = workforce.fleet
        self.recovery = recovery
        self.memory = memory
        self.log = log

    def facts(self, name: str, now: float, backlog: int | None = None) -> scaling.QueueFacts:
        return self.queues[name].facts(self.fleet.of_queue(name), now, backlog)

    def room(self, name: str, now: float) -> int:
        """Workers this queue could start now if it had the work for them."""
        return scaling.wanted_new(self.facts(name, now, self.queues[name].config.max_concurrent))

    def idle(self, state: QueueState) -> list[Worker]:
        """The queue's live workers that hold nothing and are not stopping."""
        workers = self.fleet.of_queue(state.config.name)
        return [w for w in state.idle(workers) if w.stop_reason is None]

    # -- in -------------------------------------------------------------------

    def start(self, q: QueueConfig, parked_shares: list[int]) -> list[Worker]:
        """Start a worker per share, at once (as many as the queue's global
        slots allow); each is handed its share of the parked entries before
        it runs."""
        state = self.queues[q.name]
        ids = [self.fleet.new_worker_id(q.label.lower(), time.time()) for _ in parked_shares]
        consumers = [keys.consumer_name(self.host, w) for w in ids]
        granted = self.workforce.slots.take(q, consumers)
        planned = []
        for worker_id, consumer, share in zip(
            ids[:granted], consumers, parked_shares, strict=False
        ):
            handed = self.recovery.hand_out(q, {consumer: share}).get(consumer, 0) if share else 0
            state.parked -= handed
            planned.append(Planned(worker_id, consumer, handed))
        return self._launch(q, planned)

    def start_on_wake(self, streams: list[str], now: float) -> None:
        """A job arrived on a queue with room: start its worker now, straight
        from the watch's reply; the tick that follows corrects the rest."""
        if not self.memory.ok:
            return
        for state in self.queues.values():
            room = len(self.fleet) < self.config.spawner.max_total_workers
            if room and state.config.stream in streams and not state.retired:
                backlog = max(1, self.facts(state.config.name, now).backlog)
                if scaling.wanted_new(self.facts(state.config.name, now, backlog)) > 0:
                    self.start(state.config, [0])

    def watched(self, now: float) -> dict[str, str]:
        """The streams whose next job starts a worker at once (they have
        room for one), each from the last entry the tick saw."""
        return {
            s.config.stream: s.depth.last_id
            for s in self.queues.values()
            if s.config.backend is Backend.STREAM and s.depth is not None
            if self.room(s.config.name, now) > 0
        }

    def _launch(self, q: QueueConfig, planned: list[Planned]) -> list[Worker]:
        """Start the planned workers; a start that fails counts for the crash loop."""
        draining = self.queues[q.name].control.draining
        workers, failed = self.workforce.start(self.config, q, planned, draining)
        for _ in range(failed):
            self._judge(q, START_FAILED, time.monotonic())
        return workers

    def hand_out_leftovers(self) -> None:
        """Parked entries left over go to live workers that hold nothing."""
        for state in self.queues.values():
            idle = self.idle(state)
            state.parked -= self.recovery.hand_out_to_idle(state.config, state.parked, idle)

    # -- out ------------------------------------------------------------------

    def follow_control(self, state: QueueState) -> None:
        """The operator's word on the queue (read with the tick): said in the
        log; a pause or a drain asks the live workers to stop after their job."""
        workers = self.fleet.of_queue(state.config.name)
        if (change := state.follow_control(workers)) is None:
            return
        was, drained = change
        self.log.control(state.config, was, state.control, drained)
        if state.control.holds_back and not was.holds_back:
            why = held_back(state.config, state.control)
            self.workforce.ask_all_to_yield(workers, state.config, why)

    def on_exit(self, gone: Exit, now: float, stopping: bool) -> None:
        """A worker is gone: give its work back, judge its program."""
        worker, status, state = gone.worker, gone.status, self.queues[gone.worker.queue]
        q, window_s = state.config, self.config.spawner.crash_window_s
        workers = self.fleet.of_queue(q.name)
        early = status.ok and state.gave_up_early(workers, gone.runtime_s, now, window_s)
        successor = None if stopping else self._successor(state, now)
        recovered = self.recovery.recover(
            q,
            worker.lease.consumer,
            death_reason(worker, status, q),
            uncharged=status.code == scaling.EX_TEMPFAIL,  # Redis or a dependency was down
            successor=successor[0] if successor else None,
        )
        handed = recovered.handed_back if recovered else 0
        state.stranded = state.stranded or handed > 0
        self._judge(q, exit_facts(worker, status, gone.runtime_s, early, recovered), now)
        if successor and handed:
            self._take_over(q, *successor, handed, now)
        self.workforce.forget(worker, q)

    def _successor(self, state: QueueState, now: float) -> tuple[str, Worker | None] | None:
        """Who takes a gone worker's entries at once (in the same call that
        takes them from it): an idle live worker of the queue, else a worker
        about to start, if the queue has room; None: they are parked."""
        q = state.config
        if state.retired or q.backend is not Backend.STREAM:
            return None
        if idle := self.idle(state):
            return idle[0].lease.consumer, idle[0]
        facts = replace(self.facts(q.name, now, 1), cooling=0)
        room = len(self.fleet) < self.config.spawner.max_total_workers and self.memory.ok
        if not room or scaling.wanted_new(facts) <= 0:
            return None
        worker_id = self.fleet.new_worker_id(q.label.lower(), time.time())
        return keys.consumer_name(self.host, worker_id), None

    def _take_over(
        self, q: QueueConfig, consumer: str, live: Worker | None, handed: int, now: float
    ) -> None:
        """The successor got the gone worker's entries: wake it, or start it
        (unless a crash-loop backoff now holds the queue: then the entries
        wait on its name until the next tick parks them)."""
        if live is not None:
            live.handed += handed
            self.recovery.wake([consumer])
        elif not self.queues[q.name].backoff.in_force(now) and self.workforce.slots.take(
            q, [consumer]
        ):
            self._launch(q, [Planned(keys.consumer_worker_id(consumer), consumer, handed)])

    def _judge(self, q: QueueConfig, facts: scaling.ExitFacts, now: float) -> None:
        """The crash-loop rule on one exit; a backoff logged when it starts."""
        state, spawner = self.queues[q.name], self.config.spawner
        verdict, was = state.judge(facts, now, spawner.crash_window_s, spawner.crash_backoff_max_s)
        self.log.judged(q, verdict, was, state.backoff, now, spawner.crash_window_s)
