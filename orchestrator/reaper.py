"""Recovering work from consumers that are gone, without losing any.

Seed 001's "fix" for entries stuck on dead consumers was to acknowledge
them all, which throws the work away. Here, entries pending on a consumer
whose worker is gone are *parked*: claimed (JUSTID, keeping their delivery
counts) by the parking consumer ``orch:parked`` of the group, in one Lua
call that also dead-letters the entries already delivered ``max_attempts``
times and deletes the dead consumer once nothing is pending on it. Parked
entries count as backlog; the spawner hands them to the next worker it
starts, or to an idle live worker, which reads its own pending entries
before new ones. A crashed worker's jobs therefore run again as soon as a
worker can take them, typically within a few hundred milliseconds.

Who is gone (``Liveness``):
- a consumer of this host whose worker process is not alive (the spawner
  reaped it, or, at start, its leased pid is gone);
- a consumer of another host only once that host's heartbeat has expired,
  so a live worker's job is never taken from it;
- a consumer we did not name (no ``host/`` prefix) only after it has been
  idle longer than the queue's ``max_runtime`` + ``stop_grace``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from orchestrator import codec, keys
from orchestrator.config import Backend, Config, QueueConfig
from orchestrator.scripts import load_lua

PARKING_CONSUMER = keys.PARKING_CONSUMER


class Liveness(StrEnum):
    LIVE = "live"
    DEAD = "dead"
    PARKING = "parking"


def classify(
    consumer: str,
    own_host: str,
    own_live: Collection[str],
    live_hosts: Collection[str],
    idle_s: float | None = None,
    stale_after_s: float | None = None,
) -> Liveness:
    """Is ``consumer`` still served by a live worker? (pure)"""
    if consumer == PARKING_CONSUMER:
        return Liveness.PARKING
    host = keys.consumer_host(consumer)
    if host is None:  # not ours: only a long silence says it is gone
        stale = idle_s is not None and stale_after_s is not None and idle_s > stale_after_s
        return Liveness.DEAD if stale else Liveness.LIVE
    if host == own_host:
        return Liveness.LIVE if consumer in own_live else Liveness.DEAD
    return Liveness.LIVE if host in live_hosts else Liveness.DEAD


@dataclass(frozen=True, slots=True)
class ParkResult:
    queue: str
    consumer: str
    parked: int
    dead_lettered: int
    deleted: bool
    done: bool = False  # the worker had completed work (orch:done:<consumer>)
    in_hand: bool = False  # it was running entries it had marked in hand


class Reaper:
    """The Lua calls that move entries; one instance per Redis client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._park = client.register_script(load_lua("park.lua"))
        self._hand_out = client.register_script(load_lua("hand_out.lua"))

    def park(
        self,
        queue: QueueConfig,
        consumer: str,
        reason: str,
        dry_run: bool = False,
        uncharged: bool = False,
        to: str = PARKING_CONSUMER,
    ) -> ParkResult:
        """Move everything pending on ``consumer`` to the parking consumer
        (or straight to ``to``, the worker that takes over);
        ``uncharged``: none of its deliveries counts as an attempt."""
        parked, dead, deleted, done, in_hand = self._park(
            keys=[
                queue.stream,
                queue.dead_stream,
                keys.in_hand(consumer),
                keys.worker_done(consumer),
            ],
            args=[
                queue.group,
                consumer,
                to,
                queue.max_attempts,
                reason,
                f"{time.time():.3f}",
                "1" if dry_run else "0",
                "1" if uncharged else "0",
            ],
        )
        return ParkResult(
            queue.name, consumer, int(parked), int(dead), bool(deleted), bool(done), bool(in_hand)
        )

    def hand_out(self, queue: QueueConfig, shares: Mapping[str, int]) -> dict[str, int]:
        """Claim parked entries for consumers: up to ``shares[c]`` each."""
        targets = [(c, n) for c, n in shares.items() if n > 0]
        if not targets:
            return {}
        args: list[Any] = [queue.group, PARKING_CONSUMER]
        for consumer, limit in targets:
            args += [consumer, limit]
        given = self._hand_out(keys=[queue.stream], args=args)
        return {c: int(n) for (c, _), n in zip(targets, given, strict=True) if int(n)}

    def sweep(
        self,
        config: Config,
        is_dead: Callable[[QueueConfig, str, float], str | None],
        dry_run: bool = False,
    ) -> list[ParkResult]:
        """Park and delete every consumer ``is_dead`` names, on every stream.

        ``is_dead(queue, consumer, idle_s)`` returns the reason it is gone, or
        None. Consumers with nothing pending are deleted too.
        """
        results: list[ParkResult] = []
        for queue, rows in self._consumers(config):
            for info in rows:
                name = str(info["name"])
                reason = is_dead(queue, name, float(info.get("idle", 0)) / 1000.0)
                if reason is not None:
                    results.append(self.park(queue, name, reason, dry_run=dry_run))
        return results

    def _consumers(self, config: Config) -> list[tuple[QueueConfig, list[dict[str, Any]]]]:
        """Every stream queue's consumers, in one round trip."""
        queues = [q for q in config.queues.values() if q.backend is Backend.STREAM]
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.xinfo_consumers(queue.stream, queue.group)
        out = []
        for queue, rows in zip(queues, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(rows, redis.ResponseError):  # no stream or group yet: nothing to reap
                continue
            out.append(
                (queue, [{codec.text(k): codec.decoded(v) for k, v in row.items()} for row in rows])
            )
        return out


def split_shares(parked: int, targets: Sequence[str]) -> dict[str, int]:
    """Spread ``parked`` entries as evenly as possible over ``targets``."""
    if not targets or parked <= 0:
        return {}
    base, extra = divmod(parked, len(targets))
    return {t: base + (1 if i < extra else 0) for i, t in enumerate(targets)}
