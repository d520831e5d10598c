"""A batch job as it travels on the queue: read, checked, split into shards.

The payload (the stream entry's ``payload`` JSON). ``timeframe``,
``formula`` and one of ``symbols``/``universe`` are required::

    {"batch_id": "b20240601-093000-1a2b3c",  # default: the stream entry's id
     "shard": 0, "shards": 4,               # set by the submitter; default 0 of 1
     "symbols": ["AAPL", "MSFT"],           # or "universe": "universes/sp500.txt"
     "timeframe": "1d",
     "start": "2024-01-01", "end": "2024-06-30",   # matches reported in this range
     "formula": "rsi(14) < limit and close > sma(200)",
     "parameters": {"limit": 30},
     "timeout": 60, "memory_mb": 1024,      # per symbol; default: the batch section's
     "last_bar_only": false}

A universe file holds symbols separated by spaces, commas or new lines;
``#`` starts a comment. A job that can never run (a missing key, a formula
that does not parse, a timeframe without data) raises ``BatchRejected``,
which the worker runtime dead-letters at once.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from orchestrator.apps.batch.batch_settings import BatchSettings
from orchestrator.apps.batch.engine import (
    CandleRepository,
    DateRange,
    FormulaError,
    ParquetCandleRepository,
    ProcessingJob,
    parse_formula,
)
from orchestrator.validate import Problems, Section

__all__ = [
    "BATCH_ID",
    "MAX_SHARDS",
    "BatchRejected",
    "BatchRequest",
    "check_request",
    "known_timeframes",
    "new_batch_id",
    "read_universe",
    "shard_bounds",
]

BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TIMEFRAME = re.compile(r"^[1-9][0-9]*(m|h|d|w)$")
MAX_SHARDS = 1000  # a larger batch gets larger shards
EARLIEST = date(1900, 1, 1)  # a range given only its end starts here
LATEST = date(9999, 12, 30)  # and one given only its start ends here


class BatchRejected(Exception):
    """A batch job that can never run; dead-lettered at once, with this reason."""

    permanent = True


def new_batch_id() -> str:
    return f"b{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One shard of a batch (a batch that is not split is its own shard 0 of 1)."""

    batch_id: str
    symbols: tuple[str, ...]
    timeframe: str
    formula: str
    parameters: Mapping[str, float] = field(default_factory=dict)
    start: date | None = None
    end: date | None = None
    timeout_s: float = 60.0
    memory_mb: float | None = None
    last_bar_only: bool = False
    shard: int = 0
    shards: int = 1

    @classmethod
    def from_payload(
        cls, data: Mapping[str, Any], default_id: str, settings: BatchSettings, root: Path
    ) -> BatchRequest:
        """Read a job; ``BatchRejected`` names every problem with its key."""
        problems = Problems()
        request = _read(Section(data, "job", problems), default_id, settings, root)
        if problems.lines or request is None:
            raise BatchRejected("; ".join(problems.lines))
        return request

    @property
    def date_range(self) -> DateRange | None:
        if self.start is None and self.end is None:
            return None
        return DateRange(self.start or EARLIEST, self.end or LATEST)

    def processing_job(self) -> ProcessingJob:
        return ProcessingJob(
            id=f"{self.batch_id}#{self.shard}",
            symbols=self.symbols,
            timeframe=self.timeframe,
            date_range=self.date_range,
            formula=self.formula,
            parameters=self.parameters,
            timeout_s=self.timeout_s,
            memory_mb=self.memory_mb,
            last_bar_only=self.last_bar_only,
        )

    def payload(self) -> dict[str, Any]:
        """What goes on the queue: ``from_payload`` reads it back unchanged."""
        out: dict[str, Any] = {
            "batch_id": self.batch_id,
            "shard": self.shard,
            "shards": self.shards,
            "symbols": list(self.symbols),
            "timeframe": self.timeframe,
            "formula": self.formula,
            "parameters": dict(self.parameters),
            "timeout": self.timeout_s,
            "last_bar_only": self.last_bar_only,
        }
        if self.start is not None:
            out["start"] = self.start.isoformat()
        if self.end is not None:
            out["end"] = self.end.isoformat()
        if self.memory_mb is not None:
            out["memory_mb"] = self.memory_mb
        return out

    def split(self, shard_size: int) -> list[BatchRequest]:
        """Shards of at most ``shard_size`` symbols (0: one shard), as even as
        possible, at most ``MAX_SHARDS``. Each keeps the batch id; shard i of n."""
        n = len(self.symbols)
        count = 1 if shard_size <= 0 else min(MAX_SHARDS, max(1, math.ceil(n / shard_size)))
        return [
            replace(self, symbols=self.symbols[lo:hi], shard=i, shards=count)
            for i, (lo, hi) in enumerate(shard_bounds(n, count))
        ]


