"""Every indicator of the formula language against TA-Lib itself, on real series.

The reference is TA-Lib called directly (``talib.RSI(close, 14)``), with
the arguments a quant would pass, on daily GOOG and hourly EURUSD (the
``backtesting`` package's data) rescaled from 1e-6 to 1e6, and on synthetic
series at those scales. A formula's call must give the same values within
1e-9 of the series' scale (the price level; 100 for oscillators; the
volume level for volume), and the same warm-up: NaN on exactly the same
bars. What TA-Lib lacks (vwap, shift, abs, min, max) is checked against
plain loops; a few series are small enough to check by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
import talib
from talib._ta_lib import MA_Type

from orchestrator.apps.batch.engine import Candles, parse_formula
from orchestrator.apps.batch.engine import indicators as ta
from orchestrator.apps.batch.engine.evaluate import evaluate
from orchestrator.apps.batch.engine.formula import render
from orchestrator.apps.batch.engine.synthetic import generate_candles
from tests.market_data import market, synthetic

Array = npt.NDArray[np.float64]
SMA = MA_Type.SMA
NAN = math.nan
TOLERANCE = 1e-9  # of the series' scale


def close_enough(actual: Array, expected: Array, atol: float = 1e-12) -> None:
    assert actual.shape == expected.shape
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), "warm-up differs"
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol, equal_nan=True)


def series_of(call: str, candles: Candles) -> Array:
    """The full series of ``call`` as a formula computes it."""
    formula = parse_formula(f"{call} > 0")
    return evaluate(formula, candles).series[render(formula.indicators[0])]


@pytest.fixture(scope="module")
def bars() -> Candles:
    return Candles.from_frame(generate_candles("REF", "1d", 400, seed=3))


# ---------------------------------------------------------------- vs TA-Lib

SERIES: dict[str, Callable[[], Candles]] = {
    "GOOG": lambda: market("GOOG"),
    "GOOG x 1e-6": lambda: market("GOOG", 1e-6),
    "GOOG x 1e4": lambda: market("GOOG", 1e4),
    "EURUSD": lambda: market("EURUSD"),
    "EURUSD x 1e-6": lambda: market("EURUSD", 1e-6),
    "EURUSD x 1e6": lambda: market("EURUSD", 1e6),
    "synthetic at 1e-6": lambda: synthetic(1e-6),
    "synthetic at 1e6": lambda: synthetic(1e6),
}


@dataclass(frozen=True, slots=True)
class Case:
    call: str
    reference: Callable[[Candles], Array]
    unit: str = "price"  # what sets the tolerance: price, percent (0-100) or volume


def _hlc(c: Candles) -> tuple[Array, Array, Array]:
    return c.high, c.low, c.close


CASES = (
    Case("sma(close, 20)", lambda c: talib.SMA(c.close, 20)),
    Case("sma(200)", lambda c: talib.SMA(c.close, 200)),
    Case("ema(close, 12)", lambda c: talib.EMA(c.close, 12)),
    Case("ema(50)", lambda c: talib.EMA(c.close, 50)),
    Case("wma(close, 10)", lambda c: talib.WMA(c.close, 10)),
    Case("rsi()", lambda c: talib.RSI(c.close, 14), "percent"),
    Case("rsi(close, 2)", lambda c: talib.RSI(c.close, 2), "percent"),
    Case("macd()", lambda c: talib.MACD(c.close, 12, 26, 9)[0]),
    Case("macd_signal()", lambda c: talib.MACD(c.close, 12, 26, 9)[1]),
    Case("macd_hist()", lambda c: talib.MACD(c.close, 12, 26, 9)[2]),
    Case("macd_hist(5, 35, 5)", lambda c: talib.MACD(c.close, 5, 35, 5)[2]),
    Case("bbands_upper()", lambda c: talib.BBANDS(c.close, 20, 2, 2, SMA)[0]),
    Case("bbands_middle()", lambda c: talib.BBANDS(c.close, 20, 2, 2, SMA)[1]),
    Case("bbands_lower()", lambda c: talib.BBANDS(c.close, 20, 2, 2, SMA)[2]),
    Case("bbands_upper(close, 5, 1.5)", lambda c: talib.BBANDS(c.close, 5, 1.5, 1.5, SMA)[0]),
    Case("stddev(close, 20)", lambda c: talib.STDDEV(c.close, 20, 1)),
    Case("atr()", lambda c: talib.ATR(*_hlc(c), 14)),
    Case("adx()", lambda c: talib.ADX(*_hlc(c), 14), "percent"),
    Case("plus_di()", lambda c: talib.PLUS_DI(*_hlc(c), 14), "percent"),
    Case("minus_di(20)", lambda c: talib.MINUS_DI(*_hlc(c), 20), "percent"),
    Case("stoch_k()", lambda c: talib.STOCH(*_hlc(c), 5, 3, SMA, 3, SMA)[0], "percent"),
    Case("stoch_d(14, 3, 3)", lambda c: talib.STOCH(*_hlc(c), 14, 3, SMA, 3, SMA)[1], "percent"),
    Case("highest(high, 20)", lambda c: talib.MAX(c.high, 20)),
    Case("lowest(low, 20)", lambda c: talib.MIN(c.low, 20)),
    Case("roc()", lambda c: talib.ROC(c.close, 10), "percent"),
    Case("sma(rsi(), 5)", lambda c: talib.SMA(talib.RSI(c.close, 14), 5), "percent"),
    Case("sma(volume, 20)", lambda c: talib.SMA(c.volume, 20), "volume"),
)


def scale_of(unit: str, candles: Candles) -> float:
    if unit == "percent":
        return 100.0
    return float(np.median(candles.volume if unit == "volume" else candles.close))


@pytest.fixture(scope="module", params=list(SERIES), ids=list(SERIES))
def real(request: pytest.FixtureRequest) -> Candles:
    return SERIES[request.param]()


@pytest.mark.parametrize("case", CASES, ids=[case.call for case in CASES])
def test_every_indicator_is_talibs_at_any_price_scale(real: Candles, case: Case) -> None:
    expected = np.asarray(case.reference(real), dtype=np.float64)
    assert np.isnan(expected[0]) and not np.isnan(expected[-1])  # a warm-up, then values
    close_enough(series_of(case.call, real), expected, TOLERANCE * scale_of(case.unit, real))


def test_bollinger_bands_default_to_20_periods_and_never_collapse() -> None:
    """The issue's cases: the old 5-period default, the 1e-8 variance cutoff."""
    cheap = market("EURUSD", 1e-2)
    upper, middle, lower = (series_of(f"bbands_{b}()", cheap) for b in ("upper", "middle", "lower"))
    assert np.isnan(upper[18]) and not np.isnan(upper[19])  # 20 periods
    assert bool(np.all((upper - middle)[19:] > 0)) and bool(np.all((middle - lower)[19:] > 0))
    assert series_of("rsi()", market("EURUSD", 1e-6))[14:].std() > 5  # no cutoff to 0 either


