"""The demo's final table, read back from the store.

``read_report(store)`` takes the numbers; ``format_report(report,
dead_letters)`` lays them out as plain text. Dead letters live in Redis, so
the caller passes their count per queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.apps.announcements.announcement import Notification
from orchestrator.apps.announcements.store import Store

__all__ = ["Report", "format_report", "read_report"]


@dataclass(frozen=True, slots=True)
class Report:
    announcements: int
    by_category: Mapping[str, int]
    by_symbol: Mapping[str, int]
    by_watchlist: Mapping[str, int]
    notifications: tuple[Notification, ...]


def read_report(store: Store) -> Report:
    return Report(
        announcements=store.count_announcements(),
        by_category=store.counts_by_category(),
        by_symbol=store.counts_by_symbol(),
        by_watchlist=store.counts_by_watchlist(),
        notifications=tuple(store.notifications()),
    )


def format_report(report: Report, dead_letters: Mapping[str, int] | None = None) -> str:
    """Sections of ``name  count`` rows: categories, symbols, notifications, dead letters."""
    lines = [f"Announcements stored: {report.announcements}"]
    lines += _section("By category", report.by_category)
    lines += _section("By symbol", report.by_symbol)
    lines += _section("Notifications by watchlist", report.by_watchlist)
    lines += [
        f"  {n.watchlist:<16} {n.symbol:<12} {n.category.value:<20} {n.sentiment:+.2f}  "
        f"{n.announcement_id}"
        for n in report.notifications
    ]
    if dead_letters is not None:
        lines += _section("Dead letters", dead_letters)
    return "\n".join(lines)


def _section(heading: str, counts: Mapping[str, int]) -> list[str]:
    rows = [f"  {name:<28} {count:>6}" for name, count in counts.items()]
    return ["", f"{heading}:", *(rows or ["  (none)"])]
