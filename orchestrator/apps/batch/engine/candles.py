"""OHLCV candles and where they come from: one Parquet file per symbol.

Layout: ``<root>/<timeframe>/<SYMBOL>.parquet`` with the columns
``timestamp`` (ascending; exchange-local wall time, no zone), ``open``,
``high``, ``low``, ``close``, ``volume``. A repository is a small picklable
value (its settings, never its data): the engine sends it to every worker
process, which then loads its own candles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = ["COLUMNS", "CandleRepository", "Candles", "ParquetCandleRepository"]

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
_SYMBOL = re.compile(r"^[A-Za-z0-9^][A-Za-z0-9._^=-]{0,63}$")
_TIMEFRAME = re.compile(r"^[1-9][0-9]*(m|h|d|w)$")


@dataclass(frozen=True, slots=True, eq=False)
class Candles:
    """Columns as numpy arrays: ``timestamp`` is datetime64[us], the rest float64."""

    timestamp: npt.NDArray[np.datetime64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.timestamp)

    def column(self, name: str) -> npt.NDArray[np.float64]:
        if name not in COLUMNS[1:]:
            raise KeyError(name)
        values: npt.NDArray[np.float64] = getattr(self, name)
        return values

    def index_of_day(self, day: date) -> int:
        """Index of the first bar on or after ``day`` (``len`` if none)."""
        return int(np.searchsorted(self.timestamp, np.datetime64(day, "us"), side="left"))

    def between(self, start: date | None, end: date | None) -> Candles:
        """The bars from ``start`` to ``end``, both days included."""
        first = 0 if start is None else self.index_of_day(start)
        stop = len(self) if end is None else self.index_of_day(end + timedelta(days=1))
        if first == 0 and stop == len(self):
            return self
        return Candles(*(getattr(self, name)[first:stop] for name in COLUMNS))

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, source: str = "frame") -> Candles:
        missing = [name for name in COLUMNS if name not in frame.columns]
        if missing:
            raise ValueError(f"{source} lacks column(s) {', '.join(missing)}")
        stamps = frame["timestamp"]
        if not isinstance(stamps.dtype, pl.Datetime):
            stamps = stamps.cast(pl.Datetime("us"))
        timestamp = stamps.dt.replace_time_zone(None).dt.cast_time_unit("us").to_numpy()
        if len(timestamp) > 1 and not bool(np.all(timestamp[1:] > timestamp[:-1])):
            raise ValueError(f"{source}: timestamps are not strictly increasing")
        prices = [frame[name].cast(pl.Float64).to_numpy() for name in COLUMNS[1:]]
        return cls(timestamp, *prices)


class CandleRepository(Protocol):
    """Where workers load candles from; must pickle small (settings only)."""

    def load(
        self, symbol: str, timeframe: str, *, start: date | None = None, end: date | None = None
    ) -> Candles: ...


@dataclass(frozen=True, slots=True)
class ParquetCandleRepository:
    """``<root>/<timeframe>/<SYMBOL>.parquet``, read with polars."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def path(self, symbol: str, timeframe: str) -> Path:
        if not _SYMBOL.match(symbol):
            raise ValueError(f"invalid symbol {symbol!r}")
        if not _TIMEFRAME.match(timeframe):
            raise ValueError(f"invalid timeframe {timeframe!r} (e.g. 1d, 5m)")
        return self.root / timeframe / f"{symbol}.parquet"

    def load(
        self, symbol: str, timeframe: str, *, start: date | None = None, end: date | None = None
    ) -> Candles:
        path = self.path(symbol, timeframe)
        if not path.is_file():
            raise FileNotFoundError(f"no {timeframe} candles for {symbol} ({path})")
        frame = pl.read_parquet(path, columns=list(COLUMNS))
        return Candles.from_frame(frame, str(path)).between(start, end)

    def save(self, symbol: str, timeframe: str, frame: pl.DataFrame) -> Path:
        path = self.path(symbol, timeframe)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".parquet.partial")
        frame.select(COLUMNS).write_parquet(partial, compression="lz4", statistics=True)
        partial.replace(path)  # readers never see half a file
        return path

    def symbols(self, timeframe: str) -> list[str]:
        folder = self.root / timeframe
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.parquet"))
