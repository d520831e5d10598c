"""Redis connections, and riding out a Redis outage.

``connect`` is the one way the project builds a Redis client, so every
client skips the same start-up cost and decodes bytes the same way
(``codec``). The spawner must never crash because Redis went away:
``RedisHealth`` remembers whether the last call worked, logs once per
change of state (down, back up after N seconds), and spaces out retries
with exponential backoff while the spawner goes on watching its workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.retry import Retry

from orchestrator import codec
from orchestrator.logs import Events

REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
)


def _quick_connect() -> dict[str, Any]:
    """Client options that skip CLIENT SETINFO: redis-py sends it on every
    connect, reading its own version from package metadata each time, which
    costs a worker that must start fast a few milliseconds."""
    try:
        from redis.driver_info import DriverInfo  # redis-py >= 7
    except ImportError:
        return {"lib_name": None, "lib_version": None}
    return {"driver_info": DriverInfo(name=None, lib_version=None)}


QUICK_CONNECT = _quick_connect()


class CPacker:
    """``pack(*args)`` for redis-py connections, in one C call.

    redis-py converts each command's arguments in a Python loop before
    handing them to hiredis; for an XACK of a couple of thousand ids that
    loop costs more than the command. This hands the arguments to
    ``hiredis.pack_command`` as they are, and leaves what it cannot pack (a
    command name with a space, such as ``XINFO GROUPS``; memoryviews) to
    redis-py's own packer.
    """

    def __init__(self) -> None:
        self._fallback = HiredisRespSerializer()

    def pack(self, *args: Any) -> list[bytes]:
        name = args[0]
        if isinstance(name, str) and " " not in name:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass  # e.g. a memoryview: redis-py converts it
        packed: list[bytes] = self._fallback.pack(*args)
        return packed


def connect(
    url: str,
    *,
    timeout_s: float | None = 5.0,
    connect_timeout_s: float = 2.0,
    name: str | None = None,
    decode: bool = False,
    single_connection: bool = False,
    fail_fast: bool = True,
    c_packer: bool = False,
) -> redis.Redis:
    """A Redis client.

    ``fail_fast``: no retry inside redis-py (the caller owns retries and
    backoff, as the spawner does); else redis-py's default retries.
    ``decode``: replies as ``str``, decoded losslessly (``codec``).
    ``single_connection``: one connection for every command, so ``CLIENT
    UNBLOCK`` of its id reaches the blocking read. ``c_packer``: commands
    packed in C (``CPacker``), for clients that send many arguments.
    """
    options: dict[str, Any] = dict(QUICK_CONNECT)
    if fail_fast:
        options["retry"] = Retry(NoBackoff(), 0)
    if decode:
        options.update(decode_responses=True, encoding_errors=codec.ERRORS)
    if c_packer:
        options["command_packer"] = CPacker()
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        client_name=name,
        health_check_interval=0,
        single_connection_client=single_connection,
        **options,
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
    return redacted_url(url)


def redacted_url(url: str) -> str:
    """``url`` with its credentials (user info, ``password=`` in the query)
    replaced by ``***``: what logs and the dashboard may show."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"***@{netloc.rpartition('@')[2]}"
    query = [
        (k, "***" if k.lower() in ("password", "username", "user") else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    shown = urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))
    if "://" in url and "://" not in shown:  # unix:///path loses its empty host
        shown = shown.replace(":", "://", 1)
    return shown


def url_secrets(url: str) -> list[str]:
    """The secrets in ``url`` (its password), to scrub from error texts."""
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if k.lower() == "password" and v]
    return found
