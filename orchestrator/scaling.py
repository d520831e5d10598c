"""Pure decisions: how many workers to start, and crash-loop backoff.

Nothing here touches processes or Redis, so every rule is unit-tested with
plain values. The spawner gathers the facts (``QueueFacts``) and acts on the
answer.

The rule, per queue::

    wanted = ceil(backlog / jobs_per_worker) - idle_live
    new    = clamp(min(max_concurrent - live - cooling, wanted), 0, ...)

``backlog`` counts only work that no live worker holds (entries not yet
delivered, plus entries pending on dead consumers); ``idle_live`` counts live
workers that hold nothing and will take the next entries. Busy workers are
not subtracted: a queue whose three workers are each ten minutes into a job
still gets a fourth worker (if ``max_concurrent`` allows) for the job that
arrives now, instead of that job waiting behind them (seed 004's rule and
KEDA's default both make it wait). Then the host-wide ``max_total_workers``
is shared out one worker at a time, neediest queue first, and nothing starts
while host memory is above ``max_memory_percent``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class QueueFacts:
    name: str
    max_concurrent: int
    jobs_per_worker: int
    live: int  # workers of this queue alive now (busy or idle)
    idle_live: int  # of those, the ones holding no entries
    backlog: int  # work no live worker holds
    cooling: int = 0  # slots whose worker exited less than ``cooldown`` ago
    blocked: bool = False  # crash-loop backoff in force, or queue retired
    yielding: int = 0  # of the live, those asked to give their slot up
    tenure_s: float = 0.0  # how long its oldest worker not yet yielding has run
    starved_s: float = 0.0  # how long it has had work and no worker


def wanted_new(q: QueueFacts) -> int:
    """Workers this queue would start if the host had room."""
    if q.blocked or q.backlog <= 0:
        return 0
    room = q.max_concurrent - q.live - q.cooling
    wanted = math.ceil(q.backlog / q.jobs_per_worker) - q.idle_live
    return max(0, min(room, wanted))


def plan_spawns(
    queues: Sequence[QueueFacts],
    total_live: int,
    max_total_workers: int,
    memory_ok: bool = True,
) -> dict[str, int]:
    """How many workers to start per queue this tick (only queues with > 0)."""
    if not memory_ok:
        return {}
    wants = {q.name: wanted_new(q) for q in queues}
    live = {q.name: q.live for q in queues}
    room = max(0, max_total_workers - total_live)
    starved = {q.name: q.starved_s for q in queues}
    plan: dict[str, int] = {}
    while room > 0:
        # One at a time, to the queue with the fewest workers (planned
        # included) among those still wanting, the longest without one
        # first: a busy queue can't starve the others of the host-wide cap.
        needy = [name for name, n in wants.items() if n > 0]
        if not needy:
            break
        name = min(needy, key=lambda n: (live[n] + plan.get(n, 0), -starved[n], n))
        plan[name] = plan.get(name, 0) + 1
        wants[name] -= 1
        room -= 1
    return plan


def plan_yields(
    queues: Sequence[QueueFacts], total_live: int, max_total_workers: int, turn_s: float
) -> dict[str, int]:
    """When the host cap binds: how many workers each queue gives up (each
    finishes the job in hand and exits) so that every queue with work gets
    a worker in turn.

    Only queues with work and no worker ask (minus the yields already under
    way). A queue above its fair share of the cap (the cap over the queues
    that want workers) gives first, the fullest first; when none is above it
    (more queues want work than the cap has workers), the queues take turns:
    a queue whose worker has had its slot for ``turn_s`` gives way, the one
    that has held it longest first.
    """
    if total_live < max_total_workers:
        return {}
    wants = {q.name: wanted_new(q) for q in queues}
    starving = [q for q in queues if q.live == 0 and wants[q.name] > 0]
    need = len(starving) - sum(q.yielding for q in queues)
    demanding = [q for q in queues if q.live > 0 or wants[q.name] > 0]
    if need <= 0 or not demanding:
        return {}
    fair = max(1.0, max_total_workers / len(demanding))
    keep = {q.name: q.live - q.yielding for q in queues}
    plan: dict[str, int] = {}
    for _ in range(need):
        over = [q for q in queues if keep[q.name] > fair]
        turns = [
            q for q in queues if keep[q.name] >= 1 and q.tenure_s >= turn_s and q.name not in plan
        ]
        if over:
            donor = max(over, key=lambda q: (keep[q.name], q.tenure_s))
        elif turns:
            donor = max(turns, key=lambda q: q.tenure_s)
        else:
            break
        plan[donor.name] = plan.get(donor.name, 0) + 1
        keep[donor.name] -= 1
    return plan


EX_SOFTWARE = 70  # the worker runtime failed in its own code (sysexits.h)
EX_TEMPFAIL = 75  # Redis or a dependency is down (sysexits.h)
TEMPFAIL_RETRY_S = 1.0  # a queue whose workers wait for a dependency retries this often
CRASH_LOOP_REASON = "crash loop"
TEMPFAIL_REASON = "dependency unavailable"


class ExitVerdict(StrEnum):
    """What a worker's exit says about its program."""

    CRASH = "crash"  # it died (or gave up) young having done nothing: a crash loop?
    TEMPFAIL = "tempfail"  # Redis or a dependency is down: wait for it, do not back off
    STOPPED = "stopped"  # the spawner stopped it: says nothing about the program
    FINE = "fine"  # it worked (or died on a job, which attempts deal with)