# ---------------------------------------------------------------- our own


def ref_vwap(c: Candles, period: int) -> Array:
    typical = (c.high + c.low + c.close) / 3
    out = np.full(len(c), NAN)
    days = c.timestamp.astype("datetime64[D]")
    for i in range(len(c)):
        if period:
            window = slice(i - period + 1, i + 1) if i >= period - 1 else None
        else:
            first = int(np.searchsorted(days, days[i]))
            window = slice(first, i + 1)
        if window is not None:
            out[i] = math.fsum(typical[window] * c.volume[window]) / math.fsum(c.volume[window])
    return out


@pytest.mark.parametrize("name", ["EURUSD", "GOOG"])
@pytest.mark.parametrize("period", [0, 1, 20])
def test_vwap_matches_the_loop(name: str, period: int) -> None:
    candles = market(name, 1e6 if name == "EURUSD" else 1e-6)
    expected = ref_vwap(candles, period)
    close_enough(series_of(f"vwap({period})", candles), expected, 1e-9 * scale_of("price", candles))


def test_a_session_vwap_restarts_each_day_and_is_the_typical_price_on_daily_bars() -> None:
    daily = market("GOOG")
    close_enough(series_of("vwap()", daily), (daily.high + daily.low + daily.close) / 3, 1e-9)
    hourly = market("EURUSD")
    days = hourly.timestamp.astype("datetime64[D]")
    firsts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    typical = (hourly.high + hourly.low + hourly.close) / 3
    close_enough(series_of("vwap()", hourly)[firsts], typical[firsts], 1e-9)


def test_lags_abs_min_max_match_numpy(real: Candles) -> None:
    close = real.close
    lagged = np.r_[np.full(3, NAN), close[:-3]]
    close_enough(series_of("close[3]", real), lagged)
    close_enough(series_of("shift(close, 3)", real), lagged)
    close_enough(series_of("shift()", real), np.r_[NAN, close[:-1]])
    close_enough(series_of("close[0]", real), close)
    close_enough(series_of("abs(close - open)", real), np.abs(close - real.open))
    close_enough(series_of("min(open, close)", real), np.minimum(real.open, close))
    close_enough(series_of("max(open, close)", real), np.maximum(real.open, close))
    donchian = np.r_[NAN, talib.MAX(real.high, 20)[:-1]]
    close_enough(series_of("highest(high, 20)[1]", real), donchian)


# ---------------------------------------------------------------- by hand


def test_small_series_by_hand() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    close_enough(ta.sma(x, 3), np.array([NAN, NAN, 2.0, 3.0, 4.0]))
    # seed 2 (mean of 1, 2, 3); k = 0.5: 2 + (4 - 2) / 2 = 3, 3 + (5 - 3) / 2 = 4
    close_enough(ta.ema(x, 3), np.array([NAN, NAN, 2.0, 3.0, 4.0]))
    close_enough(ta.roc(x, 2), np.array([NAN, NAN, 200.0, 100.0, 200 / 3]))
    close_enough(ta.highest(np.array([3.0, 1.0, 2.0, 5.0]), 2), np.array([NAN, 3.0, 2.0, 5.0]))
    close_enough(ta.shift(x, 2), np.array([NAN, NAN, 1.0, 2.0, 3.0]))
    close_enough(ta.shift(x, 9), np.full(5, NAN))


