"""Technical indicators: TA-Lib's own, and the few TA-Lib does not have.

Every indicator TA-Lib has is computed by TA-Lib itself (the ``ta-lib``
wheel bundles its C library): a formula's ``rsi(14)`` is what a quant gets
from ``talib.RSI(close, 14)``, bit for bit, with its warm-up (NaN until
its lookback), its seeding (EMAs start from the SMA of their first N
values, Wilder's averages from the mean of their first N) and no cutoff
at any price scale. Leading NaNs of an input (an indicator of an
indicator) are skipped by TA-Lib: the outer one starts on the first valid
value.

========================  ===================================  ============
function                  TA-Lib call                          first value
========================  ===================================  ============
sma/ema/wma(x, n)         SMA/EMA/WMA(x, n)                    n - 1
rsi(x, n)                 RSI(x, n)                            n
atr(h, l, c, n)           ATR(h, l, c, n)                      n
adx(h, l, c, n)           ADX(h, l, c, n)                      2n - 1
plus_di/minus_di(h,l,c,n) PLUS_DI/MINUS_DI(h, l, c, n)         n
macd(x, f, s, g)          MACD(x, f, s, g)                     s + g - 2
bbands(x, n, k)           BBANDS(x, n, k, k, SMA)              n - 1
stddev(x, n, k)           STDDEV(x, n, k) (population)         n - 1
highest/lowest(x, n)      MAX/MIN(x, n)                        n - 1
roc(x, n)                 ROC(x, n)                            n
stoch(h, l, c, k, sk, d)  STOCH(h, l, c, k, sk, SMA, d, SMA)   k + sk + d - 3
========================  ===================================  ============

Our own, where TA-Lib has nothing: ``vwap`` (TA-Lib has no VWAP), ``shift``
(a lag) and the element-wise ``absolute``, ``minimum``, ``maximum``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import talib
from talib._ta_lib import MA_Type  # typed there; talib re-exports it untyped

__all__ = [
    "absolute",
    "adx",
    "atr",
    "bbands",
    "ema",
    "highest",
    "lowest",
    "macd",
    "maximum",
    "minimum",
    "minus_di",
    "plus_di",
    "roc",
    "rsi",
    "shift",
    "sma",
    "stddev",
    "stoch",
    "vwap",
    "wma",
]

Array = npt.NDArray[np.float64]
Stamps = npt.NDArray[np.datetime64]

_SMA = MA_Type.SMA  # the moving average of BBANDS and STOCH


def _f64(value: Any) -> Array:
    """A TA-Lib output as a typed float64 array."""
    return np.asarray(value, dtype=np.float64)


def _in(x: Array) -> Array:
    """TA-Lib reads contiguous float64 buffers only."""
    return np.ascontiguousarray(x, dtype=np.float64)


def sma(x: Array, period: int) -> Array:
    return _f64(talib.SMA(_in(x), period))


def ema(x: Array, period: int) -> Array:
    return _f64(talib.EMA(_in(x), period))


def wma(x: Array, period: int) -> Array:
    return _f64(talib.WMA(_in(x), period))


def rsi(x: Array, period: int = 14) -> Array:
    return _f64(talib.RSI(_in(x), period))


def atr(high: Array, low: Array, close: Array, period: int = 14) -> Array:
    return _f64(talib.ATR(_in(high), _in(low), _in(close), period))


def adx(high: Array, low: Array, close: Array, period: int = 14) -> Array:
    return _f64(talib.ADX(_in(high), _in(low), _in(close), period))


def plus_di(high: Array, low: Array, close: Array, period: int = 14) -> Array:
    return _f64(talib.PLUS_DI(_in(high), _in(low), _in(close), period))


def minus_di(high: Array, low: Array, close: Array, period: int = 14) -> Array:
    return _f64(talib.MINUS_DI(_in(high), _in(low), _in(close), period))


def macd(x: Array, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[Array, Array, Array]:
    """(line, signal, histogram), all starting at ``max(fast, slow) + signal - 2``."""
    line, sig, hist = talib.MACD(_in(x), fast, slow, signal)
    return _f64(line), _f64(sig), _f64(hist)


def bbands(x: Array, period: int = 20, nbdev: float = 2.0) -> tuple[Array, Array, Array]:
    """(upper, middle, lower): the SMA +- ``nbdev`` population standard deviations."""
    upper, middle, lower = talib.BBANDS(_in(x), period, nbdev, nbdev, _SMA)
    return _f64(upper), _f64(middle), _f64(lower)


def stddev(x: Array, period: int, nbdev: float = 1.0) -> Array:
    return _f64(talib.STDDEV(_in(x), period, nbdev))


def highest(x: Array, period: int) -> Array:
    return _f64(talib.MAX(_in(x), period))


def lowest(x: Array, period: int) -> Array:
    return _f64(talib.MIN(_in(x), period))


def roc(x: Array, period: int = 10) -> Array:
    return _f64(talib.ROC(_in(x), period))


def stoch(
    high: Array, low: Array, close: Array, fastk: int = 5, slowk: int = 3, slowd: int = 3
) -> tuple[Array, Array]:
    """(%K, %D) of the slow stochastic, both smoothed with SMAs (TA-Lib's defaults)."""
    k, d = talib.STOCH(_in(high), _in(low), _in(close), fastk, slowk, _SMA, slowd, _SMA)
    return _f64(k), _f64(d)


def vwap(
    high: Array, low: Array, close: Array, volume: Array, timestamp: Stamps, period: int = 0
) -> Array:
    """Volume-weighted average of the typical price ``(high + low + close) / 3``.

    ``period`` 0: since the session (calendar day of the bar) began, bar
    included: the intraday VWAP; on daily bars, each bar's typical price.
    ``period`` N: over the last N bars (NaN before the N-th). A window that
    traded no volume has no VWAP (NaN).
    """
    typical = (high + low + close) / 3.0
    weighted = typical * volume
    with np.errstate(divide="ignore", invalid="ignore"):
        if period == 1:  # TA-Lib's SUM needs 2 or more
            return _f64(weighted / volume)
        if period > 1:
            return _f64(talib.SUM(_in(weighted), period) / talib.SUM(_in(volume), period))
        return _session_sum(weighted, timestamp) / _session_sum(volume, timestamp)


def _session_sum(x: Array, timestamp: Stamps) -> Array:
    """Running sum of ``x`` restarting at each new calendar day."""
    if len(x) == 0:
        return _f64(x)
    days = timestamp.astype("datetime64[D]")
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    lengths = np.diff(np.r_[starts, len(x)])
    totals = np.cumsum(x)
    before = np.r_[0.0, totals[starts[1:] - 1]]  # the running sum before each session
    return _f64(totals - np.repeat(before, lengths))


def shift(x: Array, bars: int) -> Array:
    """``x`` as it was ``bars`` bars ago (NaN for the first ``bars``)."""
    if bars == 0:
        return x
    out = np.full(len(x), np.nan)
    if bars < len(x):
        out[bars:] = x[:-bars]
    return out


def absolute(x: Array) -> Array:
    return np.abs(x)


def minimum(a: Array, b: Array) -> Array:
    """Element-wise; NaN (unknown) where either side is."""
    return np.minimum(a, b)


def maximum(a: Array, b: Array) -> Array:
    return np.maximum(a, b)
