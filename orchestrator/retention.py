"""Bounded Redis memory: every stream queue's stream and dead letters trimmed.

Every ``TRIM_INTERVAL_S`` the spawner's tick carries one more command on its
round trip (so the round trips per tick do not change): ``lua/trim.lua``
over every stream queue's stream, which keeps its newest ``retention``
entries, and its dead-letter stream, which keeps its newest
``max_dead_letters``. The script never removes an entry that a consumer
group still needs (pending on a consumer, or not delivered yet): it trims
no further than the oldest such entry of any group. Dead letters dropped
are counted and logged; entries that every group is done with go quietly.
A ``then`` stream is a queue of its own, and so is the scanner's tick
stream; RQ queues keep RQ's own limits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from orchestrator.config import Backend, QueueConfig
from orchestrator.messages import SpawnerLog
from orchestrator.queues import LAG_COUNT_CAP
from orchestrator.scripts import load_lua
from orchestrator.status import HostStatus

TRIM_INTERVAL_S = 2.0
TRIM_SCRIPT = load_lua("trim.lua")


@dataclass(frozen=True, slots=True)
class Target:
    queue: QueueConfig
    stream: str
    keep: int
    dead_letters: bool  # the queue's dead-letter stream (what it drops is logged)


def targets(queues: Iterable[QueueConfig]) -> list[Target]:
    """What is trimmed: each stream queue's stream and dead letters."""
    out = []
    for q in queues:
        if q.backend is Backend.STREAM:
            out.append(Target(q, q.stream, q.retention, dead_letters=False))
            out.append(Target(q, q.dead_stream, q.max_dead_letters, dead_letters=True))
    return out


def queue_trim(
    pipe: redis.client.Pipeline,
    streams: Sequence[tuple[str, int]],
    count_cap: int = LAG_COUNT_CAP,
) -> None:
    """Queue the trim of ``streams`` (each with the entries it keeps) on
    ``pipe``; its reply: the entries removed from each. ``count_cap``: the
    most entries the script counts to decide how far it may trim (see
    ``lua/trim.lua``). ``EVAL`` rather than ``EVALSHA``: it is sent once in
    a while, and a restarted Redis cannot answer it ``NOSCRIPT``."""
    names, keeps = [name for name, _ in streams], [keep for _, keep in streams]
    pipe.eval(TRIM_SCRIPT, len(names), *names, *keeps, count_cap)


class Retention:
    """The spawner's trimming, on the tick's round trip (a ``TickExtra``)."""

    def __init__(
        self, queues: Iterable[QueueConfig], log: SpawnerLog, interval_s: float = TRIM_INTERVAL_S
    ) -> None:
        self.targets = targets(queues)
        self.log = log
        self.interval_s = interval_s
        self.next_at = 0.0

    def queue_on(self, pipe: redis.client.Pipeline, snapshot: HostStatus) -> int:
        """Queue the trim when it is due; how many commands (0 or 1)."""
        now = time.monotonic()
        if not self.targets or now < self.next_at:
            return 0
        self.next_at = now + self.interval_s
        queue_trim(pipe, [(t.stream, t.keep) for t in self.targets])
        return 1

    def took(self, replies: list[Any], round_trip_s: float) -> None:
        """The trim's reply, when it was queued: the dead letters dropped are logged."""
        if not replies:
            return
        for target, removed in zip(self.targets, replies[0], strict=True):
            if target.dead_letters and removed:
                self.log.dead_letters_dropped(target.queue, int(removed))
