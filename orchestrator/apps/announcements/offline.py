"""The offline analyser: rules and a finance word list, no network, deterministic.

Fast enough to run inline (well under a millisecond per kilobyte of text);
the same text always gives the same analysis.
"""

from __future__ import annotations

from orchestrator.apps.announcements.announcement import Analysis, Announcement
from orchestrator.apps.announcements.categories import classify, keyword_pattern
from orchestrator.apps.announcements.figures import extract_figures
from orchestrator.apps.announcements.sentiment import sentiment_score
from orchestrator.apps.announcements.summary import body_text, normalise, summarise

__all__ = ["OfflineAnalyser"]


class OfflineAnalyser:
    name = "offline"

    def __init__(self, summary_max_chars: int = 400) -> None:
        self.summary_max_chars = summary_max_chars

    def analyse(self, job: Announcement, text: str) -> Analysis:
        clean = normalise(text)
        category = classify(job.title, clean)
        return Analysis(
            category=category,
            sentiment=sentiment_score(f"{job.title}.\n{body_text(clean)}"),
            summary=summarise(job.title, clean, self.summary_max_chars, keyword_pattern(category)),
            key_figures=extract_figures(f"{job.title}\n\n{clean}"),
        )

    def close(self) -> None:
        """Nothing to release; here so both analysers are used the same way."""
