"""Deterministic, realistic OHLCV data for tests and benchmarks.

Each symbol gets its own random stream, seeded from ``(seed, symbol)``, so
one symbol's bars do not depend on which other symbols are generated. The
model, all vectorised:

* log returns ``r = drift + sigma * exp(h) * u(bar) * z``: ``z`` is Student-t
  (fat tails, 4 degrees of freedom, unit variance), ``h`` an AR(1)
  log-volatility (volatility clustering), ``u`` the intraday U shape (busy
  open and close);
* opens gap from the previous close: a little on every daily bar, at the
  first bar of each session intraday (the overnight move);
* highs and lows reach beyond the body by a volatility-scaled amount;
* volume follows volatility and the U shape, with lognormal noise and rare
  spikes of 3-10x;
* calendar: weekdays without New Year, Independence Day and Christmas;
  daily bars at midnight, intraday bars from 09:30 to the last bar
  starting before 16:00 (78 five-minute bars a session), ending at ``end``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from orchestrator.apps.batch.engine.candles import ParquetCandleRepository

__all__ = ["DEFAULT_END", "generate_candles", "session_bars", "symbol_names", "write_dataset"]

DEFAULT_END = date(2024, 12, 31)
SESSION_OPEN = time(9, 30)
SESSION_MINUTES = 390  # 09:30 to 16:00
_HOLIDAYS = ((1, 1), (7, 4), (12, 25))
_SPIKE_PROBABILITY = 0.01
_NEGLIGIBLE = 1e-18  # a^shift below this no longer changes a float64 sum


@dataclass(frozen=True, slots=True)
class _Profile:
    """Per-symbol character, drawn from its own stream."""

    price: float
    daily_vol: float
    drift: float
    volume: float
    persistence: float  # of log-volatility, per day


def linear_recurrence(z: npt.NDArray[np.float64], a: float) -> npt.NDArray[np.float64]:
    """``y[0] = z[0]; y[t] = a * y[t-1] + z[t]`` without a Python loop.

    Hillis-Steele scan: after the step with ``shift`` s, ``y[t]`` sums the
    last 2s terms. It stops once ``a**s`` is negligible, so an AR(1) of a
    long series needs only about log2(1 / (1 - a)) + 6 steps.
    """
    y = np.array(z, dtype=np.float64, copy=True)
    shift, factor = 1, a
    while shift < len(y) and abs(factor) > _NEGLIGIBLE:
        y[shift:] += factor * y[:-shift]
        shift *= 2
        factor *= factor
    return y


def symbol_names(count: int, prefix: str = "S") -> list[str]:
    width = max(4, len(str(count - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(count)]


def session_bars(timeframe: str) -> int:
    """Bars per session: 1 for daily, 390/N for N-minute bars."""
    if timeframe == "1d":
        return 1
    if timeframe.endswith("m") and timeframe[:-1].isdigit():
        minutes = int(timeframe[:-1])
        if minutes > 0 and SESSION_MINUTES % minutes == 0:
            return SESSION_MINUTES // minutes
    raise ValueError(f"unsupported timeframe {timeframe!r}: 1d, or N minutes dividing 390")


def generate_candles(
    symbol: str, timeframe: str, bars: int, *, seed: int = 0, end: date = DEFAULT_END
) -> pl.DataFrame:
    """``bars`` bars of ``symbol`` ending on ``end``, the same for the same arguments."""
    per_session = session_bars(timeframe)
    rng = np.random.default_rng([seed, zlib.crc32(symbol.encode())])
    profile = _profile(rng)
    slot = (np.arange(bars) - bars) % per_session  # position in its session; the last bar ends one
    shape = _intraday_shape(slot, per_session)
    sigma = profile.daily_vol / np.sqrt(per_session)
    log_vol = _log_volatility(rng, bars, profile.persistence ** (1 / per_session), per_session)
    bar_vol = sigma * np.exp(log_vol) * shape
    opens, closes = _price_path(rng, profile, bar_vol, slot, per_session)
    highs, lows = _wicks(rng, opens, closes, bar_vol)
    volume = _volume(rng, profile.volume / per_session, log_vol, shape)
    return pl.DataFrame(
        {
            "timestamp": _timestamps(bars, timeframe, per_session, end),
            "open": opens,
            "high": highs,
            "low": lows,
            "close": closes,
            "volume": volume,
        }
    )


def write_dataset(
    root: Path, symbols: Sequence[str], timeframe: str, bars: int, *, seed: int = 0
) -> ParquetCandleRepository:
    """Write one Parquet file per symbol under ``root``; return the repository."""
    repository = ParquetCandleRepository(root)
    for symbol in symbols:
        repository.save(symbol, timeframe, generate_candles(symbol, timeframe, bars, seed=seed))
    return repository


def _profile(rng: np.random.Generator) -> _Profile:
    return _Profile(
        price=float(np.clip(np.exp(rng.normal(np.log(40.0), 1.0)), 2.0, 2000.0)),
        daily_vol=float(rng.uniform(0.01, 0.035)),
        drift=float(rng.normal(0.0003, 0.0004)),
        volume=float(np.exp(rng.normal(np.log(800_000.0), 1.2))),
        persistence=float(rng.uniform(0.9, 0.985)),
    )


def _intraday_shape(slot: npt.NDArray[np.int64], per_session: int) -> npt.NDArray[np.float64]:
    """1 for daily bars; for intraday, high at the open and the close."""
    if per_session == 1:
        return np.ones(len(slot))
    x = slot / (per_session - 1)
    shape: npt.NDArray[np.float64] = 0.7 + 1.6 * np.exp(-x * 12) + 0.8 * np.exp(-(1 - x) * 10)
    normalised: npt.NDArray[np.float64] = shape / np.sqrt(np.mean(shape**2))
    return normalised


def _log_volatility(
    rng: np.random.Generator, bars: int, persistence: float, per_session: int
) -> npt.NDArray[np.float64]:
    """AR(1) with a stationary spread of 0.35 around 0."""
    spread = 0.35 * np.sqrt(1 - persistence**2)
    shocks = rng.normal(0.0, spread, bars)
    shocks[0] = rng.normal(0.0, 0.35)
    return linear_recurrence(shocks, persistence)


def _price_path(
    rng: np.random.Generator,
    profile: _Profile,
    bar_vol: npt.NDArray[np.float64],
    slot: npt.NDArray[np.int64],
    per_session: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    bars = len(bar_vol)
    z = rng.standard_t(4, bars) / np.sqrt(2.0)  # unit variance
    body = profile.drift / per_session + bar_vol * z
    if per_session == 1:
        gap = rng.normal(0.0, 0.25, bars) * bar_vol
    else:
        gap = np.where(slot == 0, rng.normal(0.0, 0.5, bars) * profile.daily_vol, 0.0)
    gap[0] = 0.0
    log_close = np.log(profile.price) + np.cumsum(gap + body)
    log_open = log_close - body
    return _cents(np.exp(log_open)), _cents(np.exp(log_close))


def _wicks(
    rng: np.random.Generator,
    opens: npt.NDArray[np.float64],
    closes: npt.NDArray[np.float64],
    bar_vol: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    reach_up = np.abs(rng.normal(0.0, 0.6, len(opens))) * bar_vol
    reach_down = np.abs(rng.normal(0.0, 0.6, len(opens))) * bar_vol
    highs = _cents(np.maximum(opens, closes) * np.exp(reach_up))
    lows = _cents(np.minimum(opens, closes) * np.exp(-reach_down))
    return np.maximum(highs, np.maximum(opens, closes)), np.minimum(lows, np.minimum(opens, closes))


def _volume(
    rng: np.random.Generator,
    per_bar: float,
    log_vol: npt.NDArray[np.float64],
    shape: npt.NDArray[np.float64],
) -> npt.NDArray[np.int64]:
    bars = len(log_vol)
    noise = rng.lognormal(0.0, 0.35, bars)
    spikes = np.where(rng.random(bars) < _SPIKE_PROBABILITY, rng.uniform(3.0, 10.0, bars), 1.0)
    raw = per_bar * np.exp(1.2 * log_vol) * shape**1.5 * noise * spikes
    return np.maximum(1, np.rint(raw)).astype(np.int64)


def _cents(prices: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.maximum(0.01, np.round(prices, 2))


def _timestamps(bars: int, timeframe: str, per_session: int, end: date) -> list[datetime]:
    days = _trading_days(end, -(-bars // per_session))
    step = timedelta(minutes=SESSION_MINUTES // per_session)
    if per_session == 1:
        stamps = [datetime.combine(day, time()) for day in days]
    else:
        opens = [datetime.combine(day, SESSION_OPEN) for day in days]
        stamps = [start + step * k for start in opens for k in range(per_session)]
    return stamps[-bars:] if bars else []


def _trading_days(end: date, count: int) -> list[date]:
    days: list[date] = []
    day = end
    while len(days) < count:
        if day.weekday() < 5 and (day.month, day.day) not in _HOLIDAYS:
            days.append(day)
        day -= timedelta(days=1)
    return days[::-1]
