"""The data types of the announcement pipeline, and their JSON form.

An ``Announcement`` is a job on ``ai_processing``; the AI worker turns it into
an ``AnalysedAnnouncement`` (forwarded to ``supabase_upload`` as
``to_dict()``); the investor worker writes ``Notification`` rows. Turning
untrusted dicts back into these types is ``payloads``' job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Category(StrEnum):
    FINANCIAL_RESULTS = "financial_results"
    DIVIDEND = "dividend"
    BOARD_MEETING = "board_meeting"
    ACQUISITION_MERGER = "acquisition_merger"
    INSIDER_TRADING = "insider_trading"
    CREDIT_RATING = "credit_rating"
    OTHER = "other"


CATEGORY_NAMES: tuple[str, ...] = tuple(c.value for c in Category)


class FigureKind(StrEnum):
    AMOUNT = "amount"  # value: float in units (crore and lakh expanded), currency: ISO code
    DATE = "date"  # value: ISO date "YYYY-MM-DD"
    PERCENT = "percent"  # value: float, 12.5 for "12.5%"


@dataclass(frozen=True, slots=True)
class KeyFigure:
    """One figure the announcement states, normalised.

    ``text`` is the figure as written; ``label`` says what it is when the
    words before it tell (``record_date``, ``net_profit``, ``dividend``, ...).
    """

    kind: FigureKind
    value: float | str
    text: str = ""
    currency: str | None = None
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "value": self.value}
        if self.currency is not None:
            out["currency"] = self.currency
        if self.label is not None:
            out["label"] = self.label
        if self.text:
            out["text"] = self.text
        return out


@dataclass(frozen=True, slots=True)
class Analysis:
    """What an analyser says about one announcement."""

    category: Category
    sentiment: float  # -1 (bad for shareholders) .. 1 (good)
    summary: str
    key_figures: tuple[KeyFigure, ...] = ()


@dataclass(frozen=True, slots=True)
class Announcement:
    """A job on ``ai_processing``: its text inline, or a path to its PDF, or both."""

    id: str
    symbol: str
    exchange: str
    title: str
    text: str | None = None
    pdf_path: str | None = None


@dataclass(frozen=True, slots=True)
class AnalysedAnnouncement:
    """One row of the ``announcements`` table; the AI worker's result."""

    id: str
    symbol: str
    exchange: str
    title: str
    category: Category
    sentiment: float
    summary: str
    key_figures: tuple[KeyFigure, ...]
    analysed_at: datetime  # timezone-aware, UTC

    @classmethod
    def build(
        cls, job: Announcement, analysis: Analysis, analysed_at: datetime
    ) -> AnalysedAnnouncement:
        return cls(
            id=job.id,
            symbol=job.symbol,
            exchange=job.exchange,
            title=job.title,
            category=analysis.category,
            sentiment=analysis.sentiment,
            summary=analysis.summary,
            key_figures=analysis.key_figures,
            analysed_at=analysed_at.astimezone(UTC),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "symbol": self.symbol,
            "exchange": self.exchange,
            "title": self.title,
            "category": self.category.value,
            "sentiment": self.sentiment,
            "summary": self.summary,
            "key_figures": [f.to_dict() for f in self.key_figures],
            "analysed_at": self.analysed_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Notification:
    """One row of the ``notifications`` table: unique per (watchlist, announcement)."""

    watchlist: str
    announcement_id: str
    symbol: str
    category: Category
    sentiment: float
    created_at: datetime  # timezone-aware, UTC


def utc_now() -> datetime:
    return datetime.now(UTC)