def shard_bounds(n: int, count: int) -> list[tuple[int, int]]:
    """``count`` contiguous slices of ``range(n)`` whose sizes differ by at most 1."""
    return [(i * n // count, (i + 1) * n // count) for i in range(count)]


def read_universe(path: Path) -> list[str]:
    """Symbols of a universe file: split on spaces, commas, new lines; ``#`` comments."""
    symbols: list[str] = []
    for line in path.read_text().splitlines():
        symbols.extend(s for s in re.split(r"[\s,]+", line.partition("#")[0]) if s)
    return symbols


def _read(s: Section, default_id: str, settings: BatchSettings, root: Path) -> BatchRequest | None:
    batch_id = s.string("batch_id", default_id)
    if isinstance(batch_id, str) and not BATCH_ID.match(batch_id):
        s.error("batch_id", f"must be letters, digits, '.', '_' or '-' (1-128), got {batch_id!r}")
    symbols = _symbols(s, root)
    timeframe = s.string("timeframe")
    if isinstance(timeframe, str) and not _TIMEFRAME.match(timeframe):
        s.error("timeframe", f"unknown timeframe {timeframe!r} (e.g. 1d, 1h, 5m)")
    start, end = _day(s, "start"), _day(s, "end")
    if start is not None and end is not None and start > end:
        s.error("start", f"must not be after end ({end}), got {start}")
    shards = s.integer("shards", 1, min=1)
    request = BatchRequest(
        batch_id=batch_id,
        symbols=symbols,
        timeframe=timeframe,
        formula=s.string("formula"),
        parameters=_parameters(s),
        start=start,
        end=end,
        timeout_s=s.number("timeout", settings.timeout_s, min=0.01, max=86400),
        memory_mb=_memory(s, settings.memory_mb),
        last_bar_only=s.boolean("last_bar_only", False),
        shard=s.integer("shard", 0, min=0, max=max(0, shards - 1)),
        shards=shards,
    )
    s.done()
    return request if isinstance(request.formula, str) else None


def _symbols(s: Section, root: Path) -> tuple[str, ...]:
    if s.has("symbols") == s.has("universe"):
        s.error("symbols", "give either symbols (a list) or universe (a file), not both")
        s.raw("universe")
        return ()
    if s.has("universe"):
        path = s.string("universe")
        if not isinstance(path, str):
            return ()
        try:
            names: Sequence[str] = read_universe(root / path)
        except OSError as exc:
            s.error("universe", f"cannot read {root / path}: {exc.strerror or exc}")
            return ()
    else:
        names = s.string_list("symbols", ())
    unique = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not unique:
        s.error("universe" if s.has("universe") else "symbols", "names no symbol")
    return unique


def _day(s: Section, key: str) -> date | None:
    value = s.raw(key)
    if value is None:
        return None
    if isinstance(value, date):  # YAML-ish callers
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        s.error(key, f"must be a date YYYY-MM-DD, got {value!r}")
        return None


def _parameters(s: Section) -> dict[str, float]:
    raw = s.raw("parameters", {})
    if not isinstance(raw, Mapping) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in raw.values()
    ):
        s.error("parameters", f"must map names to numbers, got {raw!r}")
        return {}
    return {str(k): float(v) for k, v in raw.items()}


def _memory(s: Section, default: float | None) -> float | None:
    if not s.has("memory_mb"):
        return default
    if s.raw("memory_mb") is None:
        return None
    value: Any = s.number("memory_mb", default, min=16, max=1 << 24)
    return None if value is None else float(value)


def known_timeframes(repository: CandleRepository) -> list[str] | None:
    """Timeframes a Parquet repository holds data for; None when it cannot tell."""
    if not isinstance(repository, ParquetCandleRepository):
        return None
    root = repository.root
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.parquet")))


def check_request(request: BatchRequest, repository: CandleRepository | None) -> None:
    """What only the engine can tell: the formula parses, and (given the
    repository) the timeframe has data."""
    try:
        parse_formula(request.formula, request.parameters)
    except (FormulaError, ValueError) as exc:
        raise BatchRejected(f"formula: {exc}") from None
    known = None if repository is None else known_timeframes(repository)
    if known is not None and request.timeframe not in known:
        where = getattr(repository, "root", "the repository")
        raise BatchRejected(
            f"timeframe: unknown timeframe {request.timeframe!r}: no candles under "
            f"{where}/{request.timeframe} (known: {', '.join(known) or 'none'})"
        )
