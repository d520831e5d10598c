"""Indicators, detectors and the cool-off on scripted tick sequences (no processes)."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
import talib

from orchestrator.apps.scanner.detection import PatternEngine
from orchestrator.apps.scanner.patterns import alert_fields
from orchestrator.apps.scanner.rolling import SymbolState, Windows
from orchestrator.apps.scanner.scanner_settings import EmaSeed, PatternSettings
from tests.market_data import market

DAY = 1_700_006_400  # a UTC midnight: the session (open 00:00) starts here
SETTINGS = PatternSettings(opening_range_s=300)

# Quiet ticks, every 10 s: price alternates 100.0 / 100.2, volume 100 / 120, so
# the volume mean is 110 and its std 10 (z = -1 / +1), the opening range and
# the recent range are [100.0, 100.2], and no price ever crosses either.
# Events on top of that, each far enough from the others for the 50-tick
# volume window to be quiet again:
EVENTS = {
    60: (100.1, 1000),  # z = 89: VOLUME_SPIKE (price 100.2 -> 100.1: "down")
    61: (100.1, 1000),  # again 10 s later: suppressed by the cool-off
    130: (100.4, 135),  # through 100.2 (OR high and recent high), z = 2.5: BREAKOUT
    135: (100.6, 135),  # through 100.4 50 s later: suppressed by the cool-off
    300: (99.7, 135),  # down through 100.0 (OR low and recent low), z = 2.5: BREAKOUT down
}
RAMP = range(200, 220)  # +0.3% per tick: MOMENTUM up; the fall back: MOMENTUM down


def scripted_rows(symbol: str = "AAA", ticks: int = 320) -> list[tuple[str, str, str, str]]:
    rows = []
    for i in range(ticks):
        price, volume = (100.0, 100) if i % 2 == 0 else (100.2, 120)
        price, volume = EVENTS.get(i, (price, volume))
        if i in RAMP:
            price = round(100.2 * 1.003 ** (i - 199), 4)
        rows.append((symbol, str(price), str(volume), str(DAY + 10 * i)))
    return rows


def first_momentum(rows: list[tuple[str, str, str, str]], start: int, sign: int) -> int:
    """An independent reading of the MOMENTUM rule (EMAs from TA-Lib): the first
    index from ``start``."""
    s = SETTINGS
    prices = [float(r[1]) for r in rows]
    fast, slow = talib.EMA(np.array(prices), s.ema_fast), talib.EMA(np.array(prices), s.ema_slow)
    cum_pv = cum_v = 0.0
    for i, (_, p, v, _) in enumerate(rows):
        price = float(p)
        cum_pv, cum_v = cum_pv + price * float(v), cum_v + float(v)
        velocity = price / prices[max(0, i - s.lookback_ticks)] - 1
        spread = fast[i] / slow[i] - 1
        if (
            i >= start
            and sign * spread >= s.momentum_spread
            and sign * velocity >= s.momentum_velocity
            and sign * (price - cum_pv / cum_v) > 0
        ):
            return i
    raise AssertionError("no momentum")


def test_scripted_sequence_raises_exactly_the_expected_alerts() -> None:
    rows = scripted_rows()
    out = PatternEngine(SETTINGS).process(rows)
    up, down = first_momentum(rows, 200, +1), first_momentum(rows, 220, -1)
    assert (up, down) == (203, 251)  # the oracle agrees with the script's intent
    got = [(a[0], a[2], a[6]) for a in out.alerts]
    assert got == [
        (60, "VOLUME_SPIKE", "down"),
        (130, "BREAKOUT", "up"),
        (up, "MOMENTUM", "up"),
        (down, "MOMENTUM", "down"),
        (300, "BREAKOUT", "down"),
    ]
    by_index = {a[0]: a for a in out.alerts}
    assert by_index[60][3] == 1.0  # z = 89 is far past twice the threshold
    # 0.5 + 0.25 * (2.5 - 1.5) / 1.5 + 0.25 (both levels crossed)
    assert by_index[130][3] == pytest.approx(0.5 + 0.25 / 1.5 + 0.25)
    assert by_index[300][3] == pytest.approx(0.5 + 0.25 / 1.5 + 0.25)
    assert all(0.0 <= a[3] <= 1.0 for a in out.alerts)
    assert all(a[1] == "AAA" and a[5] == DAY + 10 * a[0] for a in out.alerts)
    assert out.invalid == []


def test_cooloff_suppresses_repeats_within_the_window_only() -> None:
    rows = scripted_rows()
    cooled = PatternEngine(SETTINGS).process(rows)
    free = PatternEngine(PatternSettings(opening_range_s=300, cooloff_s=0)).process(rows)
    cooled_keys = {(a[0], a[2]) for a in cooled.alerts}
    free_keys = {(a[0], a[2]) for a in free.alerts}
    assert cooled_keys < free_keys
    assert {(61, "VOLUME_SPIKE"), (135, "BREAKOUT")} <= free_keys - cooled_keys
    assert free.suppressed == 0
    assert cooled.suppressed == len(free_keys - cooled_keys)
    # Each pair raised at most once per cool-off window of tick time.
    for pattern in ("VOLUME_SPIKE", "BREAKOUT", "MOMENTUM"):
        times = [a[5] for a in cooled.alerts if a[2] == pattern]
        assert all(b - a >= SETTINGS.cooloff_s for a, b in itertools.pairwise(times))


def test_no_alert_during_warmup() -> None:
    rows = [("AAA", "100", "100", str(DAY + i)) for i in range(SETTINGS.warmup_ticks)]
    rows[-1] = ("AAA", "105", "100000", str(DAY + SETTINGS.warmup_ticks))
    assert PatternEngine(SETTINGS).process(rows).alerts == []


def test_symbols_do_not_interfere() -> None:
    alone = PatternEngine(SETTINGS).process(scripted_rows("AAA")).alerts
    mixed_rows = []
    for a, b in zip(scripted_rows("AAA"), scripted_rows("BBB"), strict=True):
        mixed_rows += [a, ("BBB", "50", "10", b[3])]
    mixed = PatternEngine(SETTINGS).process(mixed_rows).alerts
    assert [(a[2], a[4], a[5]) for a in alone] == [(a[2], a[4], a[5]) for a in mixed]


def test_bytes_rows_equal_str_rows() -> None:
    rows = scripted_rows()
    as_bytes = [tuple(v.encode() for v in row) for row in rows]
    assert PatternEngine(SETTINGS).process(as_bytes).alerts == (
        PatternEngine(SETTINGS).process(rows).alerts
    )


def test_invalid_rows_are_reported_and_change_nothing() -> None:
    rows: list[tuple[object, ...]] = [
        ("AAA", "abc", "1", str(DAY)),
        ("AAA", "-1", "1", str(DAY)),
        ("AAA", "100", "-5", str(DAY)),
        ("AAA", "100", "1", str(DAY * 1000)),  # milliseconds
        ("AAA", "100", "1"),
        ("AAA", None, "1", str(DAY)),
        (None, "100", "1", str(DAY)),
    ]
    engine = PatternEngine(SETTINGS)
    out = engine.process(rows)
    assert [index for index, _ in out.invalid] == list(range(len(rows)))
    reasons = dict(out.invalid)
    assert "numbers" in reasons[0] and "price must be > 0" in reasons[1]
    assert "epoch seconds" in reasons[3] and "needs symbol" in reasons[4]
    assert engine.states == {}


def test_snapshot_restore_continues_bit_identically() -> None:
    rows = scripted_rows()
    whole = PatternEngine(SETTINGS).process(rows).alerts
    first = PatternEngine(SETTINGS)
    head = first.process(rows[:201]).alerts
    second = PatternEngine(SETTINGS)
    second.restore(first.snapshot())
    rest = second.process(rows[201:]).alerts
    assert head + [(a[0] + 201, *a[1:]) for a in rest] == whole


def test_muted_processing_primes_state_and_cooloffs() -> None:
    rows = scripted_rows()
    engine = PatternEngine(SETTINGS)
    assert engine.process(rows[:61], mute=True).alerts == []
    # The spike at 60 was raised (muted), so 61 is still within its cool-off.
    assert [a for a in engine.process(rows[61:62]).alerts] == []
    fresh = PatternEngine(SETTINGS)
    fresh.process(rows[:60], mute=True)
    assert [(a[2]) for a in fresh.process(rows[60:62]).alerts] == ["VOLUME_SPIKE"]


def test_session_change_resets_vwap_and_opening_range() -> None:
    w = Windows.of(SETTINGS)
    st = SymbolState(w)
    st.observe(100.0, 10.0, DAY + 1, w)
    st.observe(110.0, 10.0, DAY + 200, w)
    assert st.vwap(110.0) == pytest.approx(105.0)
    st.observe(120.0, 10.0, DAY + 400, w)  # after the 300 s opening range
    assert st.or_done and (st.or_low, st.or_high) == (100.0, 110.0)
    st.observe(90.0, 30.0, DAY + 86400 + 5, w)  # next session
    assert st.vwap(90.0) == 90.0 and not st.or_done and st.or_high == 90.0


def test_volume_window_statistics_stay_exact() -> None:
    w = Windows.of(PatternSettings(volume_window=5))
    st = SymbolState(w)
    volumes = [float(v) for v in range(1, 40)]
    for i, v in enumerate(volumes):
        st.observe(100.0, v, DAY + i, w)
        window = volumes[max(0, i - 4) : i + 1]
        mean = sum(window) / len(window)
        assert st.vol_mean == pytest.approx(mean)
        assert st.vol_m2 == pytest.approx(sum((x - mean) ** 2 for x in window))
    assert st.high == st.low == 100.0 and math.isfinite(st.z)


def test_idle_symbols_are_evicted_and_state_pickles() -> None:
    engine = PatternEngine(PatternSettings(symbol_ttl_s=100))
    engine.process([("OLD", "1", "1", str(DAY)), ("NEW", "1", "1", str(DAY + 500))])
    assert engine.evict_idle() == 1 and list(engine.states) == ["NEW"]
    assert pickle.loads(engine.snapshot()).keys() == {"NEW"}


def test_alert_fields_are_strings() -> None:
    fields = alert_fields({"symbol": "AAA", "confidence": 0.5, "time": 1.25, "tick_id": "1-0"})
    assert fields == {"symbol": "AAA", "confidence": "0.5", "time": "1.25", "tick_id": "1-0"}


@pytest.mark.parametrize(("name", "scale"), [("EURUSD", 1.0), ("GOOG", 1e-6), ("GOOG", 1e6)])
def test_tick_by_tick_emas_are_talibs(name: str, scale: float) -> None:
    """The scanner's own incremental EMAs (TA-Lib has no per-tick state) against
    ``talib.EMA`` over the same prices: identical, warm-up included (NaN
    before the span-th tick), on real series at any price scale."""
    closes = market(name, scale).close
    settings = PatternSettings()
    windows = Windows.of(settings)
    state = SymbolState(windows)
    fast, slow, spread = [], [], []
    for i, price in enumerate(closes.tolist()):
        state.observe(price, 100.0, DAY + 60.0 * i, windows)
        fast.append(state.ema_fast)
        slow.append(state.ema_slow)
        spread.append(state.spread)
    for ours, span in ((fast, settings.ema_fast), (slow, settings.ema_slow)):
        expected = talib.EMA(closes, span)
        assert np.isnan(ours[span - 2]) and not np.isnan(ours[span - 1])  # the same warm-up
        assert np.array_equal(ours, expected, equal_nan=True)  # bit for bit
    ratio = talib.EMA(closes, settings.ema_fast) / talib.EMA(closes, settings.ema_slow) - 1
    np.testing.assert_allclose(spread, np.nan_to_num(ratio), rtol=1e-9, atol=1e-15)


def test_first_price_seeding_is_kept_as_an_option() -> None:
    settings = PatternSettings(ema_seed=EmaSeed.FIRST, ema_fast=3, ema_slow=5)
    windows = Windows.of(settings)
    state = SymbolState(windows)
    prices = [10.0, 11.0, 12.0, 11.0, 13.0, 14.0]
    fast = slow = prices[0]
    for i, price in enumerate(prices):
        state.observe(price, 1.0, DAY + i, windows)
        if i:
            fast += 0.5 * (price - fast)
            slow += (2 / 6) * (price - slow)
        assert (state.ema_fast, state.ema_slow) == pytest.approx((fast, slow), rel=1e-15)
    assert state.spread == pytest.approx(fast / slow - 1)
