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
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

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
        # typed in some redis-py releases, not in others
        self._fallback = HiredisRespSerializer()  # type: ignore[no-untyped-call,unused-ignore]

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
    options.update(
        socket_timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        client_name=name,
        health_check_interval=0,
    )
    if url.startswith(SENTINEL_SCHEME):
        pool = sentinel_pool(url, options)
        return redis.Redis(connection_pool=pool, single_connection_client=single_connection)
    return redis.Redis.from_url(url, single_connection_client=single_connection, **options)


SENTINEL_SCHEME = "redis+sentinel://"
URL_SCHEMES = ("redis://", "rediss://", "unix://", SENTINEL_SCHEME)


@dataclass(frozen=True)
class SentinelAddress:
    """``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``:
    the Sentinels to ask, the master's service name, and how to log in to
    the master (the Sentinels themselves take ``?sentinel_password=``)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelAddress:
        """Raises ``ValueError`` naming what is wrong."""
        parts = urlsplit(url)
        credentials, _, hosts = parts.netloc.rpartition("@")
        username, _, password = credentials.partition(":")
        sentinels = tuple(_host_port(h, 26379) for h in hosts.split(",") if h)
        if not sentinels:
            raise ValueError("names no Sentinel (host:port[,host:port...])")
        path = [p for p in parts.path.split("/") if p]
        if not path or len(path) > 2:
            raise ValueError("needs the master's service name: .../SERVICE[/DB]")
        if len(path) == 2 and not path[1].isdigit():
            raise ValueError(f"database {path[1]!r} is not a number")
        query = parse_qs(parts.query)
        return cls(
            sentinels=sentinels,
            service=unquote(path[0]),
            db=int(path[1]) if len(path) == 2 else 0,
            username=unquote(username) or None,
            password=unquote(password) or None,
            sentinel_password=query.get("sentinel_password", [""])[0] or None,
        )


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if port and not port.isdigit():
        raise ValueError(f"port {port!r} of {text!r} is not a number")
    return host.strip("[]"), int(port) if port else default_port


def sentinel_pool(url: str, options: dict[str, Any]) -> SentinelConnectionPool:
    """A pool whose connections go to the service's current master, asking
    the Sentinels again after each disconnect, so a failover costs a
    reconnect (a demoted master's READONLY reply counts as one)."""
    address = SentinelAddress.parse(url)
    sentinel_options: dict[str, Any] = {
        key: options[key] for key in ("socket_timeout", "socket_connect_timeout") if key in options
    }
    if address.sentinel_password:
        sentinel_options["password"] = address.sentinel_password
    manager = Sentinel(list(address.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call,unused-ignore]
    return SentinelConnectionPool(  # type: ignore[no-untyped-call]
        address.service,
        manager,
        db=address.db,
        username=address.username,
        password=address.password,
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
                f"Redis unavailable at {redact_url(self.url)}: {error}; workers keep running, "
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


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (user names stay),
    fit for logs, errors and people; also ``?password=`` style parameters."""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    credentials, at, hosts = rest.rpartition("@")
    if at and ":" in credentials:
        rest = f"{credentials.partition(':')[0]}:***@{hosts}"
    if query:
        items = (item.partition("=") for item in query.split("&"))
        query = "&".join(f"{k}={'***' if 'password' in k else v}" for k, _, v in items)
    return f"{scheme}://{rest}" + (f"?{query}" if query else "")


def url_secrets(url: str) -> list[str]:
    """The secrets in ``url`` (its password), to scrub from error texts."""
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if "password" in k.lower() and v]
    return found
