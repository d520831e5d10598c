"""Technical indicators, vectorised with numpy, following TA-Lib.

Every function takes float64 arrays and returns arrays of the same length,
NaN where TA-Lib has no output yet (its "lookback"):

========================  ============================  =====================
function                  definition                    first value at index
========================  ============================  =====================
sma(x, n)                 mean of the last n            n - 1
ema(x, n)                 k = 2/(n+1), seeded with the  n - 1
                          SMA of the first n
rsi(x, n)                 Wilder-smoothed gains/losses, n
                          seeded with their n-mean
atr(h, l, c, n)           Wilder-smoothed true range,   n
                          seeded with the mean of TR[1..n]
macd(x, f, s, g)          TA-Lib's MACD: the fast EMA   s + g - 2
                          is seeded on x[s-f..s-1] so
                          both EMAs start at s - 1
bbands(x, n, k)           SMA +- k population stddevs   n - 1
highest/lowest(x, n)      max/min of the last n         n - 1
roc(x, n)                 (x / x[-n] - 1) * 100         n
========================  ============================  =====================

The recursive ones (EMA, Wilder) use ``linear_recurrence``, a log-depth
scan. Leading NaNs of an input (an indicator of an indicator) are skipped:
the indicator starts on the first valid value, as TA-Lib does when called
on the valid part.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = [
    "atr",
    "bbands",
    "ema",
    "highest",
    "linear_recurrence",
    "lowest",
    "macd",
    "roc",
    "rsi",
    "sma",
    "true_range",
]

Array = npt.NDArray[np.float64]

_NEGLIGIBLE = 1e-18  # a^shift below this no longer changes a float64 sum
_TA_EPSILON = 1e-8  # TA-Lib's TA_IS_ZERO


def linear_recurrence(z: Array, a: float) -> Array:
    """``y[0] = z[0]; y[t] = a * y[t-1] + z[t]`` without a Python loop.

    Hillis-Steele scan: after the step with ``shift`` s, ``y[t]`` sums the
    last 2s terms. It stops once ``a**s`` is negligible, so an EMA of a long
    series needs only about log2(period) + 6 steps.
    """
    y = np.array(z, dtype=np.float64, copy=True)
    shift, factor = 1, a
    while shift < len(y) and abs(factor) > _NEGLIGIBLE:
        y[shift:] += factor * y[:-shift]
        shift *= 2
        factor *= factor
    return y


def _nan(n: int) -> Array:
    return np.full(n, np.nan)


def _on_valid(fn: Callable[[Array], Array], x: Array) -> Array:
    """Apply ``fn`` to ``x`` after its leading NaNs; pad the result back."""
    return _on_valid_parts(lambda v: (fn(v),), x)[0]


def _on_valid_parts(fn: Callable[[Array], tuple[Array, ...]], x: Array) -> tuple[Array, ...]:
    if len(x) == 0 or not np.isnan(x[0]):
        return fn(x)
    valid = np.flatnonzero(~np.isnan(x))
    start = int(valid[0]) if len(valid) else len(x)
    parts = fn(x[start:])
    outs = tuple(_nan(len(x)) for _ in parts)
    for out, part in zip(outs, parts, strict=True):
        out[start:] = part
    return outs


def _smoothed(values: Array, seed: float, alpha: float) -> Array:
    """``y[0] = seed; y[t] = (1 - alpha) * y[t-1] + alpha * values[t]``."""
    z = alpha * values
    z[0] = seed
    return linear_recurrence(z, 1.0 - alpha)


def sma(x: Array, period: int) -> Array:
    return _on_valid(lambda v: _sma(v, period), x)


def _sma(x: Array, period: int) -> Array:
    out = _nan(len(x))
    if len(x) >= period:
        sums = np.cumsum(np.concatenate(([0.0], x)))
        out[period - 1 :] = (sums[period:] - sums[:-period]) / period
    return out


def ema(x: Array, period: int) -> Array:
    return _on_valid(lambda v: _ema(v, period, 0), x)


def _ema(x: Array, period: int, seed_at: int) -> Array:
    """TA-Lib's EMA seeded with the mean of ``x[seed_at : seed_at + period]``."""
    out = _nan(len(x))
    first = seed_at + period - 1
    if len(x) > first:
        seed = float(np.mean(x[seed_at : first + 1]))
        out[first:] = _smoothed(x[first:].copy(), seed, 2.0 / (period + 1))
    return out


