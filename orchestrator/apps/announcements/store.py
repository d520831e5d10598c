"""Where analysed announcements and notifications are kept: one interface, two databases.

``open_store(settings, root)`` opens PostgreSQL (``postgresql://...``, psycopg
3) or SQLite (``sqlite:///path``, relative paths under the config's base
directory) and creates the tables when missing. Writes are whole batches in one
transaction: ``upsert_announcements`` is keyed by announcement id (a
redelivered job updates its row, an older analysis never overwrites a newer
one), ``insert_notifications`` ignores pairs already written. A database
that cannot be reached raises ``DatabaseUnavailable``; a batch the database
refuses raises ``StoreError`` and leaves nothing behind.

The SQL shared by both databases lives in ``Store``; each subclass
supplies its connection, its DDL, its placeholder and its value encodings.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from orchestrator.apps.announcements.announcement import (
    AnalysedAnnouncement,
    Category,
    Notification,
    utc_now,
)
from orchestrator.apps.announcements.errors import InvalidJob, StoreError
from orchestrator.apps.announcements.payloads import parse_record
from orchestrator.apps.announcements.pipeline_settings import DatabaseSettings

__all__ = ["Store", "open_store", "sqlite_path"]

_ANNOUNCEMENT_COLUMNS = (
    "id", "symbol", "exchange", "title", "category", "sentiment", "summary",
    "key_figures", "analysed_at", "updated_at",
)  # fmt: skip
_NOTIFICATION_COLUMNS = (
    "watchlist", "announcement_id", "symbol", "category", "sentiment", "created_at",
)  # fmt: skip


class Store(ABC):
    """The store's operations, written once over a few database-specific hooks."""

    placeholder = "?"

    # -- hooks -----------------------------------------------------------------
    @abstractmethod
    def table(self, name: str) -> str:
        """``name`` qualified and quoted for this database."""

    @abstractmethod
    def write(self, statement: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run ``statement`` once per row in ONE transaction; rows affected."""

    @abstractmethod
    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only statement."""

    @abstractmethod
    def encode_json(self, value: Any) -> Any: ...

    @abstractmethod
    def encode_time(self, value: datetime) -> Any: ...

    @abstractmethod
    def decode_time(self, value: Any) -> str:
        """A stored timestamp as an ISO string."""

    @abstractmethod
    def close(self) -> None: ...

    # -- writes ------------------------------------------------------------------
    def upsert_announcements(
        self, rows: Sequence[AnalysedAnnouncement], now: datetime | None = None
    ) -> int:
        """Insert or update every row in one transaction; the number of rows in the batch."""
        latest = {row.id: row for row in rows}  # a batch may hold one job twice
        ordered = sorted(latest.values(), key=lambda r: r.id)  # one lock order: no deadlocks
        updated_at = self.encode_time(now or utc_now())
        params = [self._announcement_params(row, updated_at) for row in ordered]
        if params:
            self.write(self._upsert_statement(), params)
        return len(ordered)

    def insert_notifications(self, rows: Sequence[Notification]) -> int:
        """Write the notifications not written before, in one transaction; how many were new."""
        ph = self.placeholder
        statement = (
            f"INSERT INTO {self.table('notifications')} ({', '.join(_NOTIFICATION_COLUMNS)}) "
            f"VALUES ({', '.join([ph] * len(_NOTIFICATION_COLUMNS))}) "
            "ON CONFLICT (watchlist, announcement_id) DO NOTHING"
        )
        params = [
            (n.watchlist, n.announcement_id, n.symbol, n.category.value, n.sentiment,
             self.encode_time(n.created_at))
            for n in sorted(rows, key=lambda n: (n.watchlist, n.announcement_id))
        ]  # fmt: skip
        return self.write(statement, params) if params else 0

    def _upsert_statement(self) -> str:
        columns = ", ".join(_ANNOUNCEMENT_COLUMNS)
        values = ", ".join([self.placeholder] * len(_ANNOUNCEMENT_COLUMNS))
        updates = ", ".join(f"{c} = excluded.{c}" for c in _ANNOUNCEMENT_COLUMNS[1:])
        return (
            f"INSERT INTO {self.table('announcements')} AS a ({columns}) VALUES ({values}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates} "
            "WHERE a.analysed_at <= excluded.analysed_at"
        )

    def _announcement_params(self, row: AnalysedAnnouncement, updated_at: Any) -> tuple[Any, ...]:
        figures = [f.to_dict() for f in row.key_figures]
        return (
            row.id, row.symbol, row.exchange, row.title, row.category.value, row.sentiment,
            row.summary, self.encode_json(figures), self.encode_time(row.analysed_at), updated_at,
        )  # fmt: skip

    # -- reads -------------------------------------------------------------------
    def get_announcements(self, ids: Sequence[str]) -> list[AnalysedAnnouncement]:
        """The stored rows among ``ids``, in id order (missing ids are left out)."""
        if not ids:
            return []
        marks = ", ".join([self.placeholder] * len(ids))
        where = f"WHERE id IN ({marks}) ORDER BY id"
        return self._announcements(where, list(ids))

    def announcements(self) -> list[AnalysedAnnouncement]:
        """Every stored announcement, in id order."""
        return self._announcements("ORDER BY id", [])

    def count_announcements(self) -> int:
        return int(self.query(f"SELECT count(*) FROM {self.table('announcements')}")[0][0])

    def counts_by_category(self) -> dict[str, int]:
        return self._counts("announcements", "category")

    def counts_by_symbol(self) -> dict[str, int]:
        return self._counts("announcements", "symbol")

    def counts_by_watchlist(self) -> dict[str, int]:
        return self._counts("notifications", "watchlist")

    def notifications(self) -> list[Notification]:
        """Every notification, by watchlist then announcement id."""
        columns = ", ".join(_NOTIFICATION_COLUMNS)
        rows = self.query(
            f"SELECT {columns} FROM {self.table('notifications')} "
            "ORDER BY watchlist, announcement_id"
        )
        return [
            Notification(
                watchlist=r[0], announcement_id=r[1], symbol=r[2], category=Category(r[3]),
                sentiment=float(r[4]),
                created_at=datetime.fromisoformat(self.decode_time(r[5])),
            )
            for r in rows
        ]  # fmt: skip

    def _counts(self, table: str, column: str) -> dict[str, int]:
        rows = self.query(
            f"SELECT {column}, count(*) FROM {self.table(table)} "
            f"GROUP BY {column} ORDER BY count(*) DESC, {column}"
        )
        return {str(key): int(count) for key, count in rows}

    def _announcements(self, clause: str, params: Sequence[Any]) -> list[AnalysedAnnouncement]:
        columns = ", ".join(_ANNOUNCEMENT_COLUMNS[:-1])
        rows = self.query(f"SELECT {columns} FROM {self.table('announcements')} {clause}", params)
        return [self._record(row) for row in rows]

    def _record(self, row: tuple[Any, ...]) -> AnalysedAnnouncement:
        data = dict(zip(_ANNOUNCEMENT_COLUMNS, row, strict=False))
        figures = data["key_figures"]
        data["key_figures"] = json.loads(figures) if isinstance(figures, str) else figures
        data["analysed_at"] = self.decode_time(data["analysed_at"])
        data["sentiment"] = float(data["sentiment"])
        try:
            return parse_record(data)
        except InvalidJob as exc:
            raise StoreError(f"stored announcement {data['id']!r} is unreadable: {exc}") from exc

    # -- lifetime ------------------------------------------------------------------
    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_store(settings: DatabaseSettings, root: Path) -> Store:
    """Connect to ``settings.url`` and create the tables if missing."""
    if settings.is_postgres:
        from orchestrator.apps.announcements.postgres_store import PostgresStore

        return PostgresStore(settings.url, settings.schema, settings.timeout_s)
    from orchestrator.apps.announcements.sqlite_store import SqliteStore

    return SqliteStore(sqlite_path(settings.url, root), settings.timeout_s)


def sqlite_path(url: str, root: Path) -> str:
    """``sqlite:///var/x.db`` -> ``<root>/var/x.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    path = url.removeprefix("sqlite:///")
    if path == ":memory:":
        return path
    return str(Path(path) if Path(path).is_absolute() else root / path)
