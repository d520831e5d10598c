"""The store on PostgreSQL (psycopg 3): Supabase, or any Postgres.

Tables live in ``database.schema`` (created if missing). Two workers that
start together would race on ``CREATE TABLE IF NOT EXISTS``; a transaction
advisory lock makes them take turns. Losing the connection (refused, reset,
server shut down) is ``DatabaseUnavailable``; a row the server refuses (a
constraint, a type) is ``StoreError``; either way the batch's transaction is
rolled back, so nothing of it is written.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from orchestrator.apps.announcements.announcement import CATEGORY_NAMES
from orchestrator.apps.announcements.errors import DatabaseUnavailable, StoreError
from orchestrator.apps.announcements.store import Store
from orchestrator.connections import redact_url

__all__ = ["PostgresStore"]

_SCHEMA_LOCK = 7_303_421_004  # pg_advisory_xact_lock key: "creating the announcement tables"
_CATEGORIES = ", ".join(f"'{c}'" for c in CATEGORY_NAMES)


def _ddl(schema: str) -> tuple[str, ...]:
    return (
        f'CREATE SCHEMA IF NOT EXISTS "{schema}"',
        f"""CREATE TABLE IF NOT EXISTS "{schema}".announcements (
            id text PRIMARY KEY,
            symbol text NOT NULL,
            exchange text NOT NULL,
            title text NOT NULL,
            category text NOT NULL CHECK (category IN ({_CATEGORIES})),
            sentiment double precision NOT NULL CHECK (sentiment BETWEEN -1 AND 1),
            summary text NOT NULL,
            key_figures jsonb NOT NULL,
            analysed_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )""",
        f'CREATE INDEX IF NOT EXISTS announcements_symbol ON "{schema}".announcements (symbol)',
        f"""CREATE TABLE IF NOT EXISTS "{schema}".notifications (
            watchlist text NOT NULL,
            announcement_id text NOT NULL,
            symbol text NOT NULL,
            category text NOT NULL CHECK (category IN ({_CATEGORIES})),
            sentiment double precision NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (watchlist, announcement_id)
        )""",
    )


class PostgresStore(Store):
    placeholder = "%s"

    def __init__(self, url: str, schema: str = "public", timeout_s: float = 5.0) -> None:
        self.schema = schema
        self._where = redact_url(url)
        try:
            self._conn = psycopg.connect(
                url,
                autocommit=True,
                connect_timeout=max(2, math.ceil(timeout_s)),
                application_name="orchestrator-announcements",
            )
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"cannot connect to {self._where}: {exc}") from exc
        try:
            self._create_tables()
        except BaseException:
            self._conn.close()
            raise

    def _create_tables(self) -> None:
        with self._mapped_errors(), self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _ddl(self.schema):
                self._conn.execute(statement)  # statement text is built, never from input

    def table(self, name: str) -> str:
        return f'"{self.schema}"."{name}"'

    def write(self, statement: str, rows: Sequence[Sequence[Any]]) -> int:
        with self._mapped_errors(), self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(statement, rows)
            return cur.rowcount

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._mapped_errors(), self._conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall())

    def encode_json(self, value: Any) -> Any:
        return Jsonb(value)

    def encode_time(self, value: datetime) -> Any:
        return value.astimezone(UTC)

    def decode_time(self, value: Any) -> str:
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat()
        return str(value)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """psycopg's exceptions as ``DatabaseUnavailable`` or ``StoreError``."""
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if isinstance(exc, psycopg.errors.TransactionRollback):
                raise StoreError(f"PostgreSQL rolled the batch back: {exc}") from exc
            raise DatabaseUnavailable(f"PostgreSQL at {self._where} unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL refused the batch: {exc}") from exc
