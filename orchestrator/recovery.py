"""Giving a gone worker's work back, from the spawner's side.

The spawner reaches the reaper only through ``Recovery``: parking a gone
consumer's entries (``recover``, straight to a successor when one can take
them; ``recover_dead`` for those the tick's probe finds), handing parked
ones to workers (``hand_out``: to a worker about to start, its share by
``shares_of_new``; ``hand_out_to_idle``: to live workers that hold
nothing), the periodic sweep.

A stream worker's pending entries are parked (see ``reaper``); an RQ
worker's started jobs go through RQ's own abandoned-job logic (see
``rq_backend``). While Redis is unreachable the recoveries wait in a list
and are retried, in order, once it answers again: nothing is dropped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from loguru import logger

from orchestrator import codec, keys
from orchestrator.config import Backend, Config, QueueConfig
from orchestrator.connections import REDIS_ERRORS, RedisHealth
from orchestrator.logs import Events
from orchestrator.reaper import PARKING_CONSUMER, Liveness, Reaper, classify, split_shares

if TYPE_CHECKING:
    from orchestrator.fleet import Worker
    from orchestrator.telemetry import Telemetry


def entries_text(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a gone worker left: the crash-loop rule reads ``done`` and ``in_hand``."""

    handed_back: int  # jobs that will run again
    held: int  # entries (or RQ jobs) it held when it went: handed back or dead-lettered
    done: bool  # it had completed work
    in_hand: bool  # it was running entries it had marked in hand


