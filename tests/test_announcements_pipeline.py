"""The three workers' handlers in one process: analyse, upload, notify, report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.apps.announcements.announcement import AnalysedAnnouncement, Category
from orchestrator.apps.announcements.demo_report import format_report, read_report
from orchestrator.apps.announcements.errors import AnnouncementError, InvalidJob, NotStored
from orchestrator.apps.announcements.offline import OfflineAnalyser
from orchestrator.apps.announcements.payloads import parse_record
from orchestrator.apps.announcements.pipeline import (
    analyse_job,
    notify_all,
    notify_job,
    upload_batch,
)
from orchestrator.apps.announcements.pipeline_settings import (
    AnalysisSettings,
    DatabaseSettings,
    Watchlist,
)
from orchestrator.apps.announcements.store import Store, open_store
from orchestrator.apps.announcements.watchlists import matches, matching_watchlists

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "announcements" / "announcements.jsonl"
NOW = datetime(2024, 11, 15, 10, 0, tzinfo=UTC)
WATCHLISTS = (
    Watchlist("banks", symbols=frozenset({"HDFCBANK", "ICICIBANK", "YESBANK"})),
    Watchlist("payouts", categories=frozenset({Category.DIVIDEND})),
    Watchlist("good_news", min_sentiment=0.5),
)


def through_redis(value: Any) -> Any:
    return json.loads(json.dumps(value))


def analyse_samples() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Analysed records of the samples that analyse; the reasons of those that do not."""
    analyser, settings = OfflineAnalyser(), AnalysisSettings()
    records, dead = [], {}
    for line in SAMPLES.read_text().splitlines():
        job = json.loads(line)
        try:
            records.append(through_redis(analyse_job(job, analyser, settings, ROOT, lambda: NOW)))
        except AnnouncementError as exc:
            dead[job["id"]] = exc.reason
    return records, dead


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        settings = DatabaseSettings(url="sqlite:///var/test.db")
    else:
        url, schema = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema")
        settings = DatabaseSettings(url=url, schema=schema)
    with open_store(settings, tmp_path) as opened:
        yield opened


def test_samples_flow_through_every_stage_exactly_once(store: Store) -> None:
    records, dead = analyse_samples()
    assert set(dead) == {"BSE-20241022-LT-01", "BSE-20241030-MALFORMED-01"}
    assert "scanned image" in dead["BSE-20241022-LT-01"]
    assert "symbol: is required" in dead["BSE-20241030-MALFORMED-01"]
    for _ in range(2):  # the second pass is every job redelivered
        for start in range(0, len(records), 4):
            upload_batch(store, records[start : start + 4])
        outcome = notify_all(store, WATCHLISTS, lambda: NOW)
    assert store.count_announcements() == len(records) == 15
    assert sum(store.counts_by_category().values()) == 15
    assert set(store.counts_by_category()) == {c.value for c in Category}
    assert outcome.written == 0 and outcome.matched
    by_list = store.counts_by_watchlist()
    assert by_list["banks"] == 3 and by_list["payouts"] == 2
    assert by_list["good_news"] == len([r for r in records if r["sentiment"] >= 0.5])
    report = format_report(read_report(store), {"ai_processing": 2})
    for heading in ("By category:", "By symbol:", "Notifications by watchlist:", "Dead letters:"):
        assert heading in report
    assert "dividend" in report and "HDFCBANK" in report and "ai_processing" in report


def test_analysed_record_survives_the_queue() -> None:
    records, _ = analyse_samples()
    for data in records:
        parsed = parse_record(data)
        assert isinstance(parsed, AnalysedAnnouncement)
        assert through_redis(parsed.to_dict()) == data
        assert parsed.analysed_at == NOW


def test_one_invalid_record_fails_the_batch_before_writing(store: Store) -> None:
    records, _ = analyse_samples()
    broken = dict(records[1], category="gossip")
    with pytest.raises(InvalidJob, match=r"batch item 1: .*category: must be one of"):
        upload_batch(store, [records[0], broken, records[2]])
    assert store.count_announcements() == 0


def test_notify_job_reads_the_stored_announcement(store: Store) -> None:
    records, _ = analyse_samples()
    hdfc = next(r for r in records if r["symbol"] == "HDFCBANK")
    with pytest.raises(NotStored):
        notify_job(hdfc, store, WATCHLISTS)
    upload_batch(store, [hdfc])
    first = notify_job({"id": hdfc["id"]}, store, WATCHLISTS)
    assert {n.watchlist for n in first.matched} == {"banks", "payouts"}
    assert first.written == 2
    again = notify_job(hdfc, store, WATCHLISTS)
    assert again.written == 0 and again.to_dict()["written"] == 0
    with pytest.raises(InvalidJob, match="id: must be"):
        notify_job({"symbol": "X"}, store, WATCHLISTS)


def test_watchlist_matching_is_pure() -> None:
    records, _ = analyse_samples()
    idea = parse_record(next(r for r in records if r["symbol"] == "IDEA"))
    assert matches(Watchlist("any"), idea)
    assert matches(Watchlist("telecom", symbols=frozenset({"IDEA"})), idea)
    assert not matches(Watchlist("banks", symbols=frozenset({"HDFCBANK"})), idea)
    results = frozenset({Category.FINANCIAL_RESULTS})
    assert matches(Watchlist("results", categories=results), idea)
    assert not matches(Watchlist("div", categories=frozenset({Category.DIVIDEND})), idea)
    assert not matches(Watchlist("upbeat", min_sentiment=0.0), idea)
    assert matches(Watchlist("alarm", max_sentiment=-0.3), idea)
    assert [w.name for w in matching_watchlists(idea, WATCHLISTS)] == []
