"""The pool's pure decisions: how many workers, how deep their queues, how long to linger.

No processes, no sockets: ``plan_workers`` says how many workers to start
or retire, ``dispatch_depth`` how many tasks a worker may hold,
``plan_grants`` how many each worker is given now,
``linger_time`` how long results may pile up before the parent looks. The
pool acts on them (``pool``), and they are tested on their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_LINGER_S",
    "REACTION_S",
    "WorkerPlan",
    "dispatch_depth",
    "linger_time",
    "plan_grants",
    "plan_workers",
]

REACTION_S = 0.05
"""Work a worker should hold queued to cover the parent's reaction time,
which on a loaded machine (the parent waits for a core too) reaches tens of
milliseconds. Prefetching more only makes tasks wait behind a slow one."""

MAX_LINGER_S = 0.02
"""Longest the parent lets results pile up while every worker has work queued:
one wake-up then handles several results (the parent shares the cores). Well
under ``REACTION_S``: a worker's queue outlasts it."""


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    start: int  # workers to start
    retire: int  # idle workers to let go
    slots: int  # workers that may hold tasks


def plan_workers(
    *,
    size: int,
    max_spare: int,
    standby: int,
    live: int,
    stalled: int,
    idle: int,
    has_pending: bool,
) -> WorkerPlan:
    """The workers a pool needs now.

    ``size`` may hold tasks, plus one per stalled worker (at most
    ``max_spare``) while tasks wait, so that ``size`` workers can use the
    CPU. ``standby`` more are kept started and idle, to take over at once
    from a worker that stalls, is killed or dies (and not to be forked and
    warmed up while the others compute).
    """
    slots = size + (min(stalled, max_spare) if has_pending else 0)
    wanted = slots + standby
    if live < wanted:
        return WorkerPlan(wanted - live, 0, slots)
    return WorkerPlan(0, min(idle, live - wanted), slots)


def dispatch_depth(task_s: float | None, prefetch: int) -> int:
    """Tasks a worker may hold: the running one, plus enough queued to last
    ``REACTION_S`` (more only makes them wait behind a slow task), at most
    ``prefetch``; all of ``prefetch`` while task durations are unknown."""
    if task_s is None:
        return prefetch
    return max(1, min(prefetch, 1 + int(REACTION_S / max(task_s, 1e-6))))


def plan_grants(
    held: Sequence[int], holders: int, slots: int, pending: int, max_depth: int
) -> list[int]:
    """How many tasks each ready worker should hold once topped up (``held``:
    what each holds now; ``holders``: the live workers holding any).

    Idle ones get a first task while fewer than ``slots`` workers hold some;
    then those holding tasks are raised to ``max_depth`` but never beyond
    their share of the ``pending`` tasks left (guided self-scheduling: queues
    shrink as a batch drains, so the workers finish together). The shares
    never add up to more than ``pending``."""
    wanted = list(held)
    for i, count in enumerate(wanted):
        if pending and not count and holders < slots:
            wanted[i], holders, pending = 1, holders + 1, pending - 1
    depth = min(1 + pending // max(1, holders), max_depth)
    return [max(count, depth) if count else 0 for count in wanted]


def linger_time(task_s: float | None, queued: Sequence[int]) -> float:
    """How long results may pile up before the parent looks: half the work
    the least busy worker still has queued behind its running task (``queued``
    holds each active worker's count), at most ``MAX_LINGER_S``; 0 when too
    short to matter."""
    if task_s is None or not queued:
        return 0.0
    linger = min(MAX_LINGER_S, 0.5 * min(queued) * task_s)
    return linger if linger >= MAX_LINGER_S / 10 else 0.0
