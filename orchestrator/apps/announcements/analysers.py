"""The analyser interface, and the factory that builds the configured one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from orchestrator.apps.announcements.announcement import Analysis, Announcement
from orchestrator.apps.announcements.pipeline_settings import AnalyserKind, AnalysisSettings

__all__ = ["Analyser", "make_analyser"]


class Analyser(Protocol):
    """Turns an announcement and its text into an ``Analysis``.

    ``analyse`` raises ``AnalysisError`` when it cannot; ``close`` releases
    what the analyser holds (an HTTP connection pool).
    """

    @property
    def name(self) -> str: ...

    def analyse(self, job: Announcement, text: str) -> Analysis: ...

    def close(self) -> None: ...


def make_analyser(settings: AnalysisSettings, env: Mapping[str, str]) -> Analyser:
    """The analyser ``analysis.analyser`` names; ``env`` supplies the HTTP API key."""
    if settings.analyser is AnalyserKind.HTTP:
        from orchestrator.apps.announcements.http_analyser import HttpAnalyser

        return HttpAnalyser.from_env(settings.http, env, settings.summary_max_chars)
    from orchestrator.apps.announcements.offline import OfflineAnalyser

    return OfflineAnalyser(settings.summary_max_chars)
