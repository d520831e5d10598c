"""Real market data for the indicator tests: the CSVs the ``backtesting`` package ships.

Daily GOOG (2004-2013, 2,148 bars, prices 100-800) and hourly EURUSD
(2017-2018, 5,000 bars, prices around 1.1), read as ``Candles``, optionally
rescaled (prices times ``scale``, volumes kept) to reach the extremes a
quant meets: 1e-6 (a micro-cap token) to 1e6.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import polars as pl

from orchestrator.apps.batch.engine import Candles
from orchestrator.apps.batch.engine.synthetic import generate_candles

__all__ = ["PRICE_COLUMNS", "SCALES", "market", "synthetic"]

PRICE_COLUMNS = ("open", "high", "low", "close")
SCALES = (1e-6, 1e-2, 1.0, 1e6)


def _data_dir() -> Path:
    spec = importlib.util.find_spec("backtesting")  # without importing it (bokeh, pandas)
    assert spec is not None and spec.origin is not None, "pip install -e '.[dev]'"
    return Path(spec.origin).parent / "test"


@functools.cache
def _frame(name: str) -> pl.DataFrame:
    raw = pl.read_csv(_data_dir() / f"{name}.csv")
    return raw.select(
        pl.col(raw.columns[0]).str.to_datetime().alias("timestamp"),
        *(pl.col(c.title()).cast(pl.Float64).alias(c) for c in (*PRICE_COLUMNS, "volume")),
    )


def market(name: str, scale: float = 1.0) -> Candles:
    """``GOOG`` or ``EURUSD``, prices times ``scale``."""
    frame = _frame(name).with_columns(pl.col(PRICE_COLUMNS) * scale)
    candles = Candles.from_frame(frame, name)
    assert len(candles) > 2000 and bool(np.all(candles.close > 0))
    return candles


def synthetic(price: float, bars: int = 1500) -> Candles:
    """Generated daily bars rescaled to trade around ``price``."""
    frame = generate_candles("SCALE", "1d", bars, seed=11)
    factor = price / float(frame["close"].to_numpy().mean())
    return Candles.from_frame(frame.with_columns(pl.col(PRICE_COLUMNS) * factor))
