"""Leases: the spawner's record of its workers in Redis, and adoption.

``orch:leases:<host>`` holds one lease per live worker (queue, pid,
consumer, start, deadline and the process' start time), written when the
worker starts and dropped when it is gone. A restarted spawner reads them
back: a worker still running (the same pid *and* process start time, so a
reused pid is never mistaken for it) is adopted; the others' entries are
recovered. Processes that carry one of the host's consumers in their
environment but belong to no adopted worker (a daemon a worker started, an
orphan) were left behind by previous workers: ``left_behind`` finds them.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass

import psutil
import redis

from orchestrator import keys, procs
from orchestrator.connections import REDIS_ERRORS
from orchestrator.worker.workerenv import CONSUMER, REDIS_URL


@dataclass(frozen=True, slots=True)
class Lease:
    worker_id: str
    queue: str
    consumer: str
    pid: int
    started_at: float  # epoch seconds
    deadline: float  # epoch seconds: started_at + max_runtime
    create_time: float  # psutil's process start time, guards against pid reuse

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Lease:
        return cls(**json.loads(text))

    def process_alive(self) -> bool:
        """True if the leased pid still runs the same process."""
        try:
            proc = psutil.Process(self.pid)
            same = abs(proc.create_time() - self.create_time) < 0.5
            return same and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


def process_create_time(pid: int, default: float) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return default


class LeaseBook:
    """The leases of one host, in ``orch:leases:<host>``."""

    def __init__(self, client: redis.Redis, host: str) -> None:
        self.client = client
        self.host = host
        self.key = keys.leases(host)

    def record(self, lease: Lease) -> None:
        self.client.hset(self.key, lease.worker_id, lease.to_json())

    def drop(self, worker_id: str) -> None:
        with contextlib.suppress(*REDIS_ERRORS):  # a stale lease is harmless at restart
            self.client.hdel(self.key, worker_id)

    def read(self) -> list[Lease]:
        return [Lease.from_json(text) for text in self.client.hvals(self.key)]


def left_behind(host: str, redis_url: str, adopted_consumers: set[str]) -> dict[int, str]:
    """Processes tagged with this host's consumers on this Redis
    (``ORCH_CONSUMER``, ``ORCH_REDIS_URL``) that belong to no adopted worker:
    pid -> consumer."""
    prefix = keys.consumer_name(host, "")
    tagged = procs.tagged_processes(prefix, CONSUMER, also=(REDIS_URL, redis_url))
    return {pid: c for pid, c in tagged.items() if c not in adopted_consumers}
