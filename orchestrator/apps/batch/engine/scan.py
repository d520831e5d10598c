"""One symbol's scan: load its candles, evaluate the formula, keep it small.

``scan_symbol(spec, symbol)`` is what a pool worker runs for each symbol
(``spec`` is the batch context: sent once per worker, not per symbol), and
what ``scan_serially`` runs in a plain loop, so a parallel batch and a
serial run compute exactly the same thing. A formula that cannot be
evaluated (``FormulaError`` from ``evaluate``) comes back inside the
``SymbolScan`` (``formula_error``), not as the symbol's error: the engine
then fails the whole batch with it, once.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import polars as pl

from orchestrator.apps.batch.engine.candles import CandleRepository, Candles
from orchestrator.apps.batch.engine.evaluate import evaluate
from orchestrator.apps.batch.engine.formula import Formula, parse_formula
from orchestrator.apps.batch.engine.lexer import FormulaError
from orchestrator.apps.batch.engine.processing import DateRange, ProcessingJob, ProcessingResult
from orchestrator.pools import describe_exception

__all__ = ["ScanSpec", "SymbolScan", "scan_serially", "scan_symbol", "warm_up"]

_MICROS = np.dtype("datetime64[us]")  # how match times cross the pipe (a dtype object: no parsing)


@dataclass(frozen=True, slots=True)
class ScanSpec:
    """Everything a worker needs besides the symbol; a few hundred bytes."""

    repository: CandleRepository
    timeframe: str
    formula: Formula
    date_range: DateRange | None = None
    last_bar_only: bool = False

    @classmethod
    def for_job(cls, repository: CandleRepository, job: ProcessingJob) -> ScanSpec:
        formula = parse_formula(job.formula, job.parameters)
        return cls(repository, job.timeframe, formula, job.date_range, job.last_bar_only)


@dataclass(frozen=True, slots=True, eq=False)
class SymbolScan:
    """What crosses the pipe back: matching bar times (one datetime64[us]
    buffer, pickled as its raw bytes: cheaper than datetime objects, and a
    few microseconds less than a numpy array on each side, per symbol) and
    indicator values."""

    matches: npt.NDArray[np.datetime64]
    indicators: dict[str, float | None]
    formula_error: FormulaError | None = None  # the formula, not this symbol, failed

    def match_times(self) -> tuple[datetime, ...]:
        return tuple(self.matches.tolist())

    def __reduce__(self) -> tuple[Callable[..., SymbolScan], tuple[object, ...]]:
        stamps = self.matches.astype(_MICROS, copy=False).tobytes()
        return (_unpickle_scan, (stamps, self.indicators, self.formula_error))


def _unpickle_scan(
    stamps: bytes, indicators: dict[str, float | None], formula_error: FormulaError | None
) -> SymbolScan:
    return SymbolScan(np.frombuffer(stamps, dtype=_MICROS), indicators, formula_error)


def scan_symbol(spec: ScanSpec, symbol: str) -> SymbolScan:
    end = spec.date_range.end if spec.date_range is not None else None
    candles = spec.repository.load(symbol, spec.timeframe, end=end)
    try:
        evaluation = evaluate(spec.formula, candles)
    except FormulaError as exc:
        return SymbolScan(candles.timestamp[:0], {}, exc)
    first = candles.index_of_day(spec.date_range.start) if spec.date_range is not None else 0
    mask = evaluation.matches
    if spec.last_bar_only:
        last = len(candles) - 1
        hits = np.array([last] if last >= first and mask[last] else [], dtype=np.intp)
    else:
        hits = np.flatnonzero(mask[first:]) + first
    return SymbolScan(candles.timestamp[hits], evaluation.indicators)


def scan_serially(spec: ScanSpec, symbols: Iterable[str]) -> Iterator[ProcessingResult]:
    """The same per-symbol work in this process, one symbol after the other.

    Errors read as the engine's do for an exception ("Type: message"); a
    formula that cannot be evaluated raises its ``FormulaError``, as the
    engine does.
    """
    for symbol in symbols:
        started = time.monotonic()
        try:
            scan = scan_symbol(spec, symbol)
        except Exception as exc:
            elapsed_ms = (time.monotonic() - started) * 1000
            yield ProcessingResult(symbol, (), {}, elapsed_ms, describe_exception(exc))
            continue
        if scan.formula_error is not None:
            raise scan.formula_error
        elapsed_ms = (time.monotonic() - started) * 1000
        yield ProcessingResult(symbol, scan.match_times(), scan.indicators, elapsed_ms)


def warm_up() -> None:
    """Run once in each new worker: pay polars' and numpy's first-use costs
    (thread pools, parquet reader: some 40 ms) before the first symbol's
    clock starts."""
    frame = pl.DataFrame(
        {
            "timestamp": pl.datetime_range(
                datetime(2024, 1, 1), datetime(2024, 3, 1), "1d", eager=True
            ),
        }
    ).with_columns(
        *(pl.lit(1.0).alias(name) for name in ("open", "high", "low", "close", "volume"))
    )
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    buffer.seek(0)
    candles = Candles.from_frame(pl.read_parquet(buffer))
    formula = parse_formula("rsi(14) < 30 and macd_hist() > 0 and close > bbands_upper(20, 2)")
    evaluate(formula, candles)
