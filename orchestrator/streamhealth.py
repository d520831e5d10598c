"""Consumer-group health (``orchestrator streams``) and one-shot ``reap``.

Seen from outside any spawner: a host's consumers are live while its
heartbeat is; a consumer whose host heartbeat has expired is dead and its
entries can be recovered; a consumer we did not name is dead only after
being idle longer than its queue's ``max_runtime`` + ``stop_grace``.
Within a live host, a consumer without a lease belongs to a worker that
has exited: its own spawner parks it at once, so ``reap`` leaves it alone.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import redis

from orchestrator import codec, keys, status
from orchestrator.config import Backend, Config, QueueConfig
from orchestrator.queues import DepthProbe
from orchestrator.reaper import Liveness, ParkResult, Reaper, classify


@dataclass(frozen=True, slots=True)
class ConsumerHealth:
    name: str
    pending: int
    idle_s: float
    verdict: Liveness
    why: str


@dataclass(frozen=True, slots=True)
class GroupHealth:
    queue: str
    stream: str
    group: str
    length: int
    lag: int
    pending: int
    dead_letters: int
    consumers: list[ConsumerHealth]


@dataclass(frozen=True, slots=True)
class StreamsReport:
    groups: list[GroupHealth]
    live_hosts: dict[str, float]

    def render(self) -> str:
        now = time.time()
        hosts = ", ".join(
            f"{h} (beat expires in {e - now:.0f}s)" for h, e in self.live_hosts.items()
        )
        lines = [f"live hosts: {hosts or 'none'}"]
        for g in self.groups:
            lines.append(
                f"{g.stream} [{g.group}]: {g.length} entries, lag {g.lag}, {g.pending} pending, "
                f"{len(g.consumers)} consumers, {g.dead_letters} dead letters"
            )
            for c in g.consumers:
                mark = "DEAD" if c.verdict is Liveness.DEAD else c.verdict.value
                lines.append(
                    f"  -> {c.name}: {c.pending} pending, idle {c.idle_s:.1f}s  [{mark}: {c.why}]"
                )
        return "\n".join(lines)


def consumer_verdict(
    queue: QueueConfig,
    consumer: str,
    idle_s: float,
    live_hosts: Collection[str],
    leases: Mapping[str, Collection[str]],
    stop_grace_s: float,
) -> tuple[Liveness, str]:
    host = keys.consumer_host(consumer)
    stale_after = queue.max_runtime_s + stop_grace_s
    verdict = classify(consumer, "", (), live_hosts, idle_s, stale_after)
    if verdict is Liveness.PARKING:
        return verdict, "recovered entries waiting for the next worker"
    if host is None:
        suffix = f", idle > {stale_after:g}s" if verdict is Liveness.DEAD else ""
        return verdict, f"not started by the orchestrator{suffix}"
    if verdict is Liveness.DEAD:
        return verdict, f"host {host} heartbeat expired"
    if keys.consumer_worker_id(consumer) not in leases.get(host, ()):
        return verdict, f"worker exited; host {host}'s spawner recovers it"
    return verdict, f"worker of live host {host}"


def _leases(client: redis.Redis, hosts: Collection[str]) -> dict[str, set[str]]:
    pipe = client.pipeline(transaction=False)
    for host in hosts:
        pipe.hkeys(keys.leases(host))
    return {h: {codec.text(k) for k in ids} for h, ids in zip(hosts, pipe.execute(), strict=True)}


def inspect_all(client: redis.Redis, config: Config) -> StreamsReport:
    queues = [q for q in config.queues.values() if q.backend is Backend.STREAM]
    depths = DepthProbe(queues).measure(client)
    live = status.live_hosts(client)
    leases = _leases(client, list(live))
    groups = []
    for q in queues:
        rows = client.xinfo_consumers(q.stream, q.group)
        consumers = []
        for row in rows:
            name, idle_s = codec.text(row["name"]), float(row["idle"]) / 1000.0
            verdict, why = consumer_verdict(
                q, name, idle_s, live, leases, config.spawner.stop_grace_s
            )
            consumers.append(ConsumerHealth(name, int(row["pending"]), idle_s, verdict, why))
        d = depths[q.name]
        groups.append(
            GroupHealth(
                q.name,
                q.stream,
                q.group,
                int(client.xlen(q.stream)),
                d.undelivered,
                d.pending,
                d.dead_letters,
                consumers,
            )
        )
    return StreamsReport(groups, live)


def reap_once(client: redis.Redis, config: Config, dry_run: bool = False) -> list[ParkResult]:
    """Park the entries of every dead consumer and delete those consumers."""
    live = status.live_hosts(client)
    leases = _leases(client, list(live))

    def is_dead(queue: QueueConfig, consumer: str, idle_s: float) -> str | None:
        verdict, why = consumer_verdict(
            queue, consumer, idle_s, live, leases, config.spawner.stop_grace_s
        )
        return f"worker lost: {why}" if verdict is Liveness.DEAD else None

    return Reaper(client).sweep(config, is_dead, dry_run=dry_run)
