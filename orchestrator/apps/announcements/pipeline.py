"""What each of the three worker programs does with its jobs.

- AI worker (``ai_processing``): ``analyse_job(job, analyser, settings, root)``
  returns the analysed record as a dict, for ``then: supabase_upload``.
- Upload worker (``supabase_upload``, batch handler):
  ``upload_records(store, jobs)`` validates each record on its own and
  upserts the valid ones in one transaction; per job, the stored id or the
  error that fails that job alone. ``upload_batch(store, jobs)`` is the
  all-or-nothing form (one invalid record fails the batch).
- Investor worker (``investor_processing``): ``notify_batch(jobs, store,
  watchlists)`` reads the stored announcements the jobs name and writes
  their notifications in one transaction; ``notify_job`` does one job,
  ``notify_all(store, watchlists)`` every stored announcement.

Errors: ``InvalidJob`` and ``TextExtractionError`` are permanent (the same
job fails the same way); ``AnalysisError``, ``StoreError`` and ``NotStored``
are failed attempts; ``DatabaseUnavailable`` means: acknowledge nothing and
exit non-zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.apps.announcements.analysers import Analyser
from orchestrator.apps.announcements.announcement import AnalysedAnnouncement, Notification, utc_now
from orchestrator.apps.announcements.errors import (
    AnnouncementError,
    InvalidJob,
    NotStored,
    StoreError,
)
from orchestrator.apps.announcements.payloads import parse_job, parse_record
from orchestrator.apps.announcements.pdftext import announcement_text
from orchestrator.apps.announcements.pipeline_settings import AnalysisSettings, Watchlist
from orchestrator.apps.announcements.store import Store
from orchestrator.apps.announcements.watchlists import notifications_for

__all__ = [
    "NotifyOutcome",
    "analyse_job",
    "notify_all",
    "notify_batch",
    "notify_job",
    "upload_batch",
    "upload_records",
]

Clock = Callable[[], datetime]


def analyse_job(
    job: object,
    analyser: Analyser,
    settings: AnalysisSettings,
    root: Path,
    now: Clock = utc_now,
) -> dict[str, Any]:
    """Validate the job, get its text (PDF or inline), analyse it: the record to forward."""
    announcement = parse_job(job)
    text = announcement_text(announcement, root, settings.max_pdf_pages, settings.max_text_chars)
    analysis = analyser.analyse(announcement, text)
    return AnalysedAnnouncement.build(announcement, analysis, now()).to_dict()


def upload_batch(store: Store, jobs: Sequence[object]) -> int:
    """Upsert a batch of analysed records in one transaction; how many distinct ids.

    Every record is validated first: one invalid record fails the batch
    (``InvalidJob`` naming its position) before anything is written.
    """
    rows: list[AnalysedAnnouncement] = []
    for index, job in enumerate(jobs):
        try:
            rows.append(parse_record(job))
        except InvalidJob as exc:
            raise InvalidJob(f"batch item {index}: {exc.reason}") from exc
    return store.upsert_announcements(rows)


def upload_records(store: Store, jobs: Sequence[object]) -> list[str | AnnouncementError]:
    """Upsert the valid records of a batch in one transaction; per job, its id or its error.

    An invalid record gets its ``InvalidJob`` and the others are written. If
    the database refuses the batch (``StoreError``), each record is written
    in a transaction of its own, so only the refused ones get the error.
    ``DatabaseUnavailable`` propagates: nothing was written.
    """
    outcomes: list[str | AnnouncementError] = []
    rows: dict[int, AnalysedAnnouncement] = {}
    for index, job in enumerate(jobs):
        try:
            rows[index] = parse_record(job)
        except InvalidJob as exc:
            outcomes.append(exc)
            continue
        outcomes.append(rows[index].id)
    try:
        store.upsert_announcements(list(rows.values()))
    except StoreError as exc:
        if len(rows) == 1:
            outcomes[next(iter(rows))] = exc
            return outcomes
        for index, row in rows.items():
            try:
                store.upsert_announcements([row])
            except StoreError as one:
                outcomes[index] = one
    return outcomes


@dataclass(frozen=True, slots=True)
class NotifyOutcome:
    """The notifications that matched, and how many of them were written just now."""

    matched: tuple[Notification, ...]
    written: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "matched": [[n.watchlist, n.announcement_id] for n in self.matched],
        }


def notify_job(
    job: object, store: Store, watchlists: Iterable[Watchlist], now: Clock = utc_now
) -> NotifyOutcome:
    """Notifications for the stored announcement ``job["id"]`` names.

    The job may be the analysed record itself or just ``{"id": ...}``: the
    stored row is what is matched. ``NotStored`` when it is not stored yet.
    """
    ident = _announcement_id(job)
    stored = store.get_announcements([ident])
    if not stored:
        raise NotStored(f"announcement {ident!r} is not in the store yet")
    return _notify(store, stored, watchlists, now)


def notify_batch(
    jobs: Sequence[object], store: Store, watchlists: Iterable[Watchlist], now: Clock = utc_now
) -> list[NotifyOutcome | AnnouncementError]:
    """``notify_job`` for a batch: one read, one write transaction; per job, its outcome.

    A job without a usable id gets ``InvalidJob``, one whose announcement is
    not stored ``NotStored``; the others' notifications are written together
    (``written`` is the batch's count of new rows, on every job's outcome).
    """
    idents: list[str | AnnouncementError] = []
    for job in jobs:
        try:
            idents.append(_announcement_id(job))
        except InvalidJob as exc:
            idents.append(exc)
    wanted = sorted({i for i in idents if isinstance(i, str)})
    stored = {a.id: a for a in store.get_announcements(wanted)}
    batch = _notify(store, list(stored.values()), watchlists, now)
    by_id: dict[str, list[Notification]] = {}
    for n in batch.matched:
        by_id.setdefault(n.announcement_id, []).append(n)
    outcomes: list[NotifyOutcome | AnnouncementError] = []
    for ident in idents:
        if isinstance(ident, AnnouncementError):
            outcomes.append(ident)
        elif ident not in stored:
            outcomes.append(NotStored(f"announcement {ident!r} is not in the store yet"))
        else:
            outcomes.append(NotifyOutcome(tuple(by_id.get(ident, ())), batch.written))
    return outcomes


def notify_all(
    store: Store, watchlists: Iterable[Watchlist], now: Clock = utc_now
) -> NotifyOutcome:
    """Match every stored announcement against the watchlists."""
    return _notify(store, store.announcements(), watchlists, now)


def _announcement_id(job: object) -> str:
    ident = job.get("id") if isinstance(job, dict) else None
    if isinstance(ident, int) and not isinstance(ident, bool):
        ident = str(ident)
    if not isinstance(ident, str) or not ident.strip():
        raise InvalidJob(f"invalid investor job: id: must be a non-empty string, got {ident!r}")
    return ident.strip()


def _notify(
    store: Store,
    announcements: Sequence[AnalysedAnnouncement],
    watchlists: Iterable[Watchlist],
    now: Clock,
) -> NotifyOutcome:
    matched = notifications_for(announcements, watchlists, now())
    written = store.insert_notifications(matched) if matched else 0
    return NotifyOutcome(matched=tuple(matched), written=written)
