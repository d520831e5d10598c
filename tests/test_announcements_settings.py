"""The database, analysis and watchlists config sections: defaults, values, key paths."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from orchestrator.apps.announcements.announcement import Category
from orchestrator.apps.announcements.pipeline_settings import (
    SECTION_PARSERS,
    AnalyserKind,
    AnalysisSettings,
    DatabaseSettings,
    HttpAnalyserSettings,
    Watchlist,
    WatchlistsSettings,
)
from orchestrator.validate import ConfigError, Problems, Section

FULL = """
database:
  url: postgresql://orch@db.internal:5432/pipeline
  schema: announcements
  timeout: 3
analysis:
  analyser: http
  summary_max_chars: 250
  max_pdf_pages: 10
  max_text_chars: 50000
  http:
    base_url: http://127.0.0.1:8080/v1/
    model: llama3
    api_key_env: LLM_KEY
    timeout: 12.5
    retries: 4
    backoff: 0.5
    backoff_max: 8
    max_input_chars: 8000
    json_mode: false
    temperature: 0.2
watchlists:
  banks:
    symbols: [hdfcbank, ICICIBANK]
    categories: [dividend, credit_rating]
    min_sentiment: 0
  bad_news:
    max_sentiment: -0.3
"""


def parse(data: dict[str, Any]) -> dict[str, Any]:
    """Every section parsed the way ``orchestrator.config`` does; raises ConfigError."""
    problems = Problems()
    top = Section(data, "", problems)
    parsed = {
        name: parse_section(top.child(name)) for name, parse_section in SECTION_PARSERS.items()
    }
    problems.raise_if_any()
    return parsed


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(yaml.safe_load(text))
    return info.value.problems


def test_absent_sections_give_the_demo_defaults() -> None:
    parsed = parse({})
    assert parsed["database"] == DatabaseSettings(url="sqlite:///var/demo.db", schema="public")
    assert parsed["analysis"] == AnalysisSettings()
    assert parsed["analysis"].analyser is AnalyserKind.OFFLINE
    assert parsed["watchlists"] == WatchlistsSettings(())


def test_every_key_is_read() -> None:
    parsed = parse(yaml.safe_load(FULL))
    assert parsed["database"] == DatabaseSettings(
        url="postgresql://orch@db.internal:5432/pipeline", schema="announcements", timeout_s=3.0
    )
    assert parsed["database"].is_postgres
    assert parsed["analysis"] == AnalysisSettings(
        analyser=AnalyserKind.HTTP,
        summary_max_chars=250,
        max_pdf_pages=10,
        max_text_chars=50_000,
        http=HttpAnalyserSettings(
            base_url="http://127.0.0.1:8080/v1",
            model="llama3",
            api_key_env="LLM_KEY",
            timeout_s=12.5,
            retries=4,
            backoff_s=0.5,
            backoff_max_s=8.0,
            max_input_chars=8000,
            json_mode=False,
            temperature=0.2,
        ),
    )
    assert list(parsed["watchlists"]) == [
        Watchlist(
            name="banks",
            symbols=frozenset({"HDFCBANK", "ICICIBANK"}),
            categories=frozenset({Category.DIVIDEND, Category.CREDIT_RATING}),
            min_sentiment=0.0,
        ),
        Watchlist(name="bad_news", max_sentiment=-0.3),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("database: {urll: x}", "database.urll: unknown key"),
        (
            "database: {url: mysql://h/db}",
            "database.url: must start with postgresql:// or sqlite:///",
        ),
        ("database: {url: 'sqlite:///'}", "database.url: sqlite:/// needs a path"),
        ("database: {schema: 'a-b; drop'}", "database.schema: must be a plain SQL identifier"),
        ("database: {timeout: 0}", "database.timeout: must be >= 0.1, got 0"),
        ("database: [1]", "database: must be a mapping, got list"),
        ("analysis: {analyser: gpt}", "analysis.analyser: must be one of offline, http, got 'gpt'"),
        ("analysis: {summary_max_chars: 10}", "analysis.summary_max_chars: must be >= 40, got 10"),
        ("analysis: {http: {timeout: 0}}", "analysis.http.timeout: must be >= 0.01, got 0"),
        ("analysis: {http: {retries: -1}}", "analysis.http.retries: must be >= 0, got -1"),
        ("analysis: {http: {retries: two}}", "analysis.http.retries: must be an integer"),
        ("analysis: {http: {base_url: api.openai.com}}", "analysis.http.base_url: must start with"),
        ("analysis: {http: {api_key_env: my-key}}", "analysis.http.api_key_env: must name an"),
        ("analysis: {http: {model: ''}}", "analysis.http.model: must not be empty"),
        ("analysis: {http: {json_mode: 1}}", "analysis.http.json_mode: must be true/false"),
        ("analysis: {http: {bogus: 1}}", "analysis.http.bogus: unknown key"),
        ("watchlists: [banks]", "watchlists: must be a mapping, got list"),
        ("watchlists: {b: {symbol: [X]}}", "watchlists.b.symbol: unknown key"),
        ("watchlists: {b: {symbols: X}}", "watchlists.b.symbols: must be a list of strings"),
        ("watchlists: {b: {symbols: ['']}}", "watchlists.b.symbols: must not contain empty"),
        ("watchlists: {b: {categories: [divdend]}}", "watchlists.b.categories: unknown category"),
        ("watchlists: {b: {min_sentiment: 2}}", "watchlists.b.min_sentiment: must be <= 1, got 2"),
        ("watchlists: {b: {min_sentiment: 0.5, max_sentiment: 0}}", "watchlists.b.min_sentiment"),
        ("watchlists: {b: 3}", "watchlists.b: must be a mapping, got int"),
    ],
)
def test_bad_values_name_their_key_path(text: str, problem: str) -> None:
    problems = problems_of(text)
    assert any(line.startswith(problem) for line in problems), problems


def test_all_problems_are_reported_at_once() -> None:
    problems = problems_of("database: {url: x, extra: 1}\nanalysis: {analyser: y, http: {z: 1}}")
    assert [line.split(":")[0] for line in problems] == [
        "database.url",
        "database.extra",
        "analysis.analyser",
        "analysis.http.z",
    ]
