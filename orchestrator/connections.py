"""Redis connections, and riding out a Redis outage.

The spawner must never crash because Redis went away: ``RedisHealth``
remembers whether the last call worked, logs once per change of state
(down, back up after N seconds), and spaces out retries with exponential
backoff while the spawner goes on watching its workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from orchestrator.logs import Events
from orchestrator.worker import QUICK_CONNECT

REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
)


def connect(url: str, *, timeout_s: float = 5.0, name: str | None = None) -> redis.Redis:
    """A client that fails fast: callers own retries and backoff."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=min(timeout_s, 2.0),
        retry=Retry(NoBackoff(), 0),
        client_name=name,
        health_check_interval=0,
        **QUICK_CONNECT,
    )


@dataclass
class RedisHealth:
    """Up/down state of Redis with retry backoff and once-per-change logs."""

    events: Events
    url: str
    # Retries are a connect attempt each (refused at once while Redis is
    # down), so they stay frequent: spawning resumes within this of Redis'
    # return.
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 1.0
    up: bool = True
    down_since: float = 0.0
    retry_at: float = 0.0
    backoff_s: float = 0.0

    def available(self, now: float) -> bool:
        """May we try Redis now? (always while up; on schedule while down)"""
        return self.up or now >= self.retry_at

    def failed(self, now: float, error: BaseException) -> None:
        if self.up:
            self.up = False
            self.down_since = now
            self.backoff_s = self.initial_backoff_s
            self.events.warning(
                "redis_down",
                "⚠️",
                f"Redis unavailable at {_safe(self.url)}: {error}; workers keep running, "
                "retrying with backoff",
                error=str(error),
            )
        else:
            self.backoff_s = min(self.max_backoff_s, self.backoff_s * 2)
        self.retry_at = now + self.backoff_s

    def succeeded(self, now: float) -> bool:
        """Redis answered; True when it was down until now."""
        was_down = not self.up
        if was_down:
            self.events.info(
                "redis_up",
                "✅",
                f"Redis reachable again after {now - self.down_since:.1f}s; resuming",
                down_s=round(now - self.down_since, 3),
            )
        self.up = True
        return was_down


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