def test_rsi_by_hand() -> None:
    # changes +1 +1 -1 +1; first averages over 2: gain 1, loss 0 -> 100
    # then gain (1 + 0) / 2 = 0.5, loss (0 + 1) / 2 = 0.5 -> 50
    # then gain (0.5 + 1) / 2 = 0.75, loss 0.25 -> 75
    x = np.array([1.0, 2.0, 3.0, 2.0, 3.0])
    close_enough(ta.rsi(x, 2), np.array([NAN, NAN, 100.0, 50.0, 75.0]))


def test_atr_by_hand() -> None:
    high = np.array([10.0, 12.0, 11.0, 13.0])
    low = np.array([9.0, 10.0, 9.0, 12.0])
    close = np.array([9.5, 11.0, 10.0, 12.5])
    # TR: -, max(2, 2.5, 0.5) = 2.5, max(2, 0, 2) = 2, max(1, 3, 2) = 3
    # ATR(2): mean(2.5, 2) = 2.25 at 2, then (2.25 + 3) / 2 = 2.625
    close_enough(ta.atr(high, low, close, 2), np.array([NAN, NAN, 2.25, 2.625]))


def test_a_flat_series_has_rsi_zero_and_bands_on_the_mean() -> None:
    flat = np.full(30, 7.0)
    assert ta.rsi(flat, 14)[14:].tolist() == [0.0] * 16  # TA-Lib: 0 when nothing moves
    upper, middle, lower = ta.bbands(flat, 5, 2.0)
    close_enough(upper, middle)
    close_enough(lower, middle)


def test_an_indicator_of_an_indicator_starts_on_its_first_value(bars: Candles) -> None:
    rsi = series_of("rsi()", bars)
    smoothed = series_of("sma(rsi(), 5)", bars)
    close_enough(smoothed[14:], ta.sma(rsi[14:], 5))
    assert np.isnan(smoothed[:18]).all() and not np.isnan(smoothed[18])


def test_too_short_series_are_all_warm_up() -> None:
    short = np.arange(5.0)
    for values in (ta.sma(short, 10), ta.ema(short, 10), ta.rsi(short, 14), ta.macd(short)[2]):
        assert np.isnan(values).all()
    assert np.isnan(ta.atr(short, short, short, 14)).all()
    assert np.isnan(ta.sma(np.full(5, NAN), 2)).all()  # all warm-up in, all warm-up out


# ---------------------------------------------------------------- evaluation


def _candles(close: list[float]) -> Candles:
    n = len(close)
    values = np.array(close)
    stamps = np.arange(n).astype("datetime64[D]").astype("datetime64[us]")
    return Candles(stamps, values, values + 1, values - 1, values, np.full(n, 100.0))


def test_crossings() -> None:
    candles = _candles([1, 3, 3, 1, 2, 4])
    above = evaluate(parse_formula("crosses_above(close, 2)"), candles).matches
    below = evaluate(parse_formula("crosses_below(close, 2)"), candles).matches
    assert above.tolist() == [False, True, False, False, False, True]
    assert below.tolist() == [False, False, False, True, False, False]


def test_unknown_is_neither_true_nor_false() -> None:
    candles = _candles([float(v) for v in range(1, 11)])
    # sma(close, 5) is unknown on bars 0-3: a comparison with it is unknown...
    assert not evaluate(parse_formula("close > sma(5)"), candles).matches[:4].any()
    assert not evaluate(parse_formula("not (close > sma(5))"), candles).matches[:4].any()
    # ...unless the other side of "or" is true, or of "and" false (Kleene logic)
    assert evaluate(parse_formula("close > sma(5) or close > 0"), candles).matches.all()
    assert evaluate(parse_formula("not (close > sma(5) and close < 0)"), candles).matches.all()


def test_evaluation_reports_last_indicator_values(bars: Candles) -> None:
    result = evaluate(parse_formula("rsi(14) < 30 and close > sma(close, 500)"), bars)
    assert result.indicators["rsi(close, 14)"] == talib.RSI(bars.close, 14)[-1]
    assert result.indicators["sma(close, 500)"] is None  # 400 bars: still warming up
    assert not result.matches.any()


def test_arithmetic_broadcasts_and_divides_safely() -> None:
    candles = _candles([0.0, 1.0, 2.0])
    assert evaluate(parse_formula("1 / close > 0.6"), candles).matches.tolist() == [
        True,
        True,
        False,
    ]
    assert evaluate(parse_formula("2 > 1"), candles).matches.tolist() == [True, True, True]