class Recovery:
    """Recover, log, and defer while Redis is down. A ``telemetry`` observes
    the entries recovered, dead-lettered and handed on."""

    def __init__(
        self,
        client: redis.Redis,
        events: Events,
        health: RedisHealth,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.client = client
        self.events = events
        self.health = health
        self.telemetry = telemetry
        self.reaper = Reaper(client)
        self.deferred: list[tuple[QueueConfig, str, str, bool]] = []

    def recover(
        self,
        q: QueueConfig,
        consumer: str,
        reason: str,
        uncharged: bool = False,
        successor: str | None = None,
    ) -> Recovered | None:
        """Give ``consumer``'s work back; None when that must wait (Redis is
        down: retried later) or Redis refused. ``uncharged``: the worker left
        for an outage (EX_TEMPFAIL), so none of its deliveries was an attempt.
        ``successor``: a stream consumer that is about to start, to which the
        entries go straight (in the same call) instead of being parked."""
        try:
            if q.backend is Backend.RQ:
                return self._requeue_rq(q, consumer, reason)
            return self._park(q, consumer, reason, uncharged, successor)
        except REDIS_ERRORS as exc:
            self.deferred.append((q, consumer, reason, uncharged))
            self.health.failed(time.monotonic(), exc)
            return None
        except redis.RedisError as exc:  # Redis refused: say so, and keep serving
            self.events.error(
                "recover_failed",
                "❌",
                f"Could not recover the work of {consumer} ({q.label}): {exc}",
                queue=q.name,
                consumer=consumer,
            )
            return None

    def recover_dead(
        self,
        q: QueueConfig,
        pending: Mapping[str, int],
        host: str,
        own_live: Collection[str],
        live_hosts: Collection[str],
    ) -> int:
        """Recover the consumers of ``q`` that are gone, among those the
        tick's probe found holding entries (``pending``); the entries parked
        now, in all."""
        parked = pending.get(PARKING_CONSUMER, 0)
        for consumer, n in pending.items():
            if n and classify(consumer, host, own_live, live_hosts) is Liveness.DEAD:
                recovered = self.recover(q, consumer, "worker lost")
                parked += recovered.handed_back if recovered else 0
        return parked

    def hand_out_to_idle(self, q: QueueConfig, parked: int, idle: Sequence[Worker]) -> int:
        """Parked entries left over go to live workers that hold nothing,
        shared evenly; how many were given."""
        if parked <= 0 or not idle:
            return 0
        shares = split_shares(parked, [w.lease.consumer for w in idle])
        given = self.hand_out(q, shares, wake=True)
        for w in idle:
            w.handed += given.get(w.lease.consumer, 0)
        return sum(given.values())

    def hand_out(
        self, q: QueueConfig, shares: Mapping[str, int], wake: bool = False
    ) -> dict[str, int]:
        """Give parked entries to consumers, up to ``shares[c]`` each; how
        many each got. ``wake``: they are live workers, perhaps blocked in a
        read: ``CLIENT UNBLOCK`` them so they see their entries at once."""
        if q.backend is not Backend.STREAM:
            return {}
        given = self.reaper.hand_out(q, shares)
        if self.telemetry is not None and given:
            self.telemetry.handed_on(q.name, sum(given.values()))
        if wake and given:
            self.wake(list(given))
        return given

    def wake(self, consumers: list[str]) -> None:
        """Cut live workers' blocking reads short (``CLIENT UNBLOCK`` of the
        client id in their heartbeat, or of the connection named after them
        when the heartbeat is not written yet), so they read what they were
        given."""
        ids: list[Any] = []
        unknown = []
        for consumer, raw in zip(
            consumers, self.client.mget([keys.worker_heartbeat(c) for c in consumers]), strict=True
        ):
            client_id = json.loads(raw).get("client_id") if raw else None
            if isinstance(client_id, int):
                ids.append(client_id)
            else:
                unknown.append(consumer)
        if unknown:  # rare: a worker woken in its first milliseconds
            named = {codec.text(c.get("name", "")): c.get("id") for c in self.client.client_list()}
            ids += [named[c] for c in unknown if c in named]
        for client_id in ids:
            self.client.client_unblock(client_id)

    def retry_deferred(self) -> None:
        """Run the recoveries an outage held back; stop at the first failure."""
        todo, self.deferred = self.deferred, []
        for i, (q, consumer, reason, uncharged) in enumerate(todo):
            self.recover(q, consumer, reason, uncharged)  # re-defers itself while Redis is down
            if self.deferred:
                self.deferred.extend(todo[i + 1 :])
                return

    def _park(
        self, q: QueueConfig, consumer: str, reason: str, uncharged: bool, to: str | None
    ) -> Recovered:
        since = time.monotonic()
        result = self.reaper.park(
            q, consumer, reason, uncharged=uncharged, to=to or PARKING_CONSUMER
        )
        if self.telemetry is not None:
            self._observe(q, result.parked, result.dead_lettered, since, straight=to is not None)
        if result.parked:
            self.events.info(
                "parked",
                "♻️",
                f"Recovered {entries_text(result.parked)} of {keys.consumer_worker_id(consumer)} "
                f"for {q.label}: they go to the next worker",
                queue=q.name,
                consumer=consumer,
                count=result.parked,
            )
        if result.dead_lettered:
            self.events.warning(
                "dead_letter",
                "☠️",
                f"Dead-lettered {entries_text(result.dead_lettered)} of {q.label} to "
                f"{q.dead_stream} after {q.max_attempts} attempts: {reason}",
                queue=q.name,
                consumer=consumer,
                count=result.dead_lettered,
            )
        held = result.parked + result.dead_lettered
        return Recovered(result.parked, held, result.done, result.in_hand)

    def _observe(
        self, q: QueueConfig, parked: int, dead: int, since: float, straight: bool
    ) -> None:
        """Count a recovery; time it now when its entries went straight on."""
        assert self.telemetry is not None
        self.telemetry.recovered_entries(q.name, parked, dead, None if straight else since)
        if straight and parked:
            self.telemetry.handed_on(q.name, parked, since)

    def _requeue_rq(self, q: QueueConfig, consumer: str, reason: str) -> Recovered:
        from orchestrator.rq_backend import recover_worker

        since = time.monotonic()
        result = recover_worker(self.client, q.name, consumer, reason, q.serializer)
        if self.telemetry is not None:  # RQ's requeue is the hand-on
            self._observe(q, result.requeued, result.failed, since, straight=True)
        if result.requeued:
            self.events.info(
                "requeued",
                "♻️",
                f"Requeued {result.requeued} RQ job(s) of {keys.consumer_worker_id(consumer)} "
                f"for {q.label} ({reason})",
                queue=q.name,
                consumer=consumer,
                count=result.requeued,
            )
        if result.failed:
            self.events.warning(
                "dead_letter",
                "☠️",
                f"{result.failed} RQ job(s) of {q.label} failed after {q.max_attempts} "
                f"attempts: {reason}",
                queue=q.name,
                count=result.failed,
            )
        held = result.requeued + result.failed
        return Recovered(result.requeued, held, result.done, in_hand=held > 0)

    def sweep(
        self, config: Config, host: str, own_live: Collection[str], live_hosts: Collection[str]
    ) -> None:
        """Park and delete the gone consumers the per-tick probe cannot see:
        those with nothing pending, and foreign ones silent for too long."""
        grace = config.spawner.stop_grace_s

        def is_dead(q: QueueConfig, consumer: str, idle_s: float) -> str | None:
            stale_after = q.max_runtime_s + grace
            verdict = classify(consumer, host, own_live, live_hosts, idle_s, stale_after)
            if verdict is not Liveness.DEAD:
                return None
            if keys.consumer_host(consumer) not in (None, host):
                return "worker lost: host heartbeat expired"
            return "worker lost"

        for result in self.reaper.sweep(config, is_dead):
            if self.telemetry is not None and (result.parked or result.dead_lettered):
                since = time.monotonic()
                self.telemetry.recovered_entries(
                    result.queue, result.parked, result.dead_lettered, since
                )
            if result.parked or result.dead_lettered:
                logger.bind(event="sweep").info(
                    f"Swept consumer {result.consumer} of {result.queue}: "
                    f"{result.parked} parked, {result.dead_lettered} dead-lettered"
                )


def shares_of_new(parked: int, new: int, idle: int) -> list[int]:
    """The parked entries each of ``new`` workers about to start is handed,
    when they share them evenly with ``idle`` live workers (whose shares go
    to them in ``Recovery.hand_out_to_idle``)."""
    targets = [f"new{i}" for i in range(new)] + [f"idle{i}" for i in range(idle)]
    shares = split_shares(parked, targets)
    return [shares.get(f"new{i}", 0) for i in range(new)]