def rsi(x: Array, period: int = 14) -> Array:
    return _on_valid(lambda v: _rsi(v, period), x)


def _rsi(x: Array, period: int) -> Array:
    out = _nan(len(x))
    if len(x) <= period:
        return out
    change = np.diff(x)
    gain = np.where(change > 0, change, 0.0)
    loss = np.where(change < 0, -change, 0.0)
    alpha = 1.0 / period
    avg_gain = _smoothed(gain[period - 1 :].copy(), float(gain[:period].mean()), alpha)
    avg_loss = _smoothed(loss[period - 1 :].copy(), float(loss[:period].mean()), alpha)
    total = avg_gain + avg_loss
    with np.errstate(divide="ignore", invalid="ignore"):
        out[period:] = np.where(np.abs(total) < _TA_EPSILON, 0.0, 100.0 * avg_gain / total)
    return out


def true_range(high: Array, low: Array, close: Array) -> Array:
    """TA-Lib's TRANGE: NaN at 0, then the widest of the three ranges."""
    out = _nan(len(close))
    if len(close) > 1:
        previous = close[:-1]
        out[1:] = np.maximum.reduce(
            [high[1:] - low[1:], np.abs(high[1:] - previous), np.abs(low[1:] - previous)]
        )
    return out


def atr(high: Array, low: Array, close: Array, period: int = 14) -> Array:
    out = _nan(len(close))
    if len(close) <= period:
        return out
    tr = true_range(high, low, close)
    if period == 1:
        return tr
    seed = float(tr[1 : period + 1].mean())
    out[period:] = _smoothed(tr[period:].copy(), seed, 1.0 / period)
    return out


def macd(x: Array, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[Array, Array, Array]:
    """(line, signal, histogram), all starting at ``slow + signal - 2``."""
    if slow < fast:
        fast, slow = slow, fast
    line, sig, hist = _on_valid_parts(lambda v: _macd(v, fast, slow, signal), x)
    return line, sig, hist


def _macd(x: Array, fast: int, slow: int, signal: int) -> tuple[Array, Array, Array]:
    n = len(x)
    line, sig, hist = _nan(n), _nan(n), _nan(n)
    start = slow - 1  # both EMAs begin here
    first = start + signal - 1
    if n <= first:
        return line, sig, hist
    raw = _ema(x, slow, 0)[start:]
    raw = _ema(x, fast, slow - fast)[start:] - raw
    signal_line = _ema(raw, signal, 0)
    line[first:] = raw[signal - 1 :]
    sig[first:] = signal_line[signal - 1 :]
    hist[first:] = line[first:] - sig[first:]
    return line, sig, hist


def bbands(x: Array, period: int = 5, nbdev: float = 2.0) -> tuple[Array, Array, Array]:
    """(upper, middle, lower) with the population standard deviation."""
    middle = sma(x, period)
    mean_sq = sma(x * x, period)
    with np.errstate(invalid="ignore"):
        variance = mean_sq - middle * middle
        std = np.where(variance > _TA_EPSILON, np.sqrt(np.maximum(variance, 0.0)), 0.0)
    std = np.where(np.isnan(middle), np.nan, std)
    return middle + nbdev * std, middle, middle - nbdev * std


def highest(x: Array, period: int) -> Array:
    return _on_valid(lambda v: _window(v, period, np.max), x)


def lowest(x: Array, period: int) -> Array:
    return _on_valid(lambda v: _window(v, period, np.min), x)


def _window(x: Array, period: int, reduce: Callable[..., Array]) -> Array:
    out = _nan(len(x))
    if len(x) >= period:
        windows = np.lib.stride_tricks.sliding_window_view(x, period)
        out[period - 1 :] = reduce(windows, axis=1)
    return out


def roc(x: Array, period: int = 10) -> Array:
    return _on_valid(lambda v: _roc(v, period), x)


def _roc(x: Array, period: int) -> Array:
    out = _nan(len(x))
    if len(x) > period:
        before = x[:-period]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[period:] = np.where(before != 0.0, (x[period:] / before - 1.0) * 100.0, 0.0)
    return out
