"""Formulas a quant writes, on real data, against the same conditions computed directly.

Each formula (golden cross, RSI thresholds, volume spikes, Donchian and
Bollinger breakouts, ...) is evaluated by the engine's formula language
and, independently, with TA-Lib and numpy as a quant would write it in a
notebook. The bars that match must be exactly the same, on daily GOOG and
hourly EURUSD at their own prices and rescaled to 1e-6 and 1e6.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
import talib
from talib._ta_lib import MA_Type

from orchestrator.apps.batch.engine import (
    Candles,
    ParquetCandleRepository,
    ProcessingEngine,
    ProcessingJob,
    parse_formula,
)
from orchestrator.apps.batch.engine.evaluate import evaluate
from tests.market_data import SCALES, market

Array = npt.NDArray[np.float64]
SMA = MA_Type.SMA
Mask = npt.NDArray[np.bool_]


def lag(x: Array, bars: int) -> Array:
    return np.asarray(np.r_[np.full(bars, np.nan), x[:-bars]], dtype=np.float64)


def crossed_above(a: Array, b: Array) -> Mask:
    """a > b now, not on the bar before; both known on both bars."""
    now = a > b
    known = ~(np.isnan(a) | np.isnan(b))
    before: Mask = np.r_[True, now[:-1]]
    known_before: Mask = np.r_[False, known[:-1]]
    return now & known & ~before & known_before


def _vwap(c: Candles, n: int) -> Array:
    typical = (c.high + c.low + c.close) / 3
    return np.asarray(talib.SUM(typical * c.volume, n) / talib.SUM(c.volume, n))


def _sma(x: Array, n: int) -> Array:
    return np.asarray(talib.SMA(x, n))


def _stoch(c: Candles) -> tuple[Array, Array]:
    k, d = talib.STOCH(c.high, c.low, c.close, 5, 3, SMA, 3, SMA)
    return np.asarray(k), np.asarray(d)


QUANT: dict[str, Callable[[Candles], Mask]] = {
    # trend
    "crosses_above(sma(50), sma(200))": lambda c: crossed_above(
        _sma(c.close, 50), _sma(c.close, 200)
    ),
    "crosses_below(ema(12), ema(26))": lambda c: crossed_above(
        -talib.EMA(c.close, 12), -talib.EMA(c.close, 26)
    ),
    "crosses_above(macd(), macd_signal())": lambda c: crossed_above(*talib.MACD(c.close)[:2]),
    "adx(14) > 25 and plus_di() > minus_di()": lambda c: (
        (talib.ADX(c.high, c.low, c.close, 14) > 25)
        & (talib.PLUS_DI(c.high, c.low, c.close, 14) > talib.MINUS_DI(c.high, c.low, c.close, 14))
    ),
    # oscillators
    "rsi(14) < 30": lambda c: talib.RSI(c.close, 14) < 30,
    "rsi() > 70 and close < close[1]": lambda c: (
        (talib.RSI(c.close, 14) > 70) & (c.close < lag(c.close, 1))
    ),
    "crosses_above(stoch_k(), stoch_d()) and stoch_k() < 20": lambda c: (
        crossed_above(*_stoch(c)) & (_stoch(c)[0] < 20)
    ),
    # volume
    "volume > 2 * sma(volume, 20)": lambda c: c.volume > 2 * _sma(c.volume, 20),
    "volume > 3 * sma(volume, 20)[1] and close > open": lambda c: (
        (c.volume > 3 * lag(_sma(c.volume, 20), 1)) & (c.close > c.open)
    ),
    "close > vwap(20)": lambda c: c.close > _vwap(c, 20),
    # breakouts
    "close > highest(high, 20)[1]": lambda c: c.close > lag(talib.MAX(c.high, 20), 1),
    "close < lowest(low, 55)[1]": lambda c: c.close < lag(talib.MIN(c.low, 55), 1),
    "close > bbands_upper(20, 2)": lambda c: c.close > talib.BBANDS(c.close, 20, 2, 2, SMA)[0],
    "crosses_below(close, bbands_lower())": lambda c: crossed_above(
        -c.close, -talib.BBANDS(c.close, 20, 2, 2, SMA)[2]
    ),
    "close < bbands_middle() - 1.5 * stddev(close, 20)": lambda c: (
        c.close < talib.SMA(c.close, 20) - 1.5 * talib.STDDEV(c.close, 20, 1)
    ),
    # price action
    "open > high[1]": lambda c: c.open > lag(c.high, 1),
    "high - low > 2 * atr()[1]": lambda c: (
        c.high - c.low > 2 * lag(talib.ATR(c.high, c.low, c.close, 14), 1)
    ),
    "abs(close - close[1]) > 3 * stddev(close - close[1], 20)": lambda c: (
        np.abs(c.close - lag(c.close, 1)) > 3 * talib.STDDEV(c.close - lag(c.close, 1), 20, 1)
    ),
    "max(open, close) < min(open, close)[1]": lambda c: (
        np.maximum(c.open, c.close) < lag(np.minimum(c.open, c.close), 1)
    ),
}

DATA = {
    "GOOG": lambda: market("GOOG"),
    "EURUSD": lambda: market("EURUSD"),
    "GOOG x 1e-6": lambda: market("GOOG", 1e-6),
    "EURUSD x 1e6": lambda: market("EURUSD", 1e6),
}


@pytest.fixture(scope="module", params=list(DATA), ids=list(DATA))
def candles(request: pytest.FixtureRequest) -> Candles:
    return DATA[request.param]()


@pytest.mark.parametrize("formula", list(QUANT))
def test_quant_formulas_match_the_direct_computation(candles: Candles, formula: str) -> None:
    expected = np.asarray(QUANT[formula](candles), dtype=bool)
    assert expected.any(), "a formula that never matches would prove nothing"
    matches = evaluate(parse_formula(formula), candles).matches
    assert np.flatnonzero(matches).tolist() == np.flatnonzero(expected).tolist()


def test_a_bollinger_breakout_matches_the_same_bars_at_every_price_scale() -> None:
    """The issue's example: 378 EURUSD bars close above the upper band, at any price."""
    formula = parse_formula("close > bbands_upper(20, 2)")
    counts = {
        scale: int(evaluate(formula, market("EURUSD", scale)).matches.sum()) for scale in SCALES
    }
    assert counts == dict.fromkeys(SCALES, 378)


