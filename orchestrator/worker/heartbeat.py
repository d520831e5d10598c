"""A worker's heartbeat: ``orch:worker:<consumer>``, beaten from a thread.

It holds the worker's pid and the Redis client id of its reading
connection (so the spawner can cut a blocking read short with ``CLIENT
UNBLOCK`` when it hands the worker recovered entries), the jobs in hand,
and whether the worker gives its slot up on SIGUSR1. It lives
``HEARTBEAT_TTL_S`` unless renewed, and is deleted on a clean exit. The same
thread, on the same connection, gives back entries the worker read ahead
that wait behind a long job, and writes the outcomes of those done before
it (``readahead``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from loguru import logger

from orchestrator import keys
from orchestrator.connections import connect
from orchestrator.worker.jobs import Job
from orchestrator.worker.readahead import CHECK_INTERVAL_S, ReadAhead
from orchestrator.worker.workerenv import Settings

HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TTL_S = 10.0

# A client made ahead of need (a fork server's standby connects before its
# job arrives), for the heartbeat of the worker it becomes: URL -> client.
_SPARE: dict[str, redis.Redis] = {}


def heartbeat_client(url: str) -> redis.Redis:
    """The heartbeat's own connection (a spare one when there is one)."""
    return _SPARE.pop(url, None) or connect(url, timeout_s=5.0, fail_fast=False)


def keep_spare(url: str) -> None:
    client = connect(url, timeout_s=5.0, fail_fast=False)
    client.ping()
    _SPARE[url] = client


class Heartbeat:
    """``orch:worker:<consumer>``: pid, client id, current jobs; TTL'd."""

    def __init__(
        self,
        settings: Settings,
        client_id: int,
        *,
        yields: bool = False,
        ahead: ReadAhead | None = None,
    ) -> None:
        """``yields``: the process stops after its job in hand on SIGUSR1, so
        the spawner may ask it to give its slot to another queue. ``ahead``:
        the jobs the worker read and has not started, given back when the
        job in hand runs long."""
        self.s = settings
        self.ahead = ahead
        self.client: redis.Redis | None = None  # made by the thread: not on the start-up path
        self.key = keys.worker_heartbeat(settings.consumer)
        self.info: dict[str, Any] = {
            "pid": os.getpid(),
            "client_id": client_id,
            "queue": settings.queue,
            "worker_id": settings.worker_id,
            "host": settings.host,
            "started_at": time.time(),
            "yields": yields,
        }
        self.jobs: Sequence[Job] = ()  # in hand; read by the heartbeat thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orch-heartbeat", daemon=True)

    def start(self) -> None:
        """Beat now and every ``HEARTBEAT_INTERVAL_S``, from a thread."""
        self._thread.start()

    def _connection(self) -> redis.Redis:
        if self.client is None:
            self.client = heartbeat_client(self.s.redis_url)
        return self.client

    def beat(self) -> None:
        self.info["at"] = time.time()
        self.info["jobs"] = [job.id for job in self.jobs]
        payload = json.dumps(self.info)
        self._connection().set(self.key, payload, px=int(HEARTBEAT_TTL_S * 1000))

    def _run(self) -> None:
        next_beat = 0.0
        while True:
            now = time.monotonic()
            with contextlib.suppress(redis.RedisError):  # the main loop notices outages
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_INTERVAL_S
                    self.beat()
            if self.ahead is not None and self.ahead.late(now):
                self._on_late(now)
            wait_s = next_beat - now
            if self.ahead is not None:
                wait_s = min(wait_s, CHECK_INTERVAL_S)
            if self._stop.wait(wait_s):
                return

    def _on_late(self, now: float) -> None:
        """The job in hand runs long: what waits behind it goes back, what
        was done before it is written (``readahead``); what fails here is
        logged, never the end of the heartbeat (the entries then stay this
        worker's, read again before its next read)."""
        assert self.ahead is not None
        try:
            self.ahead.on_late(self._connection(), now)
        except redis.RedisError:
            pass  # the main loop notices outages
        except Exception:
            logger.exception(f"{self.s.worker_id}: giving entries back failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        with contextlib.suppress(redis.RedisError):
            self._connection().delete(self.key)
        self._connection().close()
