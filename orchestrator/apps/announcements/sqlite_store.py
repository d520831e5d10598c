"""The store on SQLite (stdlib ``sqlite3``): the embedded default for the demo.

Write-ahead logging lets the demo report read while upload workers write;
each batch is one ``BEGIN IMMEDIATE`` transaction, so two workers queue for
the write lock (for up to ``timeout_s``) instead of deadlocking. A lock held
longer, or a file that cannot be opened, is ``DatabaseUnavailable``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.apps.announcements.announcement import CATEGORY_NAMES
from orchestrator.apps.announcements.errors import DatabaseUnavailable, StoreError
from orchestrator.apps.announcements.store import Store

__all__ = ["SqliteStore"]

_CATEGORIES = ", ".join(f"'{c}'" for c in CATEGORY_NAMES)
_DDL = (
    f"""CREATE TABLE IF NOT EXISTS announcements (
        id TEXT PRIMARY KEY,
        symbol TEXT NOT NULL,
        exchange TEXT NOT NULL,
        title TEXT NOT NULL,
        category TEXT NOT NULL CHECK (category IN ({_CATEGORIES})),
        sentiment REAL NOT NULL CHECK (sentiment BETWEEN -1 AND 1),
        summary TEXT NOT NULL,
        key_figures TEXT NOT NULL CHECK (json_valid(key_figures)),
        analysed_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS announcements_symbol ON announcements (symbol)",
    f"""CREATE TABLE IF NOT EXISTS notifications (
        watchlist TEXT NOT NULL,
        announcement_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        category TEXT NOT NULL CHECK (category IN ({_CATEGORIES})),
        sentiment REAL NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (watchlist, announcement_id)
    )""",
)
_UNAVAILABLE = ("locked", "unable to open", "disk i/o", "readonly", "no such file", "busy")


class SqliteStore(Store):
    placeholder = "?"

    def __init__(self, path: str, timeout_s: float = 5.0) -> None:
        self.path = path
        with _mapped_errors(path):
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            try:
                if path != ":memory:":
                    self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._create_tables()
            except BaseException:
                self._conn.close()
                raise

    def _create_tables(self) -> None:
        with self._transaction():
            for statement in _DDL:
                self._conn.execute(statement)

    def table(self, name: str) -> str:
        return f'"{name}"'

    def write(self, statement: str, rows: Sequence[Sequence[Any]]) -> int:
        with _mapped_errors(self.path), self._transaction():
            return self._conn.executemany(statement, rows).rowcount

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with _mapped_errors(self.path):
            return list(self._conn.execute(statement, params).fetchall())

    def encode_json(self, value: Any) -> Any:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def encode_time(self, value: datetime) -> Any:
        return value.astimezone(UTC).isoformat(timespec="microseconds")

    def decode_time(self, value: Any) -> str:
        return str(value)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.rollback()
            raise
        self._conn.commit()


@contextmanager
def _mapped_errors(path: str) -> Iterator[None]:
    """sqlite3's exceptions as ``DatabaseUnavailable`` or ``StoreError``."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if any(word in str(exc).lower() for word in _UNAVAILABLE):
            raise DatabaseUnavailable(f"SQLite database {path} unavailable: {exc}") from exc
        raise StoreError(f"SQLite error on {path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite refused the batch on {path}: {exc}") from exc
    except OSError as exc:
        raise DatabaseUnavailable(f"SQLite database {path} unavailable: {exc}") from exc
