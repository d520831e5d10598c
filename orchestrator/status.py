"""What the spawner tells the world: status lines and the published snapshot.

Line formats are seed 004's::

    📊 AI: 3/3 workers, 4 jobs | UPLOAD: 1/2 workers, 0 jobs | INVESTOR: 0/1 workers, 0 jobs
    🚀 Spawned worker ai_1643234567 for AI (PID: 12345, Total: 3)

"jobs" is the queue's backlog: work waiting that no live worker holds.
The snapshot (``orch:status:<host>``, JSON) carries the same figures and
more; ``orchestrator status`` reads it back. A host is alive while its score
in ``orch:hosts`` (heartbeat expiry, epoch seconds) is in the future.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from orchestrator import codec, keys

if TYPE_CHECKING:
    from orchestrator.fleet import Worker


@dataclass(frozen=True, slots=True)
class QueueStatus:
    name: str
    label: str
    live: int
    max_concurrent: int
    backlog: int
    pending: int = 0
    oldest_age_s: float | None = None
    dead_letters: int = 0
    backlog_exact: bool = True
    backoff_s: float = 0.0  # no spawning for this long yet ...
    backoff_reason: str = ""  # ... because of this ("crash loop", "dependency unavailable")
    control: str = ""  # the operator's: "paused", "draining", "drained", "scaled to N"
    throttled: bool = False  # its rate limit holds workers back
    global_live: int | None = None  # its workers across every host (global_max_concurrent)
    global_max: int | None = None
    rate_limit: str | None = None
    busy: int = 0  # live workers holding entries


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    worker_id: str
    queue: str
    pid: int
    consumer: str
    started_at: float
    deadline: float


@dataclass(frozen=True, slots=True)
class HostStatus:
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    queues: Sequence[QueueStatus]
    workers: Sequence[WorkerStatus] = field(default_factory=list)
    redis_ok: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> HostStatus:
        data = json.loads(text)
        data["queues"] = [QueueStatus(**q) for q in data["queues"]]
        data["workers"] = [WorkerStatus(**w) for w in data.get("workers", [])]
        return cls(**data)


def host_status(
    host: str,
    started_at: float,
    queues: Sequence[QueueStatus],
    workers: Iterable[Worker],
    redis_ok: bool,
) -> HostStatus:
    """The snapshot of this spawner (its pid), now."""
    rows = [
        WorkerStatus(w.worker_id, w.queue, w.pid, w.lease.consumer, w.lease.started_at,
                     w.lease.deadline)
        for w in workers
    ]  # fmt: skip
    return HostStatus(host, os.getpid(), started_at, time.time(), queues, rows, redis_ok)


def jobs_text(n: int, exact: bool = True) -> str:
    return f"{n}{'' if exact else '+'} job{'' if n == 1 else 's'}"


def status_line(queues: Sequence[QueueStatus]) -> str:
    """``AI: 3/3 workers, 4 jobs | UPLOAD: ...`` (without the pictograph)."""
    return " | ".join(
        f"{q.label}: {q.live}/{q.max_concurrent} workers, {jobs_text(q.backlog, q.backlog_exact)}"
        + backoff_text(q)
        for q in queues
    )


def backoff_text(q: QueueStatus) -> str:
    """What holds the queue back, if anything: ``, paused``, ``, throttled
    (20/s)``, ``, 4/4 across hosts``, ``, crash loop: next spawn in 4s``."""
    parts = [q.control] if q.control else []
    if q.throttled:
        parts.append(f"throttled ({q.rate_limit})")
    if q.global_max is not None and q.global_live is not None and q.global_live >= q.global_max:
        parts.append(f"{q.global_live}/{q.global_max} across hosts")
    if q.backoff_reason:
        parts.append(f"{q.backoff_reason}: next spawn in {q.backoff_s:.0f}s")
    return "".join(f", {p}" for p in parts)


def spawn_line(worker_id: str, label: str, pid: int, total: int) -> str:
    return f"Spawned worker {worker_id} for {label} (PID: {pid}, Total: {total})"


def publish(pipe: redis.client.Pipeline, status: HostStatus, ttl_s: float) -> None:
    """Queue the heartbeat and snapshot writes on ``pipe``."""
    expiry = status.heartbeat_at + ttl_s
    pipe.zadd(keys.HOSTS, {status.host: expiry})
    pipe.set(keys.status(status.host), status.to_json(), px=int(ttl_s * 1000) * 4)


def withdraw(client: redis.Redis, host: str) -> None:
    """A clean stop: the host is gone at once, not after its TTL."""
    pipe = client.pipeline(transaction=True)
    pipe.zrem(keys.HOSTS, host)
    pipe.delete(keys.status(host))
    pipe.execute()


def live_hosts(client: redis.Redis, now: float | None = None) -> dict[str, float]:
    """Hosts whose heartbeat has not expired, with their expiry."""
    now = time.time() if now is None else now
    rows: Any = client.zrangebyscore(keys.HOSTS, now, "+inf", withscores=True)
    return {codec.text(h): float(score) for h, score in rows}


def read_status(client: redis.Redis) -> list[HostStatus]:
    """Snapshots of every live host, by host name."""
    hosts = sorted(live_hosts(client))
    if not hosts:
        return []
    raw = client.mget([keys.status(h) for h in hosts])
    return [HostStatus.from_json(r) for r in raw if r]


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def format_table(hosts: Sequence[HostStatus], now: float) -> str:
    """The human form of ``orchestrator status``."""
    lines: list[str] = []
    for h in hosts:
        beat = now - h.heartbeat_at
        redis_note = "" if h.redis_ok else ", Redis unreachable"
        lines.append(f"host {h.host} (spawner pid {h.pid}, heartbeat {beat:.1f}s ago{redis_note})")
        lines.append(
            f"  {'queue':<22} {'label':<10} {'workers':>8} {'backlog':>8} "
            f"{'pending':>8} {'oldest':>8} {'dead':>6}"
        )
        for q in h.queues:
            backlog = f"{q.backlog}{'' if q.backlog_exact else '+'}"
            lines.append(
                f"  {q.name:<22} {q.label:<10} {f'{q.live}/{q.max_concurrent}':>8} "
                f"{backlog:>8} {q.pending:>8} {format_age(q.oldest_age_s):>8} "
                f"{q.dead_letters:>6}{backoff_text(q)}"
            )
        for w in h.workers:
            lines.append(
                f"  worker {w.worker_id} ({w.queue}) pid {w.pid}, up {now - w.started_at:.0f}s, "
                f"deadline in {w.deadline - now:.0f}s"
            )
    return "\n".join(lines)


def wait_drained(client: redis.Redis, queue: str, timeout_s: float) -> int | None:
    """Wait until every live host reports ``queue`` drained; then the
    entries waiting undelivered (None: not drained within ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = [q for h in read_status(client) for q in h.queues if q.name == queue]
        if rows and all(q.control == "drained" for q in rows):
            return max(q.backlog for q in rows)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)  # the spawners publish every tick
