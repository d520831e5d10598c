"""What the spawner remembers about one queue between ticks.

The last probe of its depth, its parked entries, the recent exits of its
workers (for ``cooldown``), its crash-loop backoff, and whether a reload
removed it. From these and the queue's live workers come the facts the pure
``scaling`` rules decide on (how many to start, the demand for global
slots, the crash-loop rule on an exit: ``exit_facts``), and the queue's row
of the status snapshot.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from orchestrator import scaling
from orchestrator.config import Backend, QueueConfig
from orchestrator.control import Control
from orchestrator.fleet import Worker, WorkerFleet
from orchestrator.procs import ExitStatus
from orchestrator.queues import QueueDepth
from orchestrator.status import QueueStatus

if TYPE_CHECKING:
    from orchestrator.recovery import Recovered


@dataclass
class QueueState:
    config: QueueConfig
    exits: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    backoff: scaling.Backoff = field(default_factory=scaling.Backoff)
    depth: QueueDepth | None = None
    parked: int = 0
    stranded: bool = False  # a worker died holding work: refill without cooldown
    retired: bool = False  # removed from the config by a reload
    starved_since: float | None = None  # monotonic: had work and no worker since
    control: Control = field(default_factory=Control)  # the operator's, as last read
    drained: bool = False  # draining, and nothing was held at the last look

    @property
    def max_concurrent(self) -> int:
        """The operator's ``scale``, else the config's ``max_concurrent``."""
        return self.config.max_concurrent if self.control.scale is None else self.control.scale

    def host_max(self, live: int) -> int:
        """Most workers here now: ``max_concurrent``, within what the queue's
        global slots leave (as the last probe counted them)."""
        cap = self.config.global_max_concurrent
        if cap is None or self.depth is None:
            return self.max_concurrent
        return min(self.max_concurrent, live + max(0, cap - self.depth.global_slots))

    def follow_control(self, workers: Sequence[Worker]) -> tuple[Control, bool] | None:
        """Take the operator's control from the last probe; (the one before,
        whether the queue is newly drained) when something changed."""
        was, drained = self.control, self.drained
        self.control = Control.from_fields(self.depth.control) if self.depth else Control()
        held = (self.depth.pending if self.depth else 0) + self.parked
        self.drained = self.control.draining and not workers and held == 0
        if self.control == was and self.drained == drained:
            return None
        return was, self.drained and not drained

    def facts(
        self, workers: Sequence[Worker], now: float, backlog: int | None = None
    ) -> scaling.QueueFacts:
        """The scaling facts; ``backlog`` overrides the measured one."""
        q, depth = self.config, self.depth
        held = depth.pending_by_consumer if depth else {}
        if backlog is None and self.control.draining:  # only what is held is worked off
            backlog = self.parked
        elif backlog is None:
            backlog = (depth.undelivered if depth else 0) + self.parked
        cooling = 0 if self.stranded else scaling.cooling_slots(self.exits, now, q.cooldown_s)
        if q.backend is Backend.RQ:  # RQ names no holder: its started jobs keep as many busy
            idle = max(0, len(workers) - (depth.pending if depth else 0))
        else:
            idle = scaling.split_idle(held, [w.lease.consumer for w in workers])
        staying = [w for w in workers if w.stop_reason is None]
        return scaling.QueueFacts(
            name=q.name,
            max_concurrent=self.host_max(len(workers)),
            jobs_per_worker=q.jobs_per_worker,
            live=len(workers),
            idle_live=idle,
            backlog=backlog,
            cooling=cooling,
            blocked=self.retired or self.control.paused or self.backoff.in_force(now),
            yielding=len(workers) - len(staying),
            tenure_s=max((w.runtime_s(now) for w in staying), default=0.0),
            starved_s=0.0 if self.starved_since is None else now - self.starved_since,
        )

    def note_starving(self, workers: Sequence[Worker], now: float) -> None:
        """Track since when the queue has had work but no worker (for fair turns)."""
        waiting = not workers and (self.parked > 0 or (self.depth and self.depth.undelivered > 0))
        if not waiting:
            self.starved_since = None
        elif self.starved_since is None:
            self.starved_since = now

    def holds(self, worker: Worker) -> int:
        """Entries pending on ``worker`` at the last probe."""
        return self.depth.pending_by_consumer.get(worker.lease.consumer, 0) if self.depth else 0

    def idle(self, workers: Sequence[Worker]) -> list[Worker]:
        """Those of ``workers`` that held nothing at the last probe."""
        return [w for w in workers if self.holds(w) == 0]

    def demand(self, workers: Sequence[Worker], now: float) -> int:
        """Workers this host wants of the queue, whatever the other hosts
        hold: what it claims a fair share of (``slots``)."""
        facts = self.facts(workers, now)
        alone = replace(facts, max_concurrent=self.max_concurrent)
        return facts.live + scaling.wanted_new(alone)

    def judge(
        self, facts: scaling.ExitFacts, now: float, window_s: float, backoff_max_s: float
    ) -> tuple[scaling.ExitVerdict, scaling.Backoff]:
        """Record a worker's exit (for ``cooldown``) and apply the crash-loop
        rule to it; the verdict, and the backoff as it was before."""
        verdict = scaling.exit_verdict(facts, window_s)
        was = self.backoff
        self.exits.append(now)
        self.backoff = self.backoff.after_exit(verdict, now, max_s=backoff_max_s)
        return verdict, was

    def gave_up_early(
        self, workers: Sequence[Worker], runtime_s: float, now: float, window_s: float
    ) -> bool:
        """A clean exit sooner than the worker could have been idle for
        ``idle_timeout``, while work waits: a script that exits 0 at once
        must not be respawned in a tight loop."""
        if runtime_s >= min(self.config.idle_timeout_s, window_s):
            return False
        return self.facts(workers, now).backlog > 0

    def due(self, now: float) -> list[float]:
        """When backoff or a cooling slot ends: a tick may then spawn."""
        times = [self.backoff.until] if self.backoff.until > now else []
        cooldown = self.config.cooldown_s
        return times + [t + cooldown for t in self.exits if t + cooldown > now]

    def status(self, workers: Sequence[Worker], now: float) -> QueueStatus:
        q, d = self.config, self.depth
        control = "drained" if self.drained else self.control.describe()
        facts = self.facts(workers, now)
        return QueueStatus(
            name=q.name,
            label=q.label,
            live=len(workers),
            max_concurrent=self.max_concurrent,
            backlog=(d.undelivered if d else 0) + self.parked,
            pending=d.pending - self.parked if d else 0,
            oldest_age_s=d.oldest_age_s if d else None,
            dead_letters=d.dead_letters if d else 0,
            backlog_exact=d.exact if d else True,
            backoff_s=round(self.backoff.delay_s(now), 1),
            backoff_reason=self.backoff.reason if self.backoff.in_force(now) else "",
            control=control,
            throttled=bool(d and d.throttled),
            global_live=d.global_slots if d and q.global_max_concurrent else None,
            global_max=q.global_max_concurrent,
            rate_limit=q.rate_limit.text if q.rate_limit else None,
            busy=facts.live - facts.idle_live,
        )


def demand(queues: Mapping[str, QueueState], fleet: WorkerFleet, now: float) -> dict[str, int]:
    """``QueueState.demand`` of every globally capped queue still configured."""
    return {
        name: state.demand(fleet.of_queue(name), now)
        for name, state in queues.items()
        if state.config.global_max_concurrent is not None and not state.retired
    }


START_FAILED = scaling.ExitFacts(
    requested=False, code=None, completed=False, working=False, runtime_s=0.0, early_with_work=False
)


def exit_facts(
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


def apply_config(queues: dict[str, QueueState], configured: Mapping[str, QueueConfig]) -> None:
    """Follow a (re)loaded config: new queues join; removed ones retire, so
    their workers finish while nothing new starts for them."""
    for name, state in queues.items():
        state.retired = name not in configured
        if not state.retired:
            if configured[name] != state.config:  # a fixed program gets a fresh start
                state.backoff = scaling.Backoff()
            state.config = configured[name]
    for name, q in configured.items():
        queues.setdefault(name, QueueState(config=q))
