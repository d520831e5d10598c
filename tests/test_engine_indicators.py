"""Indicators against independent references, and formula evaluation.

The references are deliberately plain loops transcribing TA-Lib's C code
(seeding, Wilder smoothing, MACD's aligned EMAs, lookbacks), plus a few
series small enough to check by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from orchestrator.apps.batch.engine import Candles, parse_formula
from orchestrator.apps.batch.engine import indicators as ta
from orchestrator.apps.batch.engine.evaluate import evaluate
from orchestrator.apps.batch.engine.synthetic import generate_candles

Array = npt.NDArray[np.float64]
NAN = math.nan


def close_enough(actual: Array, expected: Array) -> None:
    assert actual.shape == expected.shape
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), "warm-up differs"
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9, equal_nan=True)


@pytest.fixture(scope="module")
def bars() -> Candles:
    return Candles.from_frame(generate_candles("REF", "1d", 400, seed=3))


# ---------------------------------------------------------------- references


def ref_sma(x: Array, n: int) -> Array:
    out = np.full(len(x), NAN)
    for i in range(n - 1, len(x)):
        out[i] = sum(x[i - n + 1 : i + 1]) / n
    return out


def ref_ema(x: Array, n: int, seed_from: int = 0) -> Array:
    """TA_INT_EMA: seed with the mean of n values, then prev + k * (x - prev)."""
    out = np.full(len(x), NAN)
    k = 2.0 / (n + 1)
    first = seed_from + n - 1
    if len(x) <= first:
        return out
    prev = sum(x[seed_from : first + 1]) / n
    out[first] = prev
    for i in range(first + 1, len(x)):
        prev = (x[i] - prev) * k + prev
        out[i] = prev
    return out


def ref_rsi(x: Array, n: int) -> Array:
    """TA_RSI, default compatibility, no unstable period."""
    out = np.full(len(x), NAN)
    gain = loss = 0.0
    for i in range(1, n + 1):
        change = x[i] - x[i - 1]
        gain, loss = (gain + change, loss) if change > 0 else (gain, loss - change)
    gain, loss = gain / n, loss / n
    out[n] = 0.0 if abs(gain + loss) < 1e-8 else 100 * gain / (gain + loss)
    for i in range(n + 1, len(x)):
        change = x[i] - x[i - 1]
        gain = (gain * (n - 1) + max(change, 0.0)) / n
        loss = (loss * (n - 1) + max(-change, 0.0)) / n
        out[i] = 0.0 if abs(gain + loss) < 1e-8 else 100 * gain / (gain + loss)
    return out


def ref_atr(high: Array, low: Array, close: Array, n: int) -> Array:
    out = np.full(len(close), NAN)
    tr = [NAN] + [
        max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        for i in range(1, len(close))
    ]
    prev = sum(tr[1 : n + 1]) / n
    out[n] = prev
    for i in range(n + 1, len(close)):
        prev = (prev * (n - 1) + tr[i]) / n
        out[i] = prev
    return out


def ref_macd(x: Array, fast: int, slow: int, signal: int) -> tuple[Array, Array, Array]:
    """TA_MACD: both EMAs start at slow - 1 (the fast one seeded on x[slow-fast..slow-1])."""
    slow_ema = ref_ema(x, slow)
    fast_ema = ref_ema(x, fast, seed_from=slow - fast)
    raw = fast_ema - slow_ema  # defined from slow - 1
    sig = np.full(len(x), NAN)
    sig[slow - 1 :] = ref_ema(raw[slow - 1 :], signal)
    first = slow + signal - 2
    line = np.full(len(x), NAN)
    line[first:] = raw[first:]
    return line, sig, line - sig


def ref_bbands(x: Array, n: int, k: float) -> tuple[Array, Array, Array]:
    mid, upper, lower = (np.full(len(x), NAN) for _ in range(3))
    for i in range(n - 1, len(x)):
        window = x[i - n + 1 : i + 1]
        mean = sum(window) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in window) / n)
        mid[i], upper[i], lower[i] = mean, mean + k * std, mean - k * std
    return upper, mid, lower


def ref_window(x: Array, n: int, pick: Callable[[Array], float]) -> Array:
    out = np.full(len(x), NAN)
    for i in range(n - 1, len(x)):
        out[i] = pick(x[i - n + 1 : i + 1])
    return out


def ref_roc(x: Array, n: int) -> Array:
    out = np.full(len(x), NAN)
    for i in range(n, len(x)):
        out[i] = (x[i] / x[i - n] - 1) * 100 if x[i - n] != 0 else 0.0
    return out


# ---------------------------------------------------------------- by hand


def test_small_series_by_hand() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    close_enough(ta.sma(x, 3), np.array([NAN, NAN, 2.0, 3.0, 4.0]))
    # seed 2 (mean of 1, 2, 3); k = 0.5: 2 + (4 - 2) / 2 = 3, 3 + (5 - 3) / 2 = 4
    close_enough(ta.ema(x, 3), np.array([NAN, NAN, 2.0, 3.0, 4.0]))
    close_enough(ta.roc(x, 2), np.array([NAN, NAN, 200.0, 100.0, 200 / 3]))
    close_enough(ta.highest(np.array([3.0, 1.0, 2.0, 5.0]), 2), np.array([NAN, 3.0, 2.0, 5.0]))


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
    close_enough(ta.true_range(high, low, close), np.array([NAN, 2.5, 2.0, 3.0]))
    # ATR(2): mean(2.5, 2) = 2.25 at 2, then (2.25 + 3) / 2 = 2.625
    close_enough(ta.atr(high, low, close, 2), np.array([NAN, NAN, 2.25, 2.625]))


def test_a_flat_series_has_rsi_zero_and_bands_on_the_mean() -> None:
    flat = np.full(30, 7.0)
    assert ta.rsi(flat, 14)[14:].tolist() == [0.0] * 16  # TA-Lib: 0 when nothing moves
    upper, middle, lower = ta.bbands(flat, 5, 2.0)
    close_enough(upper, middle)
    close_enough(lower, middle)


# ---------------------------------------------------------------- vs loops


@pytest.mark.parametrize("n", [1, 2, 14, 50, 200])
def test_sma_ema_match_the_loops(bars: Candles, n: int) -> None:
    close_enough(ta.sma(bars.close, n), ref_sma(bars.close, n))
    close_enough(ta.ema(bars.close, n), ref_ema(bars.close, n))


@pytest.mark.parametrize("n", [2, 14, 30])
def test_rsi_atr_match_the_loops(bars: Candles, n: int) -> None:
    close_enough(ta.rsi(bars.close, n), ref_rsi(bars.close, n))
    close_enough(
        ta.atr(bars.high, bars.low, bars.close, n), ref_atr(bars.high, bars.low, bars.close, n)
    )


@pytest.mark.parametrize(("fast", "slow", "signal"), [(12, 26, 9), (5, 35, 5), (26, 12, 9)])
def test_macd_matches_talib_alignment(bars: Candles, fast: int, slow: int, signal: int) -> None:
    expected = ref_macd(bars.close, min(fast, slow), max(fast, slow), signal)
    for actual, wanted in zip(ta.macd(bars.close, fast, slow, signal), expected, strict=True):
        close_enough(actual, wanted)
    first = max(fast, slow) + signal - 2
    assert np.isnan(ta.macd(bars.close, fast, slow, signal)[0][first - 1])
    assert not np.isnan(ta.macd(bars.close, fast, slow, signal)[0][first])


def test_bbands_highest_lowest_roc_match_the_loops(bars: Candles) -> None:
    for actual, wanted in zip(
        ta.bbands(bars.close, 20, 2.5), ref_bbands(bars.close, 20, 2.5), strict=True
    ):
        close_enough(actual, wanted)
    close_enough(ta.highest(bars.high, 20), ref_window(bars.high, 20, max))
    close_enough(ta.lowest(bars.low, 20), ref_window(bars.low, 20, min))
    close_enough(ta.roc(bars.close, 10), ref_roc(bars.close, 10))


@pytest.mark.parametrize("a", [0.0, 0.5, 0.9, 0.999, -0.7])
def test_linear_recurrence_matches_the_loop(a: float) -> None:
    z = np.random.default_rng(5).normal(size=5000)
    expected = z.copy()
    for t in range(1, len(z)):
        expected[t] = a * expected[t - 1] + z[t]
    np.testing.assert_allclose(ta.linear_recurrence(z, a), expected, rtol=1e-9, atol=1e-9)


def test_an_indicator_of_an_indicator_starts_on_its_first_value(bars: Candles) -> None:
    rsi = ta.rsi(bars.close, 14)
    smoothed = ta.sma(rsi, 5)
    close_enough(smoothed[14:], ref_sma(rsi[14:], 5))
    assert np.isnan(smoothed[:18]).all() and not np.isnan(smoothed[18])


def test_too_short_series_are_all_warm_up() -> None:
    short = np.arange(5.0)
    for values in (ta.sma(short, 10), ta.ema(short, 10), ta.rsi(short, 14), ta.macd(short)[2]):
        assert np.isnan(values).all()
    assert np.isnan(ta.atr(short, short, short, 14)).all()


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
    assert result.indicators["rsi(close, 14)"] == pytest.approx(ref_rsi(bars.close, 14)[-1])
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
