"""The store on SQLite and on the machine's real Postgres (own schema per test)."""

from __future__ import annotations

import dataclasses
import socket
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from orchestrator.apps.announcements.announcement import (
    AnalysedAnnouncement,
    Category,
    FigureKind,
    KeyFigure,
    Notification,
)
from orchestrator.apps.announcements.errors import DatabaseUnavailable, StoreError
from orchestrator.apps.announcements.pipeline_settings import DatabaseSettings
from orchestrator.apps.announcements.postgres_store import PostgresStore
from orchestrator.apps.announcements.store import Store, open_store, sqlite_path
from orchestrator.connections import redact_url

T0 = datetime(2024, 10, 14, 12, 0, tzinfo=UTC)


def record(ident: str, **changes: object) -> AnalysedAnnouncement:
    base = AnalysedAnnouncement(
        id=ident,
        symbol="RELIANCE",
        exchange="NSE",
        title="Outcome of Board Meeting",
        category=Category.FINANCIAL_RESULTS,
        sentiment=0.25,
        summary="The Board approved the results.",
        key_figures=(
            KeyFigure(FigureKind.AMOUNT, 2.5e12, "Rs. 2,50,000 crore", "INR", "revenue"),
            KeyFigure(FigureKind.DATE, "2024-09-30", "September 30, 2024", label="period_end"),
        ),
        analysed_at=T0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def notification(watchlist: str, ident: str) -> Notification:
    return Notification(watchlist, ident, "RELIANCE", Category.DIVIDEND, 0.5, T0)


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseSettings:
    if request.param == "sqlite":
        return DatabaseSettings(url=f"sqlite:///{tmp_path}/store.db")
    url = request.getfixturevalue("pg_url")
    return DatabaseSettings(url=url, schema=request.getfixturevalue("pg_schema"))


@pytest.fixture
def store(settings: DatabaseSettings, tmp_path: Path) -> Iterator[Store]:
    with open_store(settings, tmp_path) as opened:
        yield opened


def test_round_trip(store: Store) -> None:
    row = record("A1")
    assert store.upsert_announcements([row]) == 1
    assert store.get_announcements(["A1", "missing"]) == [row]
    assert store.count_announcements() == 1


def test_redelivered_job_updates_never_duplicates(store: Store) -> None:
    store.upsert_announcements([record("A1"), record("A2")])
    later = T0 + timedelta(minutes=5)
    store.upsert_announcements([record("A1", summary="re-analysed", analysed_at=later)])
    store.upsert_announcements([record("A1", summary="re-analysed", analysed_at=later)])
    assert store.count_announcements() == 2
    assert store.get_announcements(["A1"])[0].summary == "re-analysed"


def test_an_older_analysis_never_overwrites_a_newer_one(store: Store) -> None:
    store.upsert_announcements([record("A1", summary="new", analysed_at=T0)])
    store.upsert_announcements([record("A1", summary="old", analysed_at=T0 - timedelta(hours=1))])
    assert store.get_announcements(["A1"])[0].summary == "new"


def test_one_id_twice_in_a_batch_keeps_the_last(store: Store) -> None:
    assert (
        store.upsert_announcements([record("A1", summary="first"), record("A1", summary="second")])
        == 1
    )
    assert store.get_announcements(["A1"])[0].summary == "second"


def test_a_failing_row_rolls_back_the_whole_batch(store: Store) -> None:
    store.upsert_announcements([record("A1", summary="original")])
    batch = [
        record("A0", summary="new row"),
        record("A1", summary="changed", analysed_at=T0 + timedelta(hours=1)),
        record("A2", sentiment=5.0),  # violates the CHECK constraint
    ]
    with pytest.raises(StoreError) as info:
        store.upsert_announcements(batch)
    assert not isinstance(info.value, DatabaseUnavailable)
    assert store.count_announcements() == 1
    assert store.get_announcements(["A1"])[0].summary == "original"
    store.upsert_announcements(batch[:2])  # the connection is usable afterwards
    assert store.count_announcements() == 2


def test_notifications_are_not_duplicated(store: Store) -> None:
    first = [notification("banks", "A1"), notification("all", "A1"), notification("banks", "A2")]
    assert store.insert_notifications(first) == 3
    assert store.insert_notifications([*first, notification("banks", "A3")]) == 1
    assert store.insert_notifications([]) == 0
    assert [(n.watchlist, n.announcement_id) for n in store.notifications()] == [
        ("all", "A1"),
        ("banks", "A1"),
        ("banks", "A2"),
        ("banks", "A3"),
    ]
    assert store.notifications()[0] == notification("all", "A1")
    assert store.counts_by_watchlist() == {"banks": 3, "all": 1}


def test_read_backs_for_the_report(store: Store) -> None:
    store.upsert_announcements(
        [
            record("A1"),
            record("A2", symbol="TCS"),
            record("A3", symbol="TCS", category=Category.DIVIDEND),
        ]
    )
    assert store.counts_by_category() == {"financial_results": 2, "dividend": 1}
    assert store.counts_by_symbol() == {"TCS": 2, "RELIANCE": 1}
    assert [a.id for a in store.announcements()] == ["A1", "A2", "A3"]


def test_tables_survive_reopening(settings: DatabaseSettings, tmp_path: Path) -> None:
    with open_store(settings, tmp_path) as first:
        first.upsert_announcements([record("A1")])
    with open_store(settings, tmp_path) as second:
        assert second.count_announcements() == 1


def test_sqlite_relative_path_is_under_the_root(tmp_path: Path) -> None:
    assert sqlite_path("sqlite:///var/demo.db", tmp_path) == str(tmp_path / "var" / "demo.db")
    assert sqlite_path("sqlite:////abs/x.db", tmp_path) == "/abs/x.db"
    with open_store(DatabaseSettings(), tmp_path) as default:
        default.upsert_announcements([record("A1")])
    assert (tmp_path / "var" / "demo.db").is_file()


def test_sqlite_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(DatabaseUnavailable):
        open_store(DatabaseSettings(url=f"sqlite:///{tmp_path}/file/sub/x.db"), tmp_path)


def test_sqlite_locked_too_long_is_unavailable(tmp_path: Path) -> None:
    settings = DatabaseSettings(url=f"sqlite:///{tmp_path}/x.db", timeout_s=0.1)
    with open_store(settings, tmp_path) as store:
        holder = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(DatabaseUnavailable, match="locked"):
                store.upsert_announcements([record("A1")])
        finally:
            holder.rollback()
            holder.close()
        store.upsert_announcements([record("A1")])
        assert store.count_announcements() == 1


def test_postgres_refusing_connections_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://user:hunter2@127.0.0.1:{port}/test"
    with pytest.raises(DatabaseUnavailable) as info:
        open_store(DatabaseSettings(url=url, timeout_s=2), tmp_path)
    assert "hunter2" not in info.value.reason and "***" in info.value.reason


def test_postgres_connection_lost_mid_life_is_unavailable(pg_url: str, pg_schema: str) -> None:
    store = PostgresStore(pg_url, pg_schema)
    try:
        pid = store.query("SELECT pg_backend_pid()")[0][0]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(DatabaseUnavailable):
            store.upsert_announcements([record("A1")])
    finally:
        store.close()
    with PostgresStore(pg_url, pg_schema) as fresh:
        assert fresh.count_announcements() == 0


def test_postgres_workers_starting_together_create_tables_once(pg_url: str, pg_schema: str) -> None:
    schema = f"{pg_schema}_new"  # not created yet: both race to create it
    errors: list[BaseException] = []

    def open_and_write(ident: str) -> None:
        try:
            with PostgresStore(pg_url, schema) as store:
                store.upsert_announcements([record(ident)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_write, args=(f"A{i}",)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        with PostgresStore(pg_url, schema) as store:
            assert store.count_announcements() == 4
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_redact_url() -> None:
    assert redact_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