def test_the_engine_scans_real_data_as_the_direct_computation_says(tmp_path: Path) -> None:
    """End to end: GOOG and EURUSD written as Parquet, scanned by worker processes."""
    repository = ParquetCandleRepository(tmp_path)
    frames: dict[str, Candles] = {}
    for name in ("GOOG", "EURUSD"):
        frames[name] = data = market(name)
        frame = pl.DataFrame(
            {
                "timestamp": data.timestamp,
                **{c: data.column(c) for c in ("open", "high", "low", "close", "volume")},
            }
        )
        repository.save(name, "1h", frame)
    formula = "close > highest(high, 20)[1] and volume > 1.5 * sma(volume, 20)"
    job = ProcessingJob("quant", list(frames), "1h", None, formula)
    with ProcessingEngine(repository, max_workers=2) as engine:
        results = {r.symbol: r for r in asyncio.run(engine.process_batch(job))}
    for name, data in frames.items():
        donchian = data.close > lag(talib.MAX(data.high, 20), 1)
        expected = data.timestamp[donchian & (data.volume > 1.5 * _sma(data.volume, 20))]
        assert results[name].error is None and len(expected) > 0
        assert results[name].matches == tuple(expected.tolist())
        assert results[name].computed_indicators["sma(volume, 20)"] == _sma(data.volume, 20)[-1]
