"""The announcement pipeline through real spawned workers, on the machine's Postgres.

AI -> upload -> investor with the shipped worker programs: every announcement
lands exactly once although the upload worker is SIGKILLed between its
commit and its acknowledgement; notifications are never duplicated; the
malformed job and the scanned PDF end in dead letters with their reasons;
with the database down nothing is acknowledged, the upload worker exits 75,
and the jobs are written once the database is back. Plus the per-item
upload and the batch notifier in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.apps.announcements.announcement import Category
from orchestrator.apps.announcements.demo import load_samples
from orchestrator.apps.announcements.errors import InvalidJob, NotStored
from orchestrator.apps.announcements.handlers import UPLOAD_DELAY_ENV
from orchestrator.apps.announcements.offline import OfflineAnalyser
from orchestrator.apps.announcements.pipeline import (
    NotifyOutcome,
    analyse_job,
    notify_batch,
    upload_records,
)
from orchestrator.apps.announcements.pipeline_settings import (
    AnalysisSettings,
    DatabaseSettings,
    Watchlist,
    database_with_env,
    parse_watchlists,
)
from orchestrator.apps.announcements.store import Store, open_store
from orchestrator.apps.announcements.watchlists import notifications_for
from orchestrator.config import ConfigError, load_config
from orchestrator.embedded import free_port
from orchestrator.procs import wait_gone
from orchestrator.queues import DepthProbe
from orchestrator.validate import Problems, Section
from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT, SpawnerProc

WATCHLISTS = {
    "banks": {"symbols": ["HDFCBANK", "ICICIBANK", "YESBANK", "BAJFINANCE"]},
    "payouts": {"categories": ["dividend"]},
    "upbeat": {"min_sentiment": 0.3},
}
DEAD_SAMPLES = {"BSE-20241022-LT-01", "BSE-20241030-MALFORMED-01"}
NO_ENV_OVERRIDES = {"ORCH_DATABASE_URL": "", "ORCH_DATABASE_SCHEMA": ""}


def queues(**upload: Any) -> dict[str, Any]:
    """The shipped chain with test timings (no cooldown, short idle)."""

    def q(script: str, label: str, **kw: Any) -> dict[str, Any]:
        path = str(ROOT / "workers" / script)
        return {"label": label, "script": path, "cooldown": 0, "idle_timeout": 1, **kw}

    return {
        "ai_processing": q(
            "ephemeral_ai_worker.py", "AI", max_concurrent=3, then="supabase_upload"
        ),
        "supabase_upload": q(
            "ephemeral_supabase_worker.py",
            "UPLOAD",
            then="investor_processing",
            batch_size=50,
            **upload,
        ),
        "investor_processing": q("ephemeral_investor_worker.py", "INVESTOR", batch_size=50),
    }


def start(sp: SpawnerProc, db_url: str, schema: str) -> SpawnerProc:
    write_sections(sp, db_url, schema)
    return sp.start()


def write_sections(sp: SpawnerProc, db_url: str, schema: str) -> None:
    sp.write_config(
        {**sp.config, "database": {"url": db_url, "schema": schema}, "watchlists": WATCHLISTS}
    )


def enqueue(r: TextRedis, stream: str, jobs: list[dict[str, Any]]) -> None:
    for job in jobs:
        r.xadd(stream, {"payload": json.dumps(job)})


def busy(r: TextRedis, config_path: Path) -> dict[str, int]:
    """Entries undelivered or pending per queue (only those with some)."""
    depths = DepthProbe(load_config(config_path).queues.values()).measure(r)
    return {n: d.undelivered + d.pending for n, d in depths.items() if d.undelivered + d.pending}


def wait_drained(r: TextRedis, sp: SpawnerProc, timeout_s: float = 30.0) -> None:
    wait_until(
        lambda: not busy(r, sp.config_path),
        timeout_s,
        interval_s=0.05,
        message=lambda: f"still busy: {busy(r, sp.config_path)}\n{sp.text()[-3000:]}",
    )


def dead(r: TextRedis, stream: str) -> dict[str, str]:
    """Dead letters of ``stream``: job id -> error."""
    return {
        str(json.loads(fields["payload"]).get("id")): fields["error"]
        for _, fields in r.xrange(f"{stream}:dead")
    }


@pytest.fixture
def pg_store(pg_url: str, pg_schema: str) -> Iterator[Store]:
    """The tables created up front, so the test can read them before a worker writes."""
    with open_store(DatabaseSettings(url=pg_url, schema=pg_schema), ROOT) as store:
        yield store


def upload_pids(sp: SpawnerProc, r: TextRedis) -> list[int]:
    """PIDs of upload workers holding pending entries now."""
    holders = {
        str(c["name"]).rpartition("/")[2]
        for c in r.xinfo_consumers("supabase_upload", "workers")
        if int(c["pending"]) > 0
    }
    return [pid for wid, label, pid, _ in sp.spawned() if label == "UPLOAD" and wid in holders]


def committed_unacked(
    sp: SpawnerProc, r: TextRedis, pg_url: str, schema: str
) -> tuple[dict[str, Any], list[int]] | None:
    """Rows written while an upload worker still holds its batch: (rows, its pids)."""
    rows = updated_at(pg_url, schema)
    pids = upload_pids(sp, r) if rows else []
    return (rows, pids) if pids else None


def updated_at(pg_url: str, schema: str) -> dict[str, Any]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(f'SELECT id, updated_at FROM "{schema}".announcements').fetchall()
    return dict(rows)


def test_every_announcement_lands_once_when_the_upload_worker_is_killed_mid_batch(
    redis_url: str,
    r: TextRedis,
    spawner_factory: Any,
    pg_url: str,
    pg_schema: str,
    pg_store: Store,
) -> None:
    sp = spawner_factory(
        redis_url,
        queues(max_concurrent=1, env={UPLOAD_DELAY_ENV: "1"}),
        env=NO_ENV_OVERRIDES,
    )
    start(sp, pg_url, pg_schema)
    samples = load_samples(ROOT)
    enqueue(r, "ai_processing", samples)
    # The upload worker holds a committed batch unacknowledged for 1 s: kill it there.
    written, pids = wait_until(
        lambda: committed_unacked(sp, r, pg_url, pg_schema),
        30,
        interval_s=0.02,
        message=lambda: sp.text()[-3000:],
    )
    os.kill(pids[0], signal.SIGKILL)
    assert not wait_gone(pids[:1], 10.0)
    sp.wait_log("Recovered")
    wait_drained(r, sp)

    final = updated_at(pg_url, pg_schema)
    assert set(final) == {j["id"] for j in samples} - DEAD_SAMPLES  # 15, each once
    assert all(final[i] > at for i, at in written.items())  # written again: updated in place
    assert r.xlen("supabase_upload") == 15  # each analysed once, forwarded once
    assert r.xlen("investor_processing") == 15  # the killed batch was never forwarded
    dead_ai = dead(r, "ai_processing")
    assert set(dead_ai) == DEAD_SAMPLES
    assert "PDF has no extractable text (scanned image?)" in dead_ai["BSE-20241022-LT-01"]
    assert "InvalidJob: invalid job: symbol: is required" in dead_ai["BSE-20241030-MALFORMED-01"]
    assert r.xlen("supabase_upload:dead") == r.xlen("investor_processing:dead") == 0
    assert_notifications_once(pg_url, pg_schema)
    redeliver(sp, r, pg_url, pg_schema, [j for j in samples if j["id"] in final])


def redeliver(
    sp: SpawnerProc, r: TextRedis, pg_url: str, schema: str, stored: list[dict[str, Any]]
) -> None:
    """Jobs again at each stage: rows update, notifications stay unique, bad records fail alone."""
    before = updated_at(pg_url, schema)
    enqueue(r, "ai_processing", stored[:3])
    enqueue(r, "investor_processing", [{"id": stored[0]["id"]}] * 2)
    enqueue(r, "supabase_upload", [{"id": "broken", "symbol": "X"}])
    wait_drained(r, sp)
    after = updated_at(pg_url, schema)
    assert set(after) == set(before)
    assert all(after[j["id"]] > before[j["id"]] for j in stored[:3])
    assert_notifications_once(pg_url, schema)
    assert list(dead(r, "supabase_upload")) == ["broken"]
    assert "invalid analysed announcement" in dead(r, "supabase_upload")["broken"]
    assert r.xlen("investor_processing") == len(stored) + 3 + 2


def assert_notifications_once(pg_url: str, schema: str) -> None:
    lists = load_watchlists()
    with open_store(DatabaseSettings(url=pg_url, schema=schema), ROOT) as store:
        expected = notifications_for(store.announcements(), lists, created_at=datetime.now(UTC))
        got = [(n.watchlist, n.announcement_id) for n in store.notifications()]
    assert sorted(got) == sorted((n.watchlist, n.announcement_id) for n in expected)
    assert len(got) == len(set(got)) > 0


def load_watchlists() -> tuple[Watchlist, ...]:
    return parse_watchlists(Section(WATCHLISTS, "watchlists", Problems())).watchlists


def test_database_down_acknowledges_nothing_and_writes_once_it_is_back(
    redis_url: str, r: TextRedis, spawner_factory: Any, pg_url: str, pg_schema: str
) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    sp = spawner_factory(
        redis_url,
        queues(max_attempts=1),
        spawner={"crash_backoff_max": 1},
        env=NO_ENV_OVERRIDES,
    )
    start(sp, closed, pg_schema)
    texts = [j for j in load_samples(ROOT) if "text" in j and j["id"] not in DEAD_SAMPLES][:5]
    enqueue(r, "ai_processing", texts)
    # With max_attempts 1 a counted delivery would be dead-lettered at once: none may count.
    sp.wait_log("dependency unavailable: cannot connect", count=2, timeout_s=30)
    assert busy(r, sp.config_path).get("supabase_upload") == 5  # nothing acknowledged
    tempfail = sp.wait_log("exited with code 75")  # the README's legend: ⏳ for exit 75
    assert all("⏳ Worker" in line for line in tempfail), tempfail
    assert r.xlen("supabase_upload:dead") == 0 and r.xlen("investor_processing") == 0

    write_sections(sp, pg_url, pg_schema)  # the database is back
    sp.signal(signal.SIGHUP)
    sp.wait_log("Config reloaded")
    wait_drained(r, sp)
    assert set(updated_at(pg_url, pg_schema)) == {j["id"] for j in texts}
    assert r.xlen("supabase_upload:dead") == 0
    assert r.xlen("investor_processing") == 5


def test_upload_worker_exits_75_and_acknowledges_nothing_when_the_database_is_down(
    redis_url: str, r: TextRedis, tmp_path: Path
) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    config = tmp_path / "workers.yaml"
    config.write_text(json.dumps({"queues": queues(), "database": {"url": closed}}))
    r.xgroup_create("supabase_upload", "workers", id="0", mkstream=True)
    enqueue(r, "supabase_upload", analysed(3))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(
        ORCH_QUEUE="supabase_upload",
        ORCH_STREAM="supabase_upload",
        ORCH_REDIS_URL=redis_url,
        ORCH_CONFIG=str(config),
        ORCH_THEN="investor_processing",
        ORCH_IDLE_TIMEOUT="1",
    )
    script = str(ROOT / "workers" / "ephemeral_supabase_worker.py")
    done = subprocess.run([sys.executable, script], env=env, capture_output=True, timeout=60)
    assert done.returncode == 75, done.stderr.decode()[-2000:]
    assert b"dependency unavailable" in done.stderr
    assert r.xpending("supabase_upload", "workers")["pending"] == 3  # none acknowledged
    assert r.xlen("investor_processing") == 0 and r.xlen("supabase_upload:dead") == 0


# -- in-process: per-item upload, batch notifications, the env override ----------


def analysed(n: int = 4) -> list[dict[str, Any]]:
    jobs = [j for j in load_samples(ROOT) if "text" in j and j["id"] not in DEAD_SAMPLES][:n]
    analyser, settings = OfflineAnalyser(), AnalysisSettings()
    return [json.loads(json.dumps(analyse_job(j, analyser, settings, ROOT))) for j in jobs]


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    with open_store(DatabaseSettings(url=f"sqlite:///{tmp_path}/t.db"), tmp_path) as store:
        yield store


def test_upload_records_fails_only_the_bad_items(sqlite_store: Store) -> None:
    records = analysed()
    batch = [records[0], dict(records[1], category="gossip"), "junk", records[2], records[0]]
    outcomes = upload_records(sqlite_store, batch)
    assert outcomes[0] == outcomes[4] == records[0]["id"] and outcomes[3] == records[2]["id"]
    assert isinstance(outcomes[1], InvalidJob) and "category: must be one of" in str(outcomes[1])
    assert isinstance(outcomes[2], InvalidJob)
    assert sqlite_store.count_announcements() == 2


def test_notify_batch_reports_per_job(sqlite_store: Store) -> None:
    records = analysed()
    upload_records(sqlite_store, records[:2])
    lists = (Watchlist("all"), Watchlist("results", categories=frozenset({Category.DIVIDEND})))
    jobs = [{"id": records[0]["id"]}, {"id": records[3]["id"]}, {"x": 1}, {"id": records[1]["id"]}]
    first = notify_batch(jobs, sqlite_store, lists)
    assert isinstance(first[0], NotifyOutcome) and isinstance(first[3], NotifyOutcome)
    assert isinstance(first[1], NotStored) and isinstance(first[2], InvalidJob)
    assert first[0].written == len(sqlite_store.notifications()) >= 2
    again = notify_batch(jobs, sqlite_store, lists)
    assert isinstance(again[0], NotifyOutcome) and again[0].written == 0


def test_database_env_override_is_checked(tmp_path: Path) -> None:
    base = DatabaseSettings()
    env: Mapping[str, str] = {
        "ORCH_DATABASE_URL": "postgresql://u@h/db",
        "ORCH_DATABASE_SCHEMA": "s1",
    }
    assert database_with_env(base, env) == DatabaseSettings(url="postgresql://u@h/db", schema="s1")
    assert database_with_env(base, {"ORCH_DATABASE_URL": ""}) is base
    with pytest.raises(ConfigError, match="ORCH_DATABASE_URL"):
        database_with_env(base, {"ORCH_DATABASE_URL": "mysql://x"})
