"""Matching analysed announcements against the configured watchlists (pure).

A watchlist matches when the announcement's symbol is among its symbols (or
it lists none), its category among its categories (or it lists none), and
its sentiment lies within ``[min_sentiment, max_sentiment]``. The investor
worker turns each match into one ``Notification``; the store's unique key
(watchlist, announcement id) makes writing them again harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from orchestrator.apps.announcements.announcement import AnalysedAnnouncement, Notification
from orchestrator.apps.announcements.pipeline_settings import Watchlist

__all__ = ["matches", "matching_watchlists", "notifications_for"]


def matches(watchlist: Watchlist, announcement: AnalysedAnnouncement) -> bool:
    return (
        (not watchlist.symbols or announcement.symbol.upper() in watchlist.symbols)
        and (not watchlist.categories or announcement.category in watchlist.categories)
        and watchlist.min_sentiment <= announcement.sentiment <= watchlist.max_sentiment
    )


def matching_watchlists(
    announcement: AnalysedAnnouncement, watchlists: Iterable[Watchlist]
) -> tuple[Watchlist, ...]:
    """The watchlists ``announcement`` matches, in configured order."""
    return tuple(w for w in watchlists if matches(w, announcement))


def notifications_for(
    announcements: Iterable[AnalysedAnnouncement],
    watchlists: Iterable[Watchlist],
    created_at: datetime,
) -> list[Notification]:
    """One notification per (matching watchlist, announcement)."""
    lists = tuple(watchlists)
    return [
        Notification(
            watchlist=w.name,
            announcement_id=a.id,
            symbol=a.symbol,
            category=a.category,
            sentiment=a.sentiment,
            created_at=created_at,
        )
        for a in announcements
        for w in matching_watchlists(a, lists)
    ]
