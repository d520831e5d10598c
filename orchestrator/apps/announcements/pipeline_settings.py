"""The ``database``, ``analysis`` and ``watchlists`` sections of the config.

Each ``parse_*`` function takes an ``orchestrator.validate.Section`` and
returns a frozen dataclass; every problem is recorded with its key path and
unknown keys are refused. A section that is absent parses to the defaults,
which run the demo: SQLite under ``var/``, the offline analyser, no
watchlists. Imports nothing heavy (see ``orchestrator.sections``).
Nothing here reads the environment: the HTTP analyser reads the variable
named by ``analysis.http.api_key_env`` when it is built, and
``database_with_env`` applies ``ORCH_DATABASE_URL`` / ``ORCH_DATABASE_SCHEMA``
from the mapping its caller (a worker or the demo, at start) passes in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from orchestrator.apps.announcements.announcement import CATEGORY_NAMES, Category
from orchestrator.validate import Problems, Section

__all__ = [
    "SECTION_PARSERS",
    "AnalyserKind",
    "AnalysisSettings",
    "DatabaseSettings",
    "HttpAnalyserSettings",
    "Watchlist",
    "WatchlistsSettings",
    "database_with_env",
    "parse_analysis",
    "parse_database",
    "parse_watchlists",
]

DATABASE_URL_ENV = "ORCH_DATABASE_URL"  # overrides database.url (secrets stay out of the file)
DATABASE_SCHEMA_ENV = "ORCH_DATABASE_SCHEMA"  # overrides database.schema

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DB_SCHEMES = ("postgresql://", "postgres://", "sqlite:///")


class AnalyserKind(StrEnum):
    OFFLINE = "offline"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = "sqlite:///var/demo.db"  # relative SQLite paths are under the repo root
    schema: str = "public"  # Postgres only
    timeout_s: float = 5.0  # connecting (Postgres) / waiting for a lock (SQLite)

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True, slots=True)
class HttpAnalyserSettings:
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"  # the variable's name; "" sends no key
    timeout_s: float = 30.0
    retries: int = 2  # extra attempts after the first, for 5xx/429/timeouts
    backoff_s: float = 1.0  # first wait; doubles per retry
    backoff_max_s: float = 30.0
    max_input_chars: int = 12_000  # text sent to the model is cut here
    json_mode: bool = True  # send response_format {"type": "json_object"}
    temperature: float = 0.0


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    analyser: AnalyserKind = AnalyserKind.OFFLINE
    summary_max_chars: int = 400
    max_pdf_pages: int = 50
    max_text_chars: int = 200_000
    http: HttpAnalyserSettings = field(default_factory=HttpAnalyserSettings)


@dataclass(frozen=True, slots=True)
class Watchlist:
    """Empty ``symbols`` or ``categories`` match any; sentiment bounds are inclusive."""

    name: str
    symbols: frozenset[str] = frozenset()
    categories: frozenset[Category] = frozenset()
    min_sentiment: float = -1.0
    max_sentiment: float = 1.0


@dataclass(frozen=True, slots=True)
class WatchlistsSettings:
    watchlists: tuple[Watchlist, ...] = ()

    def to_yaml(self) -> dict[str, Any]:
        """The ``watchlists`` section as written in the config file."""
        return {
            w.name: {
                "symbols": sorted(w.symbols),
                "categories": sorted(c.value for c in w.categories),
                "min_sentiment": w.min_sentiment,
                "max_sentiment": w.max_sentiment,
            }
            for w in self.watchlists
        }

    def __iter__(self) -> Iterator[Watchlist]:
        return iter(self.watchlists)

    def __len__(self) -> int:
        return len(self.watchlists)


def parse_database(s: Section) -> DatabaseSettings:
    d = DatabaseSettings()
    url = s.string("url", d.url)
    if isinstance(url, str) and url != d.url:
        if not url.startswith(_DB_SCHEMES):
            s.error("url", f"must start with postgresql:// or sqlite:///, got {url!r}")
            url = d.url
        elif url.startswith("sqlite:///") and not url.removeprefix("sqlite:///"):
            s.error("url", "sqlite:/// needs a path, e.g. sqlite:///var/demo.db")
            url = d.url
    schema = s.string("schema", d.schema)
    if isinstance(schema, str) and not _IDENTIFIER.fullmatch(schema):
        s.error("schema", f"must be a plain SQL identifier (letters, digits, _), got {schema!r}")
        schema = d.schema
    cfg = DatabaseSettings(
        url=url,
        schema=schema,
        timeout_s=s.number("timeout", d.timeout_s, min=0.1, max=600),
    )
    s.done()
    return cfg


def database_with_env(settings: DatabaseSettings, env: Mapping[str, str]) -> DatabaseSettings:
    """``settings`` with ``ORCH_DATABASE_URL`` / ``ORCH_DATABASE_SCHEMA`` from ``env`` applied.

    Called when a worker or the demo starts, with the environment passed in
    (never at import time); the values are checked as the config's are, and
    a bad one raises ``ConfigError`` naming the variable.
    """
    url = env.get(DATABASE_URL_ENV) or settings.url
    schema = env.get(DATABASE_SCHEMA_ENV) or settings.schema
    if (url, schema) == (settings.url, settings.schema):
        return settings
    problems = Problems()
    raw = {"url": url, "schema": schema, "timeout": settings.timeout_s}
    parsed = parse_database(Section(raw, f"database (env {DATABASE_URL_ENV})", problems))
    problems.raise_if_any()
    return parsed


def parse_analysis(s: Section) -> AnalysisSettings:
    d = AnalysisSettings()
    choices = [k.value for k in AnalyserKind]
    cfg = AnalysisSettings(
        analyser=AnalyserKind(s.string("analyser", d.analyser.value, choices=choices)),
        summary_max_chars=s.integer("summary_max_chars", d.summary_max_chars, min=40, max=5000),
        max_pdf_pages=s.integer("max_pdf_pages", d.max_pdf_pages, min=1, max=10_000),
        max_text_chars=s.integer("max_text_chars", d.max_text_chars, min=1000),
        http=_parse_http(s.child("http")),
    )
    s.done()
    return cfg


def _parse_http(s: Section) -> HttpAnalyserSettings:
    d = HttpAnalyserSettings()
    base_url = s.string("base_url", d.base_url)
    if isinstance(base_url, str) and not base_url.startswith(("http://", "https://")):
        s.error("base_url", f"must start with http:// or https://, got {base_url!r}")
        base_url = d.base_url
    model = s.string("model", d.model)
    if model == "":
        s.error("model", "must not be empty")
        model = d.model
    key_env = s.string("api_key_env", d.api_key_env)
    if isinstance(key_env, str) and key_env and not _IDENTIFIER.fullmatch(key_env):
        s.error("api_key_env", f"must name an environment variable, got {key_env!r}")
        key_env = d.api_key_env
    cfg = HttpAnalyserSettings(
        base_url=base_url.rstrip("/"),
        model=model,
        api_key_env=key_env,
        timeout_s=s.number("timeout", d.timeout_s, min=0.01, max=3600),
        retries=s.integer("retries", d.retries, min=0, max=20),
        backoff_s=s.number("backoff", d.backoff_s, min=0, max=600),
        backoff_max_s=s.number("backoff_max", d.backoff_max_s, min=0, max=3600),
        max_input_chars=s.integer("max_input_chars", d.max_input_chars, min=100),
        json_mode=s.boolean("json_mode", d.json_mode),
        temperature=s.number("temperature", d.temperature, min=0, max=2),
    )
    s.done()
    return cfg


def parse_watchlists(s: Section) -> WatchlistsSettings:
    """``watchlists`` maps a name to ``{symbols, categories, min_sentiment, max_sentiment}``."""
    lists = [_parse_watchlist(name, s.child(name)) for name, _ in list(s.items())]
    return WatchlistsSettings(watchlists=tuple(lists))


def _parse_watchlist(name: str, s: Section) -> Watchlist:
    symbols = s.string_list("symbols", ())
    bad = [x for x in symbols if not x.strip()]
    if bad:
        s.error("symbols", "must not contain empty strings")
    categories: list[Category] = []
    for value in s.string_list("categories", ()):
        if value in CATEGORY_NAMES:
            categories.append(Category(value))
        else:
            known = ", ".join(CATEGORY_NAMES)
            s.error("categories", f"unknown category {value!r} (one of {known})")
    low = s.number("min_sentiment", -1.0, min=-1, max=1)
    high = s.number("max_sentiment", 1.0, min=-1, max=1)
    if low > high:
        s.error("min_sentiment", f"must be <= max_sentiment ({high:g}), got {low:g}")
    s.done()
    return Watchlist(
        name=name,
        symbols=frozenset(x.strip().upper() for x in symbols if x.strip()),
        categories=frozenset(categories),
        min_sentiment=low,
        max_sentiment=high,
    )


SECTION_PARSERS: Mapping[str, Callable[[Section], Any]] = MappingProxyType(
    {
        "database": parse_database,
        "analysis": parse_analysis,
        "watchlists": parse_watchlists,
    }
)
"""Top-level key -> parser, for ``orchestrator.sections.PARSERS``."""
