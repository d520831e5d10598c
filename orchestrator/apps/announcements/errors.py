"""Exception types of the announcement pipeline.

Every error carries a one-line ``reason`` meant for the dead-letter entry's
``error`` field. ``permanent`` says whether trying the same job again can
help: an invalid job or an unreadable PDF fails the same way every time, a
timed-out HTTP call or a locked database may not.

``DatabaseUnavailable`` is deliberately not a ``StoreError``: a worker that
sees it must exit non-zero without acknowledging anything, while a
``StoreError`` (a row the database refuses) is an ordinary failed attempt.
"""

from __future__ import annotations


class AnnouncementError(Exception):
    """Base of every error raised for one job or batch."""

    permanent = False

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class InvalidJob(AnnouncementError):
    """A job or record with missing or ill-typed fields; names the fields."""

    permanent = True


class TextExtractionError(AnnouncementError):
    """A PDF that is missing, not a PDF, encrypted, truncated or image-only."""

    permanent = True


class AnalysisError(AnnouncementError):
    """An analyser failed; ``retryable`` errors were already retried in place."""

    def __init__(self, reason: str, retryable: bool = False) -> None:
        super().__init__(reason)
        self.retryable = retryable


class StoreError(AnnouncementError):
    """The database refused the data (a constraint, a type); nothing was written."""


class DatabaseUnavailable(AnnouncementError):
    """The database cannot be reached or is locked; nothing was written."""


class NotStored(AnnouncementError):
    """An announcement the investor worker was told about is not in the store yet."""