@dataclass(frozen=True, slots=True)
class ExitFacts:
    requested: bool  # the spawner asked it to stop (max_runtime, memory, yield, shutdown)
    code: int | None  # exit code, None when killed by a signal or gone
    completed: bool  # it had completed work
    working: bool  # it held entries it had read, or was running marked ones
    runtime_s: float
    early_with_work: bool  # exited 0 before it could have been idle, while work waits


def exit_verdict(f: ExitFacts, crash_window_s: float) -> ExitVerdict:
    """The crash-loop rule: only a worker that completed nothing and was
    not working on a job counts. A job that kills its worker every time is
    charged attempts and dead-lettered, so it needs no backoff; a worker
    killed from outside after doing work (the OOM killer, an operator) says
    nothing against its program; a worker that stops itself for its
    deadline or idle timeout has done what it should."""
    if f.code == EX_TEMPFAIL and not f.requested:
        return ExitVerdict.TEMPFAIL
    if f.completed:
        return ExitVerdict.FINE
    if f.requested:
        return ExitVerdict.STOPPED
    if f.code == EX_SOFTWARE:  # the runtime gave its entries back uncounted
        return ExitVerdict.CRASH
    if f.working or f.runtime_s >= crash_window_s:
        return ExitVerdict.FINE
    if f.code != 0 or f.early_with_work:
        return ExitVerdict.CRASH
    return ExitVerdict.FINE


@dataclass(frozen=True, slots=True)
class Backoff:
    """Why and until when a queue starts no worker after its exits."""

    streak: int = 0  # crash-loop exits in a row
    until: float = 0.0  # monotonic time before which nothing is spawned
    reason: str = ""  # "crash loop" or "dependency unavailable" while in force

    def after_exit(
        self, verdict: ExitVerdict, now: float, base_s: float = 1.0, max_s: float = 300.0
    ) -> Backoff:
        """The state after a worker exit.

        One crash is not yet a loop (a young worker killed from outside):
        its replacement starts at once. From the second in a row the wait is
        base_s, then doubles up to max_s. A dependency outage (EX_TEMPFAIL)
        is retried every ``TEMPFAIL_RETRY_S``, never backed off further, and
        the spawner lifts it the moment Redis answers again.
        """
        if verdict is ExitVerdict.CRASH:
            streak = self.streak + 1
            delay = 0.0 if streak == 1 else min(max_s, base_s * 2 ** (streak - 2))
            return Backoff(streak, now + delay, CRASH_LOOP_REASON if delay else "")
        if verdict is ExitVerdict.TEMPFAIL:
            return Backoff(self.streak, now + TEMPFAIL_RETRY_S, TEMPFAIL_REASON)
        if verdict is ExitVerdict.STOPPED:
            return self
        return Backoff()

    def delay_s(self, now: float) -> float:
        return max(0.0, self.until - now)

    def in_force(self, now: float) -> bool:
        return self.until > now

    def lifted_for_redis(self) -> Backoff:
        """Redis answers again: workers that exited for its outage are not
        waited for (a crash-loop backoff stays)."""
        if self.reason == TEMPFAIL_REASON:
            return Backoff(self.streak)
        return self


def cooling_slots(exit_times: Sequence[float], now: float, cooldown_s: float) -> int:
    """Slots whose worker exited less than ``cooldown_s`` ago."""
    return sum(1 for t in exit_times if 0.0 <= now - t < cooldown_s)


def split_idle(pending_by_consumer: Mapping[str, int], live_consumers: Sequence[str]) -> int:
    """Live consumers that hold no pending entries."""
    return sum(1 for c in live_consumers if pending_by_consumer.get(c, 0) == 0)
