"""Untrusted dicts to typed values: jobs, analysed records, analyser replies.

Jobs arrive from scrapers through Redis, analysed records from the AI worker
through Redis, analyses from a language model: all are checked field by
field, and every problem is named (``symbol: is required``,
``key_figures[1].value: must be a number``) in one error.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from orchestrator.apps.announcements.announcement import (
    CATEGORY_NAMES,
    AnalysedAnnouncement,
    Analysis,
    Announcement,
    Category,
    FigureKind,
    KeyFigure,
)
from orchestrator.apps.announcements.errors import AnalysisError, InvalidJob
from orchestrator.apps.announcements.summary import shorten
from orchestrator.validate import Problems, Section

__all__ = ["parse_analysis_reply", "parse_job", "parse_key_figures", "parse_record"]

_MISSING = object()


def parse_job(job: object) -> Announcement:
    """An ``ai_processing`` job; raises ``InvalidJob`` naming every bad field."""
    problems = Problems()
    s = Section(job, "", problems)
    ident = _identifier(s)
    symbol, exchange, title = (_text(s, key) for key in ("symbol", "exchange", "title"))
    text = _optional_text(s, "text")
    pdf_path = _optional_text(s, "pdf_path")
    if s.data and text is None and pdf_path is None:
        problems.add("", "one of 'text' or 'pdf_path' is required")
    if problems.lines:
        raise InvalidJob("invalid job: " + "; ".join(problems.lines))
    return Announcement(
        id=ident,
        symbol=symbol.upper(),
        exchange=exchange.upper(),
        title=" ".join(title.split()),
        text=text,
        pdf_path=pdf_path,
    )


def parse_record(data: object) -> AnalysedAnnouncement:
    """An analysed announcement (``AnalysedAnnouncement.to_dict()``) read back."""
    problems = Problems()
    s = Section(data, "", problems)
    ident = _identifier(s)
    symbol, exchange, title = (_text(s, key) for key in ("symbol", "exchange", "title"))
    analysis = _analysis(s, summary_max_chars=None)
    analysed_at = _timestamp(s, "analysed_at")
    if problems.lines or analysis is None or analysed_at is None:
        raise InvalidJob("invalid analysed announcement: " + "; ".join(problems.lines))
    return AnalysedAnnouncement(
        id=ident,
        symbol=symbol.upper(),
        exchange=exchange.upper(),
        title=title,
        category=analysis.category,
        sentiment=analysis.sentiment,
        summary=analysis.summary,
        key_figures=analysis.key_figures,
        analysed_at=analysed_at,
    )


def parse_analysis_reply(data: object, summary_max_chars: int) -> Analysis:
    """An analyser's JSON object; raises ``AnalysisError`` with every problem."""
    problems = Problems()
    analysis = _analysis(Section(data, "", problems), summary_max_chars)
    if problems.lines or analysis is None:
        raise AnalysisError("reply is not the expected JSON: " + "; ".join(problems.lines))
    return analysis


def parse_key_figures(value: object, path: str, problems: Problems) -> tuple[KeyFigure, ...]:
    if not isinstance(value, list):
        problems.add(path, f"must be a list, got {type(value).__name__}")
        return ()
    figures = (_figure(Section(item, f"{path}[{i}]", problems)) for i, item in enumerate(value))
    return tuple(f for f in figures if f is not None)


def _analysis(s: Section, summary_max_chars: int | None) -> Analysis | None:
    before = len(s.problems.lines)
    category = s.string("category")
    if isinstance(category, str):  # "Credit Rating" from a model means credit_rating
        category = re.sub(r"[\s-]+", "_", category.strip().lower())
    if isinstance(category, str) and category not in CATEGORY_NAMES:
        s.error("category", f"must be one of {', '.join(CATEGORY_NAMES)}, got {category!r}")
    sentiment = s.number("sentiment", min=-1, max=1)  # a finite number
    summary = s.string("summary")
    figures = parse_key_figures(s.raw("key_figures", []), s.key_path("key_figures"), s.problems)
    if len(s.problems.lines) > before:
        return None
    if summary_max_chars is not None:
        summary = shorten(" ".join(summary.split()), summary_max_chars)
    return Analysis(
        category=Category(category),
        sentiment=round(sentiment, 3),
        summary=summary,
        key_figures=figures,
    )


def _figure(s: Section) -> KeyFigure | None:
    before = len(s.problems.lines)
    kind = s.string("kind", choices=[k.value for k in FigureKind])
    value: float | str = ""
    currency = None
    if kind == FigureKind.DATE:
        value = _iso_date(s, "value")
    elif kind in (FigureKind.AMOUNT, FigureKind.PERCENT):
        value = s.number("value", 0.0)  # a finite number
    if kind == FigureKind.AMOUNT:
        currency = s.string("currency")
        if isinstance(currency, str) and not (len(currency) == 3 and currency.isalpha()):
            s.error("currency", f"must be an ISO 4217 code like INR, got {currency!r}")
    label = _optional_text(s, "label")
    text = _optional_text(s, "text") or ""
    if len(s.problems.lines) > before:
        return None
    upper = currency.upper() if isinstance(currency, str) else None
    return KeyFigure(FigureKind(kind), value, text=text, currency=upper, label=label)


def _identifier(s: Section) -> str:
    value = s.raw("id", _MISSING)
    if value is _MISSING or value is None:
        s.error("id", "is required")
    elif isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    elif not isinstance(value, str) or not value.strip():
        s.error("id", f"must be a non-empty string or an integer, got {value!r}")
    else:
        return value.strip()
    return ""


def _text(s: Section, key: str) -> str:
    value = s.raw(key)
    if value is None:
        s.error(key, "is required")
    elif not isinstance(value, str):
        s.error(key, f"must be a string, got {type(value).__name__} {value!r}")
    elif not value.strip():
        s.error(key, "must not be empty")
    else:
        return value.strip()
    return ""


def _optional_text(s: Section, key: str) -> str | None:
    if s.raw(key) is None:
        return None
    value = s.string(key, None)
    if isinstance(value, str) and not value.strip():
        s.error(key, "must not be empty")
        return None
    return value if isinstance(value, str) else None


def _iso_date(s: Section, key: str) -> str:
    value = s.string(key, "")
    try:
        return date.fromisoformat(value).isoformat() if isinstance(value, str) else ""
    except ValueError:
        s.error(key, f"must be an ISO date YYYY-MM-DD, got {value!r}")
        return ""


def _timestamp(s: Section, key: str) -> datetime | None:
    value = s.string(key)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        s.error(key, f"must be an ISO timestamp, got {value!r}")
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
