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
    plan: dict[str, int] = {}
    while room > 0:
        # One at a time, to the queue with the fewest workers (planned
        # included) among those still wanting: a busy queue can't starve
        # the others of the host-wide cap.
        needy = [name for name, n in wants.items() if n > 0]
        if not needy:
            break
        name = min(needy, key=lambda n: (live[n] + plan.get(n, 0), n))
        plan[name] = plan.get(name, 0) + 1
        wants[name] -= 1
        room -= 1
    return plan


@dataclass(frozen=True, slots=True)
class Backoff:
    """Crash-loop state of one queue: consecutive quick failures."""

    streak: int = 0
    until: float = 0.0  # monotonic time before which nothing is spawned

    def after_exit(
        self,
        now: float,
        runtime_s: float,
        failed: bool,
        window_s: float,
        base_s: float = 1.0,
        max_s: float = 300.0,
    ) -> Backoff:
        """The state after a worker exit: quick failures double the wait.

        One quick failure is not yet a loop (a young worker killed by the
        OOM killer or an operator): its replacement starts at once, so the
        work it held runs again without delay. From the second in a row the
        wait is base_s, then doubles up to max_s.
        """
        if not failed or runtime_s >= window_s:
            return Backoff()
        streak = self.streak + 1
        delay = 0.0 if streak == 1 else min(max_s, base_s * 2 ** (streak - 2))
        return Backoff(streak=streak, until=now + delay)

    def delay_s(self, now: float) -> float:
        return max(0.0, self.until - now)


def cooling_slots(exit_times: Sequence[float], now: float, cooldown_s: float) -> int:
    """Slots whose worker exited less than ``cooldown_s`` ago."""
    return sum(1 for t in exit_times if 0.0 <= now - t < cooldown_s)


def split_idle(pending_by_consumer: Mapping[str, int], live_consumers: Sequence[str]) -> int:
    """Live consumers that hold no pending entries."""
    return sum(1 for c in live_consumers if pending_by_consumer.get(c, 0) == 0)
