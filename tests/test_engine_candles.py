"""The synthetic OHLCV generator and the Parquet candle repository."""

from __future__ import annotations

import itertools
from datetime import date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from orchestrator.apps.batch.engine import COLUMNS, Candles, ParquetCandleRepository
from orchestrator.apps.batch.engine.synthetic import (
    DEFAULT_END,
    generate_candles,
    session_bars,
    symbol_names,
    write_dataset,
)


def test_the_same_arguments_give_the_same_bars() -> None:
    first = generate_candles("AAPL", "5m", 500, seed=1)
    assert first.equals(generate_candles("AAPL", "5m", 500, seed=1))
    assert not first.equals(generate_candles("MSFT", "5m", 500, seed=1))
    assert not first.equals(generate_candles("AAPL", "5m", 500, seed=2))


@pytest.mark.parametrize("timeframe", ["1d", "5m"])
def test_bars_are_consistent(timeframe: str) -> None:
    frame = generate_candles("XYZ", timeframe, 3000)
    o, h, lo, c, v = (frame[name].to_numpy() for name in COLUMNS[1:])
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 3000
    assert (lo <= np.minimum(o, c)).all() and (h >= np.maximum(o, c)).all()
    assert (lo >= 0.01).all() and (np.round(c, 2) == c).all()
    assert frame["volume"].dtype == pl.Int64 and (v >= 1).all()
    assert frame["timestamp"].is_sorted() and frame["timestamp"].n_unique() == 3000


def test_daily_bars_fall_on_trading_days() -> None:
    stamps = generate_candles("XYZ", "1d", 1260)["timestamp"].to_list()
    assert stamps[-1] == datetime.combine(DEFAULT_END, time())
    assert all(s.weekday() < 5 and s.time() == time() for s in stamps)
    assert not [s for s in stamps if (s.month, s.day) in {(1, 1), (7, 4), (12, 25)}]
    assert 4.8 < (stamps[-1] - stamps[0]).days / 365.25 < 5.1  # 1,260 bars: about five years


def test_five_minute_bars_follow_the_session() -> None:
    stamps = generate_candles("XYZ", "5m", 19_000)["timestamp"].to_list()
    days: dict[date, list[datetime]] = {}
    for stamp in stamps:
        days.setdefault(stamp.date(), []).append(stamp)
    full = list(days.values())[1:]  # the first day may start mid-session
    assert all(len(bars) == 78 for bars in full)
    assert all(bars[0].time() == time(9, 30) and bars[-1].time() == time(15, 55) for bars in full)
    steps = {b - a for bars in full for a, b in itertools.pairwise(bars)}
    assert steps == {timedelta(minutes=5)}
    assert all(day.weekday() < 5 for day in days)
    assert session_bars("5m") == 78 and session_bars("1d") == 1


def test_returns_look_like_markets() -> None:
    close = generate_candles("XYZ", "1d", 5000, seed=11)["close"].to_numpy()
    returns = np.diff(np.log(close))
    size = np.abs(returns - returns.mean())

    def lag1(x: np.ndarray) -> float:
        return float(np.corrcoef(x[:-1], x[1:])[0, 1])

    assert lag1(size) > 0.1  # volatility clusters
    assert abs(lag1(returns)) < 0.1  # returns themselves barely do
    kurtosis = float(np.mean((returns - returns.mean()) ** 4) / np.var(returns) ** 2)
    assert kurtosis > 4  # fat tails


def test_volume_spikes_and_the_intraday_u_shape() -> None:
    frame = generate_candles("XYZ", "5m", 78 * 200, seed=4)
    volume = frame["volume"].to_numpy().astype(float)
    assert volume.max() / np.median(volume) > 5
    slot = np.arange(len(volume)) % 78
    by_slot = np.array([np.median(volume[slot == k]) for k in range(78)])
    assert by_slot[0] > 1.5 * by_slot[39] and by_slot[77] > 1.2 * by_slot[39]


def test_unsupported_timeframes_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported timeframe"):
        generate_candles("XYZ", "7m", 10)


# ---------------------------------------------------------------- repository


def test_a_dataset_round_trips(tmp_path: Path) -> None:
    symbols = symbol_names(3)
    repository = write_dataset(tmp_path, symbols, "1d", 300)
    assert repository.symbols("1d") == symbols == ["S0000", "S0001", "S0002"]
    assert (tmp_path / "1d" / "S0001.parquet").is_file()
    candles = repository.load("S0001", "1d")
    frame = generate_candles("S0001", "1d", 300)
    assert np.array_equal(candles.close, frame["close"].to_numpy())
    assert np.array_equal(candles.volume, frame["volume"].to_numpy().astype(float))
    assert candles.timestamp.dtype == np.dtype("datetime64[us]")


def test_loading_a_range_includes_both_days(tmp_path: Path) -> None:
    repository = write_dataset(tmp_path, ["ABC"], "5m", 78 * 10)
    candles = repository.load("ABC", "5m", start=date(2024, 12, 20), end=date(2024, 12, 23))
    days = sorted({d.date() for d in candles.timestamp.tolist()})
    assert days == [date(2024, 12, 20), date(2024, 12, 23)]  # a weekend between
    assert len(candles) == 2 * 78
    assert len(repository.load("ABC", "5m", end=date(2000, 1, 1))) == 0


@pytest.mark.parametrize("symbol", ["../etc", "a/b", "", ".hidden", "x" * 80])
def test_symbols_cannot_escape_the_root(tmp_path: Path, symbol: str) -> None:
    with pytest.raises(ValueError, match="invalid symbol"):
        ParquetCandleRepository(tmp_path).load(symbol, "1d")


def test_a_missing_symbol_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no 1d candles for NOPE \(.*1d/NOPE.parquet\)"):
        ParquetCandleRepository(tmp_path).load("NOPE", "1d")


def test_candles_must_be_in_time_order() -> None:
    frame = generate_candles("XYZ", "1d", 5).reverse()
    with pytest.raises(ValueError, match="not strictly increasing"):
        Candles.from_frame(frame)
    with pytest.raises(ValueError, match="lacks column"):
        Candles.from_frame(frame.drop("volume"))
