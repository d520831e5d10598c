"""A queue's rate limit, as one worker obeys it (``rate_limit`` in the config).

A token per job started, from the bucket every worker on every host shares
(``lua/rate_take.lua``, ``orch:rate:<queue>``).
"""

from __future__ import annotations

from typing import Protocol

import redis

from orchestrator import keys
from orchestrator.scripts import load_lua
from orchestrator.worker.workerenv import Settings

RATE_TAKE = load_lua("rate_take.lua")


class Pauses(Protocol):
    def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` (a stop cuts it short); True if stopping."""
        ...


class RateLimiter:
    """The queue's rate limit, as this worker obeys it: a token per job
    started, from the bucket every worker on every host shares
    (``lua/rate_take.lua``). Waiting for a token is a sleep for as long as
    the bucket says the next one takes, cut short by a stop."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.key = keys.rate(settings.queue)
        self.per_s = settings.rate_per_s or 1.0
        self.burst = settings.rate_burst
        self._take = client.register_script(RATE_TAKE)

    def wait(self, tokens: int, runtime: Pauses) -> bool:
        """Take ``tokens`` (at most the burst at a time); False if the worker
        was asked to stop before it had them."""
        needed = tokens
        while needed > 0:
            want = min(needed, self.burst)
            granted, wait_ms = self._take(keys=[self.key], args=[self.per_s, self.burst, want])
            needed -= int(granted)
            if needed > 0 and runtime.pause(int(wait_ms) / 1000.0):
                return False
        return True
