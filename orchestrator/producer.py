"""Putting jobs on the queues, from Python: the producer API.

    from orchestrator import Producer

    producer = Producer.from_config()             # config/workers.yaml (or ORCH_CONFIG)
    producer.enqueue("ai_processing", {"id": 1, "symbol": "ACME"})
    producer.enqueue_many("ai_processing", jobs)  # one round trip

    import orchestrator
    orchestrator.enqueue("ai_processing", {"id": 1})  # the same, for a one-off

A job is a JSON object; it goes on the queue's stream as the ``payload``
field (SPEC.md), after the stream and its group are created if missing, so a
job enqueued before any spawner ran is delivered, not skipped. With
``redis.wait_replicas`` set, ``enqueue`` returns once that many replicas
have the jobs (``WAIT``), so a Redis failover cannot lose them; fewer in
time raises ``ReplicationTimeout`` (the jobs are on the master all the same).
RQ queues take jobs through RQ's own API (``rq.Queue.enqueue``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from orchestrator.config import Backend, Config, QueueConfig, load_config
from orchestrator.connections import connect
from orchestrator.queues import enqueue_jobs


class ReplicationTimeout(redis.RedisError):
    """Fewer replicas than ``redis.wait_replicas`` had the jobs in time."""


class Producer:
    def __init__(self, config: Config, client: redis.Redis | None = None) -> None:
        self.config = config
        self.client = client or connect(config.redis_url, name="orch-producer", fail_fast=False)
        self._ready: set[str] = set()  # queues whose stream and group exist

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None) -> Producer:
        """A producer for the config at ``path`` (found as the CLI finds it when None)."""
        return cls(load_config(path))

    def enqueue(self, queue: str, job: Mapping[str, Any]) -> str:
        """Add one job; its entry id."""
        return self.enqueue_many(queue, [job])[0]

    def enqueue_many(self, queue: str, jobs: Sequence[Mapping[str, Any]]) -> list[str]:
        """Add jobs in one round trip (plus one, the first time, for the
        stream's group); their entry ids, in order."""
        q = self._stream_queue(queue)
        for job in jobs:
            if not isinstance(job, Mapping):
                raise TypeError(f"a job is a JSON object (a mapping), got {type(job).__name__}")
        ids = enqueue_jobs(self.client, q, jobs, ensure=q.name not in self._ready)
        self._ready.add(q.name)
        self._wait_for_replicas(len(ids))
        return ids

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stream_queue(self, name: str) -> QueueConfig:
        q = self.config.queue(name)  # KeyError naming the configured queues
        if q.backend is not Backend.STREAM:
            raise ValueError(f"queue {name!r} is an RQ queue: enqueue with RQ's API")
        return q

    def _wait_for_replicas(self, jobs: int) -> None:
        want = self.config.wait_replicas
        if not want or not jobs:
            return
        got = int(self.client.wait(want, int(self.config.wait_timeout_s * 1000)))
        if got < want:
            raise ReplicationTimeout(
                f"{jobs} job(s) on {got} of {want} replica(s) after "
                f"{self.config.wait_timeout_s:g}s (redis.wait_replicas); they are on the master"
            )


def enqueue(queue: str, job: Mapping[str, Any], config: str | None = None) -> str:
    """One job on ``queue`` of the config at ``config`` (found as the CLI
    finds it when None); its entry id. For many jobs keep a ``Producer``."""
    with Producer.from_config(config) as producer:
        return producer.enqueue(queue, job)
