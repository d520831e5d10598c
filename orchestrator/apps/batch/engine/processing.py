"""What a batch is asked to do, and what it answers per symbol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

__all__ = [
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT_S",
    "DateRange",
    "ProcessingJob",
    "ProcessingResult",
]

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MEMORY_MB = 1024.0
"""Per symbol, on by default: a worker scanning 19,000 bars holds about 130 MB
(the interpreter with numpy, polars and TA-Lib is 100 of them); ten years
of minute bars about 400. Beyond this, a symbol is a runaway, not a scan."""


@dataclass(frozen=True, slots=True)
class DateRange:
    """Days from ``start`` to ``end``, both included."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise ValueError(f"date range starts after it ends: {self.start} > {self.end}")


@dataclass(frozen=True, slots=True)
class ProcessingJob:
    """A scan of ``symbols`` with ``formula``.

    Indicators are computed on all the history up to ``date_range.end``;
    matches are reported inside ``date_range`` only (``None``: all bars).
    ``parameters`` are numbers the formula may name (``rsi(n) < limit``).
    ``timeout_s`` and ``memory_mb`` hold per symbol; ``memory_mb`` caps the
    RSS of the worker process tree (the interpreter with numpy and polars
    loaded counts, about 100 MB; ``None``: no cap). ``last_bar_only`` reports a match only
    when the formula holds on the last bar: the usual end-of-day scan.
    """

    id: str
    symbols: Sequence[str]
    timeframe: str
    date_range: DateRange | None
    formula: str
    parameters: Mapping[str, float] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: float | None = DEFAULT_MEMORY_MB
    last_bar_only: bool = False

    def __post_init__(self) -> None:
        symbols = tuple(self.symbols)
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"job {self.id}: symbols repeat")
        if self.timeout_s <= 0:
            raise ValueError(f"job {self.id}: timeout_s must be > 0, got {self.timeout_s}")
        if self.memory_mb is not None and self.memory_mb <= 0:
            raise ValueError(f"job {self.id}: memory_mb must be > 0, got {self.memory_mb}")
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "parameters", dict(self.parameters))


@dataclass(frozen=True, slots=True)
class ProcessingResult:
    """One symbol's answer. ``error`` is None on success; then ``matches``
    holds the bar timestamps where the formula is true and
    ``computed_indicators`` the last value of each indicator (None while it
    is still warming up), keyed by its canonical text (``sma(close, 200)``)."""

    symbol: str
    matches: tuple[datetime, ...]
    computed_indicators: dict[str, float | None]
    processing_time_ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
